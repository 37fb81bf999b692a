"""One store item -> model-ready tensors: which points, which frame, which augmentation; and batching.

Point sampling (``sampling``):

* ``"random"``: a uniform random ``num_points`` per shape, a new draw every epoch (seeded by the uid for
  validation).
* ``"mask_aware"``: the release's stage-2 rule (``src/datasets/trainset.py``): at least ``min_per_label`` points
  of every part label by farthest point sampling, the rest by FPS over the remaining points, seeded per shape,
  so a shape gives the same subset every epoch. Small parts keep enough points to make patches of their own.

Augmentation (training only): the individual knobs (``rotate_deg`` about the up axis, ``scale_range``,
``translate``, ``jitter_sigma``), or ``augment="release"``: what the release's ``--aug_enable`` does, with
probability 0.9 a rotation of up to ±20° about each of x, y and z (``Rz @ Ry @ Rx``), a scale in 0.9–1.1, a
shift of up to 0.02 per axis and jitter of σ 0.01 clipped at 0.05, in the model frame. (The release flips
one coin per batch; here each shape flips its own, with the same probability.)

Training draws (points and augmentation) come from a generator seeded by ``(seed, epoch, uid)`` when the loader
passes the epoch (:class:`~patchalign3d.lit.streaming.ShapeStreamingDataset` does): a resumed run redraws
exactly what the uninterrupted run drew. Called without an epoch, the transform draws from torch's global
generator.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .seeding import mixed_seed, uid_key

__all__ = ["RELEASE_AUGMENTATION", "ShapeTransform", "collate_shapes", "mask_aware_indices"]

Sampling = Literal["random", "mask_aware"]
#: The release's augmentation when enabled (``src/training/stage2.py`` defaults).
RELEASE_AUGMENTATION = {"prob": 0.9, "rotate_deg": 20.0, "scale_range": (0.9, 1.1), "translate": 0.02,
                        "jitter_sigma": 0.01, "jitter_clip": 0.05}  # fmt: skip


def _clean(name: str) -> str:
    # Same normalisation as the text bank's clean_name for the comparison with the category.
    try:
        from patchalign3d.text import clean_name
    except ImportError:  # the text package is optional for stage 1
        return " ".join(name.lower().replace("_", " ").split())
    return clean_name(name)


def _fps(points: np.ndarray, count: int, gen: torch.Generator) -> np.ndarray:
    """``count`` farthest-point indices into ``(n, 3)`` points, from a random start drawn from ``gen``."""
    from patchalign3d.model.grouping import farthest_point_sample

    if count >= len(points):
        return np.arange(len(points))
    cloud = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))[None]
    return farthest_point_sample(cloud, count, random_start=True, generator=gen, backend="torch")[0].numpy()


def mask_aware_indices(points: np.ndarray, masks: np.ndarray, total: int, min_per_label: int, seed: int) -> np.ndarray:
    """The release's mask-aware subset: every label keeps at least ``min_per_label`` of its points.

    For each label, FPS picks ``min(min_per_label, its size)`` of its points; FPS over the points not yet chosen
    fills up to ``total``; if the labels alone took more than ``total``, FPS thins them to ``total``.

    Args:
        points: ``(N, 3)`` points.
        masks: ``(K, N)`` bool, one row per label (rows may overlap; empty rows are skipped).
        total: points wanted (at most ``N`` are returned).
        min_per_label: points kept per label.
        seed: seed of the FPS start points (one subset per seed).

    Returns:
        ``(min(total, N),)`` sorted int64 indices.
    """
    n = len(points)
    total = min(total, n)
    gen = torch.Generator().manual_seed(seed)
    chosen = np.zeros(n, dtype=bool)
    for mask in np.asarray(masks, dtype=bool):
        members = np.flatnonzero(mask)
        if len(members) and min_per_label > 0:
            chosen[members[_fps(points[members], min(min_per_label, len(members)), gen)]] = True
    picked = np.flatnonzero(chosen)
    if len(picked) < total:
        rest = np.flatnonzero(~chosen)
        picked = np.concatenate([picked, rest[_fps(points[rest], total - len(picked), gen)]])
    elif len(picked) > total:
        picked = picked[_fps(points[picked], total, gen)]
    return np.sort(picked).astype(np.int64)


def _rotation_xyz(angles: Tensor) -> Tensor:
    """``Rz @ Ry @ Rx`` for angles ``(3,)`` in radians (x, y, z), as the release composes them."""
    (cx, cy, cz), (sx, sy, sz) = angles.cos().tolist(), angles.sin().tolist()
    rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    ry = torch.tensor([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rz = torch.tensor([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry @ rx


@dataclass
class ShapeTransform:
    """Turns one raw store item into model-ready tensors (runs inside loader workers; picklable).

    Args:
        num_points: points per shape (drawn with replacement beyond the shape's own when it has fewer).
        train: augmentations, and a new random draw each epoch (``sampling="random"``); otherwise no
            augmentation and a draw seeded by the uid (reproducible validation).
        sampling: ``"random"`` or ``"mask_aware"`` (the release's stage-2 rule; see the module docstring).
        min_per_label: points kept per part label by ``mask_aware`` (release: 32).
        seed: mixed with the uid to seed ``mask_aware`` subsets.
        swap_yz: swap y and z (stored data are y-up; the release's model sees them swapped).
        normalize: centre on the centroid and scale to unit max radius (what ``segment()`` does).
        with_features / with_labels: keep teacher features / part names and masks.
        drop_category_label: drop part names equal to the shape's category (after name cleaning).
        augment: ``None`` (the knobs below) or ``"release"`` (the release's augmentation; the knobs must stay
            off).
        rotate_deg: uniform rotation in ``[-rotate_deg, rotate_deg]`` about the model's up axis (z after the
            swap, else y); 0 disables.
        scale_range: isotropic scale drawn uniformly from ``(lo, hi)``; None disables.
        translate: uniform shift in ``[-translate, translate]`` per axis; 0 disables.
        jitter_sigma / jitter_clip: per-point Gaussian noise, clipped; sigma 0 disables.
    """

    num_points: int = 2048
    train: bool = True
    sampling: Sampling = "random"
    min_per_label: int = 32
    seed: int = 0
    swap_yz: bool = True
    normalize: bool = True
    with_features: bool = True
    with_labels: bool = True
    drop_category_label: bool = False
    augment: Literal["release"] | None = None
    rotate_deg: float = 0.0
    scale_range: tuple[float, float] | None = None
    translate: float = 0.0
    jitter_sigma: float = 0.0
    jitter_clip: float = 0.05

    def __post_init__(self) -> None:
        if self.sampling not in ("random", "mask_aware"):
            raise ValueError(f"unknown sampling {self.sampling!r}; expected 'random' or 'mask_aware'")
        if self.augment not in (None, "release"):
            raise ValueError(f"unknown augment {self.augment!r}; expected null or 'release'")
        knobs = self.rotate_deg or self.scale_range is not None or self.translate or self.jitter_sigma
        if self.augment == "release" and knobs:
            raise ValueError("augment='release' sets rotation, scale, translation and jitter itself: leave "
                             "rotate_deg, scale_range, translate and jitter_sigma at their defaults")  # fmt: skip

    def __call__(self, item: dict[str, Any], epoch: int | None = None) -> dict[str, Any]:
        """One store item -> tensors; ``epoch`` (training) seeds this item's draws with ``(seed, epoch, uid)``."""
        uid = str(item["uid"])
        raw = np.asarray(item["points"])
        if raw.ndim != 2 or raw.shape[1] != 3 or raw.shape[0] == 0:
            raise ValueError(f"shape {uid!r}: points must have shape (N, 3) with N > 0, got {raw.shape}")
        n = raw.shape[0]
        names = json.loads(item["part_names"]) if (self.with_labels or self.sampling == "mask_aware") else []
        masks = np.asarray(item["part_masks"]) if names else np.zeros((0, n), dtype=np.uint8)
        if masks.shape != (len(names), n):
            raise ValueError(f"shape {uid!r}: part_masks {masks.shape} do not match {len(names)} names x {n} points")
        gen = None if epoch is None else torch.Generator().manual_seed(mixed_seed(self.seed, epoch, uid_key(uid)))
        idx = self._draw(raw, masks, uid, gen)
        # Fancy indexing copies, so the tensors below own writable memory (LitData's arrays are read-only).
        points = torch.from_numpy(raw[idx].astype(np.float32, copy=False))
        if self.swap_yz:
            points = points[:, [0, 2, 1]]
        if self.normalize:
            points = points - points.mean(0)
            points = points / points.norm(dim=1).max().clamp(min=1e-12)
        if self.train:
            points = self._augment_release(points, gen) if self.augment == "release" else self._augment(points, gen)
        out: dict[str, Any] = {"uid": uid, "category": str(item.get("category", "")), "points": points.contiguous()}
        if self.with_features:
            feats = np.asarray(item["features"])
            if feats.ndim != 2 or feats.shape[0] != n:
                raise ValueError(f"shape {uid!r}: features of shape {feats.shape} for {n} points")
            out["features"] = torch.from_numpy(feats[idx])
        if self.with_labels:
            kept = torch.from_numpy(masks[:, idx].astype(bool))
            if self.drop_category_label and out["category"]:
                keep = [i for i, name in enumerate(names) if _clean(name) != _clean(out["category"])]
                names, kept = [names[i] for i in keep], kept[keep]
            out["part_names"], out["part_masks"] = names, kept
        return out

    def _seed(self, uid: str) -> int:
        return self.seed + uid_key(uid)

    def _draw(self, raw: np.ndarray, masks: np.ndarray, uid: str, gen: torch.Generator | None) -> np.ndarray:
        n = len(raw)
        if self.sampling == "mask_aware":
            idx = mask_aware_indices(raw, masks, self.num_points, self.min_per_label, self._seed(uid))
            if len(idx) < self.num_points:  # a shape with fewer points than asked: repeat some, seeded too
                fill = torch.Generator().manual_seed(self._seed(uid))
                idx = np.concatenate([idx, torch.randint(n, (self.num_points - len(idx),), generator=fill).numpy()])
            return idx
        # Validation draws are seeded by the uid, so every epoch and every rank sees the same points.
        if not self.train:
            gen = torch.Generator().manual_seed(uid_key(uid))
        if n >= self.num_points:
            return torch.randperm(n, generator=gen)[: self.num_points].numpy()
        return torch.randint(n, (self.num_points,), generator=gen).numpy()

    def _augment(self, points: Tensor, gen: torch.Generator | None) -> Tensor:
        if self.rotate_deg:
            theta = math.radians(self.rotate_deg) * (2 * torch.rand((), generator=gen).item() - 1)
            c, s = math.cos(theta), math.sin(theta)
            # Rotate in the horizontal plane of the model frame (up = z after the swap, else y).
            a, b = (0, 1) if self.swap_yz else (0, 2)
            rot = torch.eye(3)
            rot[a, a], rot[a, b], rot[b, a], rot[b, b] = c, -s, s, c
            points = points @ rot.T
        if self.scale_range is not None:
            lo, hi = self.scale_range
            points = points * (lo + (hi - lo) * torch.rand((), generator=gen))
        if self.translate:
            points = points + (2 * torch.rand(3, generator=gen) - 1) * self.translate
        if self.jitter_sigma:
            noise = torch.randn(points.shape, generator=gen) * self.jitter_sigma
            points = points + noise.clamp(-self.jitter_clip, self.jitter_clip)
        return points

    @staticmethod
    def _augment_release(points: Tensor, gen: torch.Generator | None) -> Tensor:
        aug = RELEASE_AUGMENTATION
        if torch.rand((), generator=gen).item() >= aug["prob"]:
            return points
        angles = (2 * torch.rand(3, generator=gen) - 1) * math.radians(aug["rotate_deg"])
        points = points @ _rotation_xyz(angles).T
        lo, hi = aug["scale_range"]
        points = points * (lo + (hi - lo) * torch.rand((), generator=gen))
        points = points + (2 * torch.rand(3, generator=gen) - 1) * aug["translate"]
        noise = torch.randn(points.shape, generator=gen) * aug["jitter_sigma"]
        noise = noise.clamp(-aug["jitter_clip"], aug["jitter_clip"])
        return points + noise


def collate_shapes(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack transformed items into a batch (see :mod:`patchalign3d.lit.datamodule` for the keys).

    Part names become one de-duplicated list for the batch, in order of first appearance; a shape's masks of
    the same name are merged (a point carries text ``t`` if any of its masks named ``t`` covers it).
    """
    batch: dict[str, Any] = {
        "uid": [it["uid"] for it in items],
        "category": [it["category"] for it in items],
        "points": torch.stack([it["points"] for it in items]),
    }
    if "features" in items[0]:
        batch["features"] = torch.stack([it["features"] for it in items])
    if "part_names" in items[0]:
        texts = list(dict.fromkeys(n for it in items for n in it["part_names"]))
        col = {t: j for j, t in enumerate(texts)}
        n = batch["points"].shape[1]
        labels = torch.zeros(len(items), n, len(texts), dtype=torch.bool)
        text_mask = torch.zeros(len(items), len(texts), dtype=torch.bool)
        for b, it in enumerate(items):
            for name, mask in zip(it["part_names"], it["part_masks"]):
                labels[b, :, col[name]] |= mask
                text_mask[b, col[name]] = True
        batch.update(texts=texts, labels=labels, text_mask=text_mask)
    return batch
