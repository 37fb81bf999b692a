"""Data for :class:`~patchalign3d.keypoints.discover.diffuser.KeyPointDiffuser`.

From a training store: :class:`patchalign3d.lit.StoreDataModule` as it is (``configs/keypoints/diffuser.yaml``);
its batches' ``points`` are in the model frame already. From shapes in memory or files (``keypoints discover
--method diffuser`` without a trained diffuser): :class:`ShapesDataModule`, the same batches (``{"uid",
"points"}``) from a list of clouds, a new random subset of points every epoch. :func:`fit_diffuser` trains
one either way through a Lightning ``Trainer``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from patchalign3d.keypoints.discover.augment import model_frame
from patchalign3d.keypoints.discover.diffuser import KeyPointDiffuser


class ShapeClouds(Dataset):
    """Clouds (already sampled) in the model frame; each item draws ``num_points`` of them (seeded per epoch
    and item when ``train`` is False: the same points every time)."""

    def __init__(self, clouds: Sequence[np.ndarray], num_points: int = 2048, up_axis: str = "y", train: bool = True) -> None:
        self.clouds = [model_frame(c, up_axis)[0] for c in clouds]
        self.num_points, self.train = num_points, train

    def __len__(self) -> int:
        return len(self.clouds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        cloud = self.clouds[i]
        gen = None if self.train else torch.Generator().manual_seed(i)
        n = len(cloud)
        idx = torch.randperm(n, generator=gen)[: self.num_points] if n >= self.num_points else torch.randint(n, (self.num_points,), generator=gen)
        pts = torch.from_numpy(cloud[idx.numpy()])
        # re-centre and re-scale the subset, as the store's transform does for the points it draws
        pts = pts - pts.mean(0)
        return {"uid": str(i), "points": pts / pts.norm(dim=1).max().clamp(min=1e-12)}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"uid": [it["uid"] for it in items], "points": torch.stack([it["points"] for it in items])}


class ShapesDataModule(LightningDataModule):
    """Batches of ``{"uid", "points"}`` from clouds given in memory (no validation split)."""

    def __init__(self, clouds: Sequence[np.ndarray], batch_size: int = 8, num_points: int = 2048, up_axis: str = "y") -> None:
        super().__init__()
        if not len(clouds):
            raise ValueError("ShapesDataModule needs at least one cloud")
        self.data = ShapeClouds(clouds, num_points, up_axis)
        self.batch_size = min(batch_size, len(clouds))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True, drop_last=True, collate_fn=_collate)


def fit_diffuser(
    backbone: Any,
    shapes: Sequence[Any],
    *,
    k: int = 10,
    max_steps: int = 300,
    batch_size: int = 8,
    num_points: int = 2048,
    seed: int = 0,
    up_axis: str = "y",
    progress: bool = False,
    root_dir: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    **options: Any,
) -> KeyPointDiffuser:
    """Train a :class:`KeyPointDiffuser` on shapes (clouds, meshes or files) with a Lightning ``Trainer``.

    Args:
        backbone: a PatchAlign3D checkpoint path (saved in the diffuser's hyperparameters) or model.
        checkpoint: write the trained module there (``KeyPointDiffuser.load_from_checkpoint`` reads it).
        options: other :class:`KeyPointDiffuser` arguments.
    """
    import lightning as L

    from patchalign3d.keypoints.shapes import as_shape
    from patchalign3d.model.patchalign3d import PatchAlign3D

    L.seed_everything(seed, verbose=False)
    clouds = [as_shape(s, num_points=num_points, seed=seed).points for s in shapes]
    if isinstance(backbone, PatchAlign3D):
        module = KeyPointDiffuser(None, k=k, backbone_config=backbone.config.to_dict(), **options)
        module.backbone.load_state_dict(backbone.state_dict())
    else:
        module = KeyPointDiffuser(str(backbone), k=k, **options)
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu" if not torch.cuda.is_available() else "auto",
                        devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=progress,
                        enable_model_summary=False, default_root_dir=root_dir, deterministic=True)
    trainer.fit(module, datamodule=ShapesDataModule(clouds, batch_size, num_points, up_axis))
    if checkpoint is not None:
        trainer.save_checkpoint(checkpoint)
    return module.eval()
