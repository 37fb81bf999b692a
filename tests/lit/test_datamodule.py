"""StoreDataModule: batch schema, point draws, axis swap, labels, augmentation, errors, mid-epoch resume."""

from __future__ import annotations

import json

import pytest
import torch
from lightning import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from patchalign3d.lit import ShapeTransform, Stage1Module, StoreDataModule, collate_shapes

from ._record import RecordUids
from .conftest import FEATURE_DIM, NUM_POINTS, POOL, make_item


def _dm(store, **kw) -> StoreDataModule:
    kw = {"batch_size": 4, "num_points": 64, "num_workers": 0, **kw}
    return StoreDataModule(str(store), **kw)


def test_batch_schema(tiny_store):
    dm = _dm(tiny_store)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["points"].shape == (4, 64, 3) and batch["points"].dtype == torch.float32
    assert batch["features"].shape == (4, 64, FEATURE_DIM) and batch["features"].dtype == torch.float16
    texts = batch["texts"]
    assert len(texts) == len(set(texts)) and set(texts) <= set(POOL) | {"chair", "cart"}
    assert batch["labels"].shape == (4, 64, len(texts)) and batch["labels"].dtype == torch.bool
    assert batch["text_mask"].shape == (4, len(texts))
    # A point is labelled only with texts of its own shape.
    assert not (batch["labels"] & ~batch["text_mask"][:, None, :]).any()
    assert len(batch["uid"]) == 4 and all(u.startswith("train-") for u in batch["uid"])
    assert dm.feature_dim == FEATURE_DIM
    assert dm.part_names() == sorted(set(POOL) | {"chair", "cart"})


def test_transform_swaps_axes_and_keeps_labels_with_points():
    item = make_item(3, "train", NUM_POINTS, FEATURE_DIM)
    out = ShapeTransform(num_points=50, train=False, normalize=False)(item)
    raw = torch.from_numpy(item["points"])
    # Every drawn point is a stored point with y and z swapped; features and masks follow their point.
    idx = torch.cdist(out["points"], raw[:, [0, 2, 1]]).argmin(1)
    assert torch.allclose(out["points"], raw[idx][:, [0, 2, 1]])
    assert torch.equal(out["features"], torch.from_numpy(item["features"])[idx])
    assert torch.equal(out["part_masks"], torch.from_numpy(item["part_masks"]).bool()[:, idx])
    assert out["part_names"] == json.loads(item["part_names"])
    assert len(set(idx.tolist())) == 50  # without replacement when the shape has enough points


def test_transform_normalize_and_draws():
    item = make_item(1, "val", NUM_POINTS, FEATURE_DIM)
    t_val = ShapeTransform(num_points=64, train=False)
    a, b = t_val(item), t_val(item)
    assert torch.equal(a["points"], b["points"])  # validation draws are seeded by the uid
    assert a["points"].mean(0).abs().max() < 1e-5
    assert a["points"].norm(dim=1).max().item() == pytest.approx(1.0, abs=1e-5)
    t_train = ShapeTransform(num_points=64, train=True)
    assert not torch.equal(t_train(item)["points"], t_train(item)["points"])
    big = ShapeTransform(num_points=2 * NUM_POINTS, train=True)(item)  # fewer points than asked: replacement
    assert big["points"].shape == (2 * NUM_POINTS, 3)


def test_drop_category_label():
    item = make_item(0, "train", NUM_POINTS, FEATURE_DIM)  # index 0: category "chair" is also a part name
    assert "chair" in json.loads(item["part_names"])
    out = ShapeTransform(num_points=32, train=False, drop_category_label=True)(item)
    assert "chair" not in out["part_names"] and out["part_masks"].shape == (len(out["part_names"]), 32)
    kept = ShapeTransform(num_points=32, train=False)(item)
    assert "chair" in kept["part_names"]


def test_rotation_is_about_the_up_axis():
    item = make_item(2, "train", NUM_POINTS, FEATURE_DIM)
    torch.manual_seed(0)
    plain = ShapeTransform(num_points=64, train=True)(item)
    torch.manual_seed(0)
    rotated = ShapeTransform(num_points=64, train=True, rotate_deg=45.0)(item)
    p, r = plain["points"], rotated["points"]
    assert torch.allclose(p[:, 2], r[:, 2])  # model frame is z-up after the swap
    assert torch.allclose(p[:, :2].norm(dim=1), r[:, :2].norm(dim=1), atol=1e-6)
    assert not torch.allclose(p, r)
    torch.manual_seed(0)
    jittered = ShapeTransform(num_points=64, train=True, jitter_sigma=0.5, jitter_clip=0.01)(item)["points"]
    assert (jittered - p).abs().max() <= 0.01 + 1e-6


def test_collate_merges_same_name_masks():
    items = [
        {"uid": "a", "category": "", "points": torch.zeros(3, 3), "part_names": ["leg", "seat", "leg"],
         "part_masks": torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)},
        {"uid": "b", "category": "", "points": torch.zeros(3, 3), "part_names": ["wheel"],
         "part_masks": torch.tensor([[1, 1, 0]], dtype=torch.bool)},
    ]
    batch = collate_shapes(items)
    assert batch["texts"] == ["leg", "seat", "wheel"]
    assert batch["labels"][0].int().tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]
    assert batch["labels"][1].int().tolist() == [[0, 0, 1], [0, 0, 1], [0, 0, 0]]
    assert batch["text_mask"].int().tolist() == [[1, 1, 0], [0, 0, 1]]


def test_bad_input_raises(tiny_store, tmp_path):
    from patchalign3d.lit import TrainingSetupError

    with pytest.raises(TrainingSetupError, match=r"store_info\.json not found.*python -m data_engine precompute"):
        _dm(tmp_path).setup("fit")
    (tmp_path / "store_info.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ValueError, match="schema_version"):
        _dm(tmp_path).setup("fit")
    with pytest.raises(ValueError, match="scale_range"):
        _dm(tiny_store, scale_range=(1.1, 0.9))
    bad = make_item(0, "train", NUM_POINTS, FEATURE_DIM)
    bad["part_masks"] = bad["part_masks"][:, :10]
    with pytest.raises(ValueError, match="part_masks"):
        ShapeTransform()(bad)


def test_recipe_switches_reach_the_transforms(tiny_store):
    """sampling and augment are DataModule options (so configs and the CLI can set them)."""
    dm = _dm(tiny_store, sampling="mask_aware", min_per_label=8, augment="release")
    assert (dm.train_transform.sampling, dm.train_transform.min_per_label, dm.train_transform.augment) == (
        "mask_aware", 8, "release")
    assert dm.eval_transform.sampling == "mask_aware" and dm.eval_transform.augment is None
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["points"].shape[1:] == (64, 3) and batch["labels"].shape[:2] == (4, 64)
    with pytest.raises(ValueError, match="unknown augment 'strong'"):
        _dm(tiny_store, augment="strong")


def test_validation_split_is_fixed(tiny_store):
    dm = _dm(tiny_store)
    dm.setup("validate")
    first = [b["points"] for b in dm.val_dataloader()]
    second = [b["points"] for b in dm.val_dataloader()]
    assert len(first) == 1 and all(torch.equal(a, b) for a, b in zip(first, second))
    assert sorted(u for b in dm.val_dataloader() for u in b["uid"]) == [f"val-{i:04d}" for i in range(4)]


def _trainer(root, callbacks, **kw) -> Trainer:
    return Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, limit_val_batches=0, default_root_dir=str(root),
                   callbacks=callbacks, **kw)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch(tiny_store, tmp_path, workers):
    """Stopped after 2 of 4 steps and resumed, a run trains the 4 shapes it had not seen, then a whole new
    epoch in the uninterrupted run's order (LitData alone would replay the saved position in that epoch)."""
    def module():
        return Stage1Module(arch="tiny", arch_overrides={"num_groups": 8, "group_size": 8}, teacher_dim=FEATURE_DIM,
                            lr_schedule="cosine", warmup_steps=1)

    def data():
        return _dm(tiny_store, batch_size=2, num_workers=workers)

    reference = RecordUids()
    _trainer(tmp_path / "ref", [reference], max_epochs=2, enable_checkpointing=False).fit(module(), datamodule=data())
    first = RecordUids()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    _trainer(tmp_path, [first, ckpt], max_steps=2).fit(module(), datamodule=data())
    second = RecordUids()
    _trainer(tmp_path, [second], max_epochs=2).fit(module(), datamodule=data(),
                                                   ckpt_path=str(tmp_path / "ckpt" / "epoch=0-step=2.ckpt"))
    seen_first = [u for b in first.uids for u in b]
    seen_second = [u for b in second.uids[:2] for u in b]
    assert len(seen_first) == 4 and len(seen_second) == 4
    assert sorted(seen_first + seen_second) == [f"train-{i:04d}" for i in range(8)]
    assert first.uids + second.uids == reference.uids and len(reference.uids) == 8
    next_epoch = [u for b in second.uids[2:] for u in b]
    assert sorted(next_epoch) == [f"train-{i:04d}" for i in range(8)] and next_epoch != seen_first + seen_second
