"""Transformations both discovery methods train against.

- :func:`similarity_crop` (StableKeypoints' equivariance transform, in 3D): a small rotation about the up
  axis, a scaling and a crop of the cloud by a plane. Points keep their identity, so a map on the transformed
  cloud compares with the original map point for point (no inverse warp is needed, unlike images).
- :func:`model_frame`: ``segment()``'s frame, which the diffuser and the store's batches use.
- :class:`DeformDraw` (KeyPointDiffuser's deformation consistency): stretch, taper and twist about the up axis,
  smooth enough that a keypoint should follow the surface it sits on.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

UP_INDEX = {"y": 1, "z": 2}
UP_AXES = tuple(UP_INDEX)


def _rotation(axis: int, angle: float) -> np.ndarray:
    a, b = [i for i in range(3) if i != axis]
    rot = np.eye(3)
    c, s = math.cos(angle), math.sin(angle)
    rot[a, a], rot[a, b], rot[b, a], rot[b, b] = c, -s, s, c
    return rot


def similarity_crop(
    points: np.ndarray,
    rng: np.random.Generator,
    *,
    up_axis: str = "y",
    rotate_deg: float = 15.0,
    scale_range: tuple[float, float] = (1.0, 1.2),
    crop: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """A random rotation about the up axis (up to ``rotate_deg``), scaling and crop.

    The crop removes the points beyond a random plane, at most a ``crop`` fraction of them (StableKeypoints
    translates images by up to a quarter of their width, which pushes part of them out of the frame).

    Returns:
        ``(M, 3)`` transformed points and ``(M,)`` the indices of the points they came from.
    """
    pts = np.asarray(points, dtype=np.float64)
    centre = pts.mean(axis=0)
    rot = _rotation(UP_INDEX[up_axis], math.radians(rotate_deg) * rng.uniform(-1.0, 1.0))
    scale = rng.uniform(*scale_range)
    kept = np.arange(len(pts))
    if crop > 0:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction) or 1.0
        along = (pts - centre) @ direction
        cut = np.quantile(along, 1.0 - rng.uniform(0.0, crop))
        kept = np.flatnonzero(along <= cut)
    out = ((pts[kept] - centre) @ rot.T) * scale + centre
    return out.astype(np.float32), kept


class DeformDraw:
    """One random smooth deformation per shape of a batch, in the model frame (up = z by default).

    Anisotropic stretch (each axis by ``1 ± strength``), taper (the horizontal coordinates scaled linearly
    with height, by up to ``strength`` at height 1) and twist (a rotation about the up axis growing with
    height, up to ``strength`` radians at height 1). The same draw moves the shape and its keypoints: the
    deformed keypoints are where the keypoints of the deformed shape should be.
    """

    def __init__(self, stretch: Tensor, taper: Tensor, twist: Tensor, up: int) -> None:
        self.stretch, self.taper, self.twist, self.up = stretch, taper, twist, up

    @classmethod
    def sample(cls, batch: int, device: torch.device | str, generator: torch.Generator | None = None, *,
               up: int = 2, strength: float = 0.2) -> DeformDraw:
        def uniform(*shape: int) -> Tensor:
            return ((torch.rand(*shape, generator=generator) * 2 - 1) * strength).to(device)

        return cls(1.0 + uniform(batch, 1, 3), uniform(batch, 1, 1), uniform(batch, 1, 1), up)

    def __call__(self, points: Tensor) -> Tensor:
        """``(B, M, 3)`` -> ``(B, M, 3)``."""
        a, b = [i for i in range(3) if i != self.up]
        x = points * self.stretch.to(points)
        height = x[..., self.up : self.up + 1]
        x_a, x_b = x[..., a : a + 1], x[..., b : b + 1]
        factor = 1.0 + self.taper.to(points) * height
        angle = self.twist.to(points) * height
        c, s = torch.cos(angle), torch.sin(angle)
        new_a = (c * x_a - s * x_b) * factor
        new_b = (s * x_a + c * x_b) * factor
        cols = [None, None, None]
        cols[a], cols[b], cols[self.up] = new_a, new_b, height
        return torch.cat(cols, dim=-1)


def model_frame(points: np.ndarray, up_axis: str = "y") -> tuple[np.ndarray, np.ndarray, float]:
    """``segment()``'s frame: centred on the centroid, unit max radius, y and z swapped for y-up input.

    Returns the ``(N, 3)`` points in that frame, the centre and the radius (to map keypoints back).
    """
    if up_axis not in UP_AXES:
        raise ValueError(f"up_axis must be one of {UP_AXES}, got {up_axis!r}")
    x = np.asarray(points, dtype=np.float32)
    centre = x.mean(axis=0)
    radius = float(np.sqrt(((x - centre) ** 2).sum(axis=1)).max()) or 1.0
    x = (x - centre) / radius
    return (x[:, [0, 2, 1]] if up_axis == "y" else x).astype(np.float32), centre, radius


def from_model_frame(x: np.ndarray, centre: np.ndarray, radius: float, up_axis: str = "y") -> np.ndarray:
    """Inverse of :func:`model_frame`."""
    x = np.asarray(x, dtype=np.float32)
    return (x[:, [0, 2, 1]] if up_axis == "y" else x) * radius + centre
