"""Back-projection: per-point teacher features from the views that see each point.

A point takes the mean of its features over the views where it is visible (its face is the one rendered at
its pixel; or, for points without faces, its depth matches the rendered depth within a tolerance). Points no
view sees take the mean of their nearest seen points; everything is then L2-normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from patchalign3d.model.grouping import knn

from .cameras import CameraRig
from .render import RenderOutput
from .teachers import sample_patch_grid


class BackprojectError(RuntimeError):
    """No feature can be assigned (no point is visible from any view)."""


@dataclass
class BackprojectConfig:
    """Visibility and fill settings.

    Attributes:
        visibility: ``face`` (the point's face is the front face at its pixel, Find3D), ``depth`` (the
            point is within ``depth_tolerance`` of the rendered depth), ``face_or_depth`` (either; sees
            points on duplicated or double-sided faces, common in ShapeNet, that ``face`` misses), or
            ``auto`` (``face`` when the points have face ids, else ``depth``).
        depth_tolerance: world units, for shapes normalised to a 0.75 box (about 1 % of the shape's size).
        fill_neighbors: unseen points average this many nearest seen points (20 as released).
        interpolation: how the patch grid is read at a pixel, ``bicubic`` (release) or ``bilinear``.
    """

    visibility: str = "auto"
    depth_tolerance: float = 0.015
    fill_neighbors: int = 20
    interpolation: str = "bicubic"


def pixel_of(uv: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pixel each ``(V, N, 2)`` coordinate falls in: ``rows``, ``cols`` (clipped) and ``inside``."""
    col = np.floor(uv[..., 0]).astype(np.int64)
    row = np.floor(uv[..., 1]).astype(np.int64)
    inside = (col >= 0) & (col < resolution) & (row >= 0) & (row < resolution) & np.isfinite(uv).all(-1)
    return np.clip(row, 0, resolution - 1), np.clip(col, 0, resolution - 1), inside


def visible_by_face(face_ids: np.ndarray, uv: np.ndarray, point_faces: np.ndarray) -> np.ndarray:
    """Whether each point's face is the face rendered at its pixel.

    Args:
        face_ids: ``(V, R, R)`` rendered front face per pixel (``-1`` background).
        uv: ``(V, N, 2)`` projected pixel coordinates.
        point_faces: ``(N,)`` the face each point lies on.

    Returns:
        ``(V, N)`` bool.
    """
    rows, cols, inside = pixel_of(uv, face_ids.shape[-1])
    views = np.arange(face_ids.shape[0])[:, None]
    return inside & (face_ids[views, rows, cols] == np.asarray(point_faces)[None])


def visible_by_depth(
    depth: np.ndarray, uv: np.ndarray, point_depth: np.ndarray, tolerance: float
) -> np.ndarray:
    """Whether each point lies within ``tolerance`` of the front surface rendered at its pixel.

    Args:
        depth: ``(V, R, R)`` rendered depth (``inf`` on background).
        uv: ``(V, N, 2)`` projected pixel coordinates.
        point_depth: ``(V, N)`` the points' own depth along each view axis.
        tolerance: largest allowed ``|point depth - rendered depth|``.

    Returns:
        ``(V, N)`` bool.
    """
    rows, cols, inside = pixel_of(uv, depth.shape[-1])
    views = np.arange(depth.shape[0])[:, None]
    return inside & (np.abs(depth[views, rows, cols] - point_depth) <= tolerance)


def pixel_centres(uv: np.ndarray, resolution: int) -> np.ndarray:
    """The centre of the pixel each coordinate falls in, ``(V, N, 2)`` (the release reads whole pixels)."""
    rows, cols, _ = pixel_of(uv, resolution)
    return np.stack([cols + 0.5, rows + 0.5], axis=-1)


def accumulate_views(
    grids: Tensor, uv: np.ndarray, visible: np.ndarray, resolution: int, mode: str = "bicubic"
) -> tuple[Tensor, Tensor]:
    """Sum of features over the views that see each point, and how many views that is.

    Args:
        grids: ``(V, D, g, g)`` teacher patch grids.
        uv: ``(V, N, 2)`` pixel coordinates in the ``R x R`` renders.
        visible: ``(V, N)`` bool.
        resolution: ``R``.
        mode: grid interpolation.

    Returns:
        ``sums`` ``(N, D)`` float32 and ``counts`` ``(N,)`` float32, on the grids' device.
    """
    device = grids.device
    num_points = visible.shape[1]
    sums = torch.zeros(num_points, grids.shape[1], device=device)
    counts = torch.zeros(num_points, device=device)
    centres = torch.from_numpy(pixel_centres(uv, resolution)).float().to(device)
    mask = torch.from_numpy(visible).to(device)
    for v in range(grids.shape[0]):  # one view at a time keeps memory at N x D
        idx = mask[v].nonzero()[:, 0]
        if idx.numel() == 0:
            continue
        feats = sample_patch_grid(grids[v : v + 1], centres[v : v + 1, idx], resolution, mode)[0]
        sums.index_add_(0, idx, feats)
        counts[idx] += 1
    return sums, counts


def fill_unseen(points: Tensor, features: Tensor, seen: Tensor, k: int = 20) -> Tensor:
    """Give every unseen point the mean feature of its ``k`` nearest seen points.

    Args:
        points: ``(N, 3)``.
        features: ``(N, D)``; rows of unseen points are ignored.
        seen: ``(N,)`` bool.
        k: neighbours (fewer when fewer points are seen).

    Returns:
        ``(N, D)``, seen rows unchanged.

    Raises:
        BackprojectError: no point is seen.
    """
    num_seen = int(seen.sum())
    if num_seen == 0:
        raise BackprojectError(
            "no point is visible from any view (is the shape inside the cameras' frustum?)"
        )
    if num_seen == len(points):
        return features
    seen_idx = seen.nonzero()[:, 0]
    unseen_idx = (~seen).nonzero()[:, 0]
    nbr, _ = knn(points[unseen_idx][None].float(), points[seen_idx][None].float(), min(k, num_seen))
    out = features.clone()
    out[unseen_idx] = features[seen_idx][nbr[0]].mean(dim=1)
    return out


def resolve_visibility(mode: str, has_faces: bool) -> str:
    """``auto`` becomes ``face`` for points with face ids and ``depth`` for points without."""
    if mode == "auto":
        return "face" if has_faces else "depth"
    return mode


def point_visibility(
    rig: CameraRig,
    render: RenderOutput,
    points: np.ndarray,
    point_faces: np.ndarray | None,
    config: BackprojectConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Projected pixel coordinates ``(V, N, 2)`` and visibility ``(V, N)`` of ``points`` in every view."""
    uv, depth = rig.project(points)
    mode = resolve_visibility(config.visibility, point_faces is not None)
    if mode == "face":
        if point_faces is None:
            raise ValueError("face visibility needs the face id of every point")
        return uv, visible_by_face(render.face_ids, uv, point_faces)
    if mode == "depth":
        return uv, visible_by_depth(render.depth, uv, depth, config.depth_tolerance)
    if mode == "face_or_depth":
        if point_faces is None:
            raise ValueError("face_or_depth visibility needs the face id of every point")
        by_face = visible_by_face(render.face_ids, uv, point_faces)
        return uv, by_face | visible_by_depth(render.depth, uv, depth, config.depth_tolerance)
    raise ValueError(f"visibility must be auto, face, depth or face_or_depth, got {config.visibility!r}")


def backproject(
    grids: Tensor,
    uv: np.ndarray,
    visible: np.ndarray,
    points: np.ndarray,
    resolution: int,
    config: BackprojectConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-point features: view mean over visible views, nearest-seen fill, L2 normalisation.

    Args:
        grids: ``(V, D, g, g)`` teacher patch grids of the renders.
        uv: ``(V, N, 2)`` projected pixel coordinates.
        visible: ``(V, N)`` bool.
        points: ``(N, 3)`` (for the fill's neighbour search).
        resolution: render size ``R``.
        config: settings.

    Returns:
        ``features`` ``(N, D)`` float16 with unit rows; ``view_counts`` ``(N,)``, views that see each point.
    """
    config = config or BackprojectConfig()
    sums, counts = accumulate_views(grids, uv, visible, resolution, config.interpolation)
    seen = counts > 0
    mean = sums / counts.clamp(min=1)[:, None]
    pts = torch.from_numpy(np.asarray(points, dtype=np.float32)).to(grids.device)
    filled = fill_unseen(pts, mean, seen, config.fill_neighbors)
    unit = F.normalize(filled, dim=1)
    return unit.to(torch.float16).cpu().numpy(), counts.to(torch.int64).cpu().numpy()
