"""Stage 2: initialisation from stage 1, frozen layers, both losses, the text bank and the checkpoint."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from patchalign3d.lit import Stage2Module, StoreDataModule, resolve_trainable
from patchalign3d.model.checkpoint import load_model

from .conftest import TINY, fit_quietly
from .test_stage1 import LossLog, fixed_batch, repeated


def stage2(bank, **kw) -> Stage2Module:
    return Stage2Module(**{**TINY, "text_dim": 64, "text_bank": str(bank), **kw})


@pytest.mark.parametrize("loss", ["siglip", "release"])
def test_overfits_a_fixed_batch(tiny_store, tiny_bank, loss):
    torch.manual_seed(0)
    batch = fixed_batch(tiny_store, with_features=False)
    module = stage2(tiny_bank, loss=loss, trainable="all", lr_encoder=3e-3, lr_head=3e-3,
                    negatives="shape" if loss == "release" else "batch")
    log = LossLog()
    trainer = fit_quietly(module, repeated(batch, 60), callbacks=[log], max_epochs=1)
    start, end = sum(log.losses[:3]) / 3, sum(log.losses[-3:]) / 3
    assert end < 0.5 * start, log.losses
    assert trainer.callback_metrics["train/patch_acc"] > 0.8


def test_init_from_stage1_and_frozen_layers_stay_bit_identical(tiny_store, tiny_bank, stage1_ckpt):
    module = stage2(tiny_bank, init_from=str(stage1_ckpt), lr_encoder=1e-2, lr_head=1e-2)
    stage1 = {k.removeprefix("model.encoder."): v for k, v in torch.load(stage1_ckpt, weights_only=True)
              ["state_dict"].items() if k.startswith("model.encoder.")}
    before = {k: v.clone() for k, v in module.model.encoder.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in stage1.items())  # the encoder starts as stage 1 ended

    dm = StoreDataModule(str(tiny_store), batch_size=4, num_points=128, num_workers=0, with_features=False)
    fit_quietly(module, dm, max_steps=3)
    after = module.model.encoder.state_dict()
    last = f"blocks.blocks.{module.model.config.depth - 1}."
    trained = {k for k in before if k.startswith((last, "norm."))}
    # Frozen weights *and* BatchNorm running statistics are unchanged, bit for bit.
    assert any("running_mean" in k for k in before)
    for k, value in before.items():
        if k not in trained:
            assert torch.equal(value, after[k]), k
    assert any(not torch.equal(before[k], after[k]) for k in trained if "weight" in k)
    assert not module.model.encoder.encoder.training  # the frozen tokenizer's BatchNorm stays in eval mode


def test_trainable_presets():
    module = Stage2Module(**TINY, text_dim=64, trainable="release")
    names = {n for n, p in module.model.encoder.named_parameters() if p.requires_grad}
    assert {"reduce_dim.weight", "cls_token", "cls_pos", "norm.weight"} <= names
    assert all(n.startswith(("blocks.blocks.1.", "norm.", "reduce_dim.", "cls_")) for n in names)
    paper = resolve_trainable("paper", module.model.encoder, depth=2)
    assert all(n.startswith(("blocks.blocks.1.", "norm.")) for n in paper) and "norm.bias" in paper
    assert resolve_trainable(["blocks.0"], module.model.encoder, 2) == resolve_trainable(
        ["blocks.-2"], module.model.encoder, 2)
    with pytest.raises(ValueError, match="matches no encoder parameter"):
        resolve_trainable(["nothing"], module.model.encoder, 2)
    with pytest.raises(ValueError, match="2 blocks"):
        resolve_trainable(["blocks.5"], module.model.encoder, 2)
    with pytest.raises(ValueError, match="unknown trainable preset"):
        Stage2Module(**TINY, text_dim=64, trainable="most")


def test_loss_variants_and_their_parameters():
    siglip = Stage2Module(**TINY, text_dim=64)
    assert siglip.model.logit_scale().item() == pytest.approx(10.0) and siglip.logit_bias.item() == -10.0
    release = Stage2Module(**TINY, text_dim=64, loss="release")
    assert release.logit_bias is None and release.model.logit_scale().item() == pytest.approx(1 / 0.07)
    groups = release.configure_optimizers()["optimizer"].param_groups
    assert groups[-1]["weight_decay"] == 0.0 and groups[-1]["params"] == [release.model.log_scale]
    with pytest.raises(ValueError, match="no logit bias"):
        Stage2Module(**TINY, text_dim=64, loss="release", init_bias=-5.0)
    with pytest.raises(ValueError, match="init_scale"):
        Stage2Module(**TINY, text_dim=64, init_scale=1000.0)


def test_architecture_mismatch_with_init_from(stage1_ckpt):
    with pytest.raises(ValueError, match="another architecture"):
        Stage2Module(arch="tiny", text_dim=64, init_from=str(stage1_ckpt), arch_overrides={"depth": 3})


def test_bank_is_built_once_and_checkpointed(tiny_store, tmp_path):
    """Without a bank file, the store's names are encoded (MiniLM, offline) into <root>/text_bank.pt."""
    module = Stage2Module(**TINY, text_dim=384, text_encoder="minilm", text_cache_dir=str(tmp_path / "cache"))
    dm = StoreDataModule(str(tiny_store), batch_size=4, num_points=128, num_workers=0, with_features=False)
    trainer = fit_quietly(module, dm, tmp_path, max_steps=1)
    bank_file = tmp_path / "text_bank.pt"
    assert bank_file.is_file() and sorted(module.bank.names) == dm.part_names()
    trainer.save_checkpoint(tmp_path / "s2.ckpt")
    info = torch.load(tmp_path / "s2.ckpt", weights_only=True)["patchalign3d"]
    assert info["stage"] == 2 and info["text"]["text_dim"] == 384 and "MiniLM" in info["text"]["model"]
    model = load_model(tmp_path / "s2.ckpt")
    assert model.proj.out_features == 384 and model.text_meta == info["text"]
    # A second run in the same folder (e.g. a resumed one) reuses the bank instead of loading the encoder.
    stamp = bank_file.stat().st_mtime_ns
    again = Stage2Module(**TINY, text_dim=384, text_encoder="minilm", text_cache_dir=str(tmp_path / "cache"))
    fit_quietly(again, dm, tmp_path, max_steps=1)
    assert bank_file.stat().st_mtime_ns == stamp and again.bank.names == module.bank.names


def test_bank_problems_are_reported(tiny_store, tmp_path):
    from .conftest import write_text_bank

    dm = StoreDataModule(str(tiny_store), batch_size=4, num_points=64, num_workers=0, with_features=False)
    partial = write_text_bank(tmp_path / "partial.pt", ["seat", "back"])
    with pytest.raises(KeyError, match="not in the text bank"):
        fit_quietly(stage2(partial), dm, max_steps=1)
    wide = write_text_bank(tmp_path / "wide.pt", dm.part_names(), dim=32)
    with pytest.raises(ValueError, match="text_dim=32"):
        fit_quietly(stage2(wide), dm, max_steps=1)


def test_negatives_follow_the_loss_unless_set():
    from patchalign3d.lit.stage2 import DEFAULT_NEGATIVES

    assert Stage2Module(**TINY, text_dim=64, loss="release").negatives == "shape"  # as released: K - 1 per shape
    assert Stage2Module(**TINY, text_dim=64, loss="release", negatives="batch").negatives == "batch"
    assert Stage2Module(**TINY, text_dim=64, loss="siglip").negatives == DEFAULT_NEGATIVES["siglip"]
    with pytest.raises(ValueError, match="unknown negatives 'all'"):
        Stage2Module(**TINY, text_dim=64, negatives="all")


@pytest.mark.parametrize("loss", ["siglip", "release"])
def test_shapes_without_names_are_skipped_and_counted(tiny_store, tiny_bank, loss):
    """A shape with no part names trains nothing and is counted; a batch without any name is no crash."""
    batch = fixed_batch(tiny_store, with_features=False)
    nameless = dict(batch, text_mask=batch["text_mask"].clone(), labels=batch["labels"].clone())
    nameless["text_mask"][1] = False
    nameless["labels"][1] = False
    empty = dict(batch, texts=[], text_mask=batch["text_mask"][:, :0], labels=batch["labels"][..., :0])
    module = stage2(tiny_bank, loss=loss, negatives="shape")
    with pytest.warns(UserWarning, match=r"no part names to be scored against \(first: 'train-0001'\)"):
        trainer = fit_quietly(module, DataLoader([nameless, nameless, empty], batch_size=None), max_epochs=1)
    assert trainer.callback_metrics["train/shapes_without_names"].item() == 1 + 1 + 4
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
