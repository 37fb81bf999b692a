"""Stage 1: the distillation module learns, follows the checkpoint contract and checks its inputs."""

from __future__ import annotations

import pytest
import torch
from lightning import Callback
from torch.utils.data import DataLoader

from patchalign3d.lit import Stage1Module, StoreDataModule
from patchalign3d.model.checkpoint import load_model

from .conftest import FEATURE_DIM, TINY, fit_quietly


class LossLog(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def repeated(batch: dict, steps: int) -> DataLoader:
    """A loader that yields the same batch ``steps`` times."""
    return DataLoader([batch] * steps, batch_size=None)


def fixed_batch(store, **kw) -> dict:
    dm = StoreDataModule(str(store), batch_size=4, num_points=128, num_workers=0, shuffle=False, **kw)
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def test_overfits_a_fixed_batch(tiny_store):
    torch.manual_seed(0)
    batch = fixed_batch(tiny_store, with_labels=False)
    module = Stage1Module(**TINY, teacher_dim=FEATURE_DIM, lr_encoder=2e-3, lr_head=2e-3)
    log = LossLog()
    trainer = fit_quietly(module, repeated(batch, 40), callbacks=[log], max_epochs=1)
    start, end = sum(log.losses[:3]) / 3, sum(log.losses[-3:]) / 3
    assert end < 0.4 * start, log.losses
    assert trainer.callback_metrics["train/cosine"].item() == pytest.approx(1 - log.losses[-1], abs=1e-5)


def test_every_layer_trains_and_groups_have_their_rates():
    module = Stage1Module(**TINY, teacher_dim=FEATURE_DIM, lr_encoder=1e-4, lr_head=5e-4)
    opt = module.configure_optimizers()["optimizer"]
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 5e-4]
    trainable = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in trainable for p in module.model.encoder.parameters())
    assert all(id(p) in trainable for p in module.head.parameters())
    assert module.model.proj is None and module.head.out_features == FEATURE_DIM


def test_checkpoint_contract(stage1_ckpt):
    ckpt = torch.load(stage1_ckpt, weights_only=True)
    info = ckpt["patchalign3d"]
    assert info["stage"] == 1 and info["config"]["text_dim"] is None
    assert all(k.startswith(("model.", "head.")) for k in ckpt["state_dict"])
    model = load_model(stage1_ckpt)
    assert model.config.num_groups == 16 and model.proj is None
    assert torch.equal(model.encoder.reduce_dim.weight, ckpt["state_dict"]["model.encoder.reduce_dim.weight"])


def test_teacher_width_mismatch_is_reported(tiny_store):
    dm = StoreDataModule(str(tiny_store), batch_size=4, num_points=64, num_workers=0)
    with pytest.raises(ValueError, match="teacher_dim=16"):
        fit_quietly(Stage1Module(**TINY, teacher_dim=768), dm, max_steps=1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown arch"):
        Stage1Module(arch="huge")
    with pytest.raises(ValueError, match="text_dim"):
        Stage1Module(arch="tiny", arch_overrides={"text_dim": 12})
    with pytest.raises(ValueError, match="unknown PatchAlign3D config"):
        Stage1Module(arch="tiny", arch_overrides={"width": 12})


def test_head_follows_the_store_when_teacher_dim_is_none(tiny_store, tmp_path):
    dm = StoreDataModule(str(tiny_store), batch_size=4, num_points=64, num_workers=0, with_labels=False)
    module = Stage1Module(**TINY, teacher_dim=None)
    trainer = fit_quietly(module, dm, max_steps=1)
    assert module.head.out_features == FEATURE_DIM
    trainer.save_checkpoint(tmp_path / "auto.ckpt")
    restored = Stage1Module.load_from_checkpoint(tmp_path / "auto.ckpt", weights_only=True)
    assert torch.equal(restored.head.weight, module.head.weight)
