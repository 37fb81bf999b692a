"""A tiny training store in the documented schema, written with ``litdata.optimize``.

Shapes are blobs of points around per-part centres; each part name has its own centre and its own teacher
feature direction, so both stages have something learnable.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from litdata import optimize

POOL = ["seat", "back", "leg", "arm", "wheel", "handle"]
FEATURE_DIM = 16
NUM_POINTS = 300


def _part_tables(feature_dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234)
    centres = rng.uniform(-0.8, 0.8, size=(len(POOL) + 1, 3)).astype(np.float32)
    dirs = rng.normal(size=(len(POOL) + 1, feature_dim)).astype(np.float32)
    return centres, dirs / np.linalg.norm(dirs, axis=1, keepdims=True)


def make_item(index: int, split: str, num_points: int, feature_dim: int) -> dict:
    """One shape: 3 named parts from POOL (+ a name equal to the category for every third shape)."""
    seed = index + (0 if split == "train" else 10_000)
    rng = np.random.default_rng(seed)
    centres, dirs = _part_tables(feature_dim)
    parts = sorted(rng.choice(len(POOL), size=3, replace=False).tolist())
    category = "chair" if index % 2 == 0 else "cart"
    owner = rng.integers(0, len(parts), size=num_points)
    points = centres[np.asarray(parts)[owner]] + 0.08 * rng.normal(size=(num_points, 3))
    feats = dirs[np.asarray(parts)[owner]] + 0.1 * rng.normal(size=(num_points, feature_dim))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    names = [POOL[p] for p in parts]
    masks = np.stack([owner == k for k in range(len(parts))]).astype(np.uint8)
    if index % 3 == 0:  # a whole-object label named like the category (dropped by drop_category_label)
        names.append(category)
        masks = np.concatenate([masks, np.ones((1, num_points), np.uint8)])
    meta = {"schema_version": 1, "teacher": "synthetic", "pretrained": False, "views": 0, "resolution": 0,
            "source": f"synthetic/{split}/{index}"}
    return {
        "uid": f"{split}-{index:04d}",
        "category": category,
        "points": points.astype(np.float32),
        "features": feats.astype(np.float16),
        "part_names": json.dumps(names),
        "part_masks": masks,
        "meta": json.dumps(meta),
    }


def write_store(root: Path, n_train: int = 8, n_val: int = 4, num_points: int = NUM_POINTS,
                feature_dim: int = FEATURE_DIM) -> Path:
    """Write ``root/{train,val}`` LitData datasets, the uid lists and ``store_info.json``."""
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val)):
        optimize(
            fn=partial(make_item, split=split, num_points=num_points, feature_dim=feature_dim),
            inputs=list(range(n)), output_dir=str(root / split), chunk_bytes="64KB", num_workers=1,
            verbose=False, mode="overwrite", start_method="fork",
        )
        (root / f"{split}.txt").write_text("".join(f"{split}-{i:04d}\n" for i in range(n)))
    info = {"schema_version": 1, "feature_dim": feature_dim, "teacher": "synthetic", "pretrained": False,
            "views": 0, "resolution": 0, "num_points": num_points}
    (root / "store_info.json").write_text(json.dumps(info))
    (root / "report.json").write_text(json.dumps({"failed": [], "done": n_train + n_val}))
    return root


def write_text_bank(path: Path, names: list[str], dim: int = 64, seed: int = 0) -> Path:
    """A bank file in the released format ``{"keys", "emb", "meta"}`` with random unit embeddings."""
    gen = torch.Generator().manual_seed(seed)
    emb = torch.nn.functional.normalize(torch.randn(len(names), dim, generator=gen), dim=-1)
    meta = {"text_dim": dim, "backend": "random", "clip_model": None, "clip_pretrained": None}
    torch.save({"keys": list(names), "emb": emb, "meta": meta}, path)
    return path


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.setdefault("DATA_OPTIMIZER_CACHE_FOLDER", str(tmp_path_factory.mktemp("litdata_cache")))
    return write_store(tmp_path_factory.mktemp("store") / "store")


@pytest.fixture(scope="session")
def tiny_bank(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_text_bank(tmp_path_factory.mktemp("bank") / "bank.pt", POOL + ["chair", "cart"])


#: The tiny architecture every test of this folder uses (matches tests/conf/*.yaml).
TINY = {"arch": "tiny", "arch_overrides": {"num_groups": 16, "group_size": 16}}


def fit_quietly(module, data, root: Path | None = None, callbacks=(), **trainer_kw):
    """``Trainer.fit`` on the CPU without logger, progress bar, summary or checkpoints; returns the trainer.

    ``data`` is a LightningDataModule or any iterable of batches (e.g. one fixed batch repeated).
    """
    from lightning import LightningDataModule, Trainer

    kw = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, limit_val_batches=0, default_root_dir=str(root) if root else None)
    trainer = Trainer(callbacks=list(callbacks), **{**kw, **trainer_kw})
    if isinstance(data, LightningDataModule):
        trainer.fit(module, datamodule=data)
    else:
        trainer.fit(module, train_dataloaders=data)
    return trainer


@pytest.fixture(scope="session")
def stage1_ckpt(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stage-1 checkpoint after 2 steps on the tiny store."""
    from patchalign3d.lit import Stage1Module, StoreDataModule

    root = tmp_path_factory.mktemp("stage1")
    dm = StoreDataModule(str(tiny_store), batch_size=4, num_points=128, num_workers=0, with_labels=False)
    trainer = fit_quietly(Stage1Module(**TINY, teacher_dim=FEATURE_DIM), dm, root, max_steps=2)
    path = root / "stage1.ckpt"
    trainer.save_checkpoint(path)
    return path
