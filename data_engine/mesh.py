"""Meshes in: loading, Find3D normalisation, up-axis, and surface sampling with face ids."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import trimesh

from patchalign3d.data.io import ShapeFileError
from patchalign3d.data.io import load_mesh as _load_file

NormalizeMode = Literal["box", "sphere", "none"]
UpAxis = Literal["y", "z", "-y", "-z", "x", "-x"]


class MeshError(ShapeFileError):
    """A shape that cannot go through the engine (empty, corrupt, no faces, degenerate)."""


@dataclass
class MeshConfig:
    """How a mesh becomes normalised surface points.

    Attributes:
        num_points: surface points sampled per shape (Find3D: 5000).
        normalize: ``"box"`` centres on the vertex mean and scales the largest ``|coordinate|`` to ``extent``
            (Find3D); ``"sphere"`` centres on the vertex mean and scales the farthest vertex to ``extent``;
            ``"none"`` keeps the file's coordinates.
        extent: target half-size for ``normalize`` (0.75 box as Find3D; use 1.0 for a unit sphere).
        up_axis: the file's up axis; it is rotated onto +y, the store's convention.
        seed: base seed of the surface sampler (each shape mixes in its uid, so reruns are identical).
    """

    num_points: int = 5000
    normalize: str = "box"
    extent: float = 0.75
    up_axis: str = "y"
    seed: int = 0


def load_mesh(path: str | os.PathLike) -> trimesh.Trimesh:
    """Read a mesh file into one ``Trimesh`` (scenes flattened with their transforms, materials kept).

    Raises:
        MeshError: the file is missing, empty, unreadable, a point cloud, or has no usable triangles.
    """
    try:
        mesh = _load_file(path)
    except (ShapeFileError, FileNotFoundError) as err:
        raise MeshError(str(err)) from err
    check_mesh(mesh, name=str(path))
    return mesh


def check_mesh(mesh: trimesh.Trimesh, name: str = "mesh") -> None:
    """Raise ``MeshError`` unless ``mesh`` has finite vertices and triangles of positive total area."""
    if not isinstance(mesh, trimesh.Trimesh):
        raise MeshError(f"{name}: expected a triangle mesh, got {type(mesh).__name__}")
    if len(mesh.faces) == 0:
        raise MeshError(f"{name}: the mesh has no faces")
    if not np.isfinite(mesh.vertices).all():
        raise MeshError(f"{name}: vertices contain NaN or infinity")
    if not mesh.area > 0:
        raise MeshError(f"{name}: every face is degenerate (total area 0)")


def up_axis_rotation(up_axis: str) -> np.ndarray:
    """The ``(4, 4)`` rotation taking the named axis onto +y (a proper rotation, never a mirror)."""
    axes = {"x": [1, 0, 0], "y": [0, 1, 0], "z": [0, 0, 1]}
    sign = -1.0 if up_axis.startswith("-") else 1.0
    key = up_axis.lstrip("+-")
    if key not in axes:
        raise ValueError(f"up_axis must be one of x, y, z (optionally signed), got {up_axis!r}")
    source = sign * np.asarray(axes[key], dtype=np.float64)
    if np.allclose(source, [0, -1, 0]):  # antiparallel: align_vectors picks an arbitrary axis, choose x
        return trimesh.transformations.rotation_matrix(np.pi, [1, 0, 0])
    return trimesh.geometry.align_vectors(source, [0, 1, 0])


def normalization_transform(
    vertices: np.ndarray, mode: str = "box", extent: float = 0.75, up_axis: str = "y"
) -> np.ndarray:
    """The ``(4, 4)`` similarity transform that rotates ``up_axis`` to +y, then normalises.

    Args:
        vertices: ``(V, 3)`` mesh vertices in file coordinates.
        mode: ``"box"`` (max ``|coordinate|`` = ``extent``), ``"sphere"`` (max norm = ``extent``), ``"none"``.
        extent: target half-size.
        up_axis: the file's up axis.
    """
    rot = up_axis_rotation(up_axis)
    if mode == "none":
        return rot
    if mode not in ("box", "sphere"):
        raise ValueError(f"normalize must be 'box', 'sphere' or 'none', got {mode!r}")
    v = trimesh.transform_points(np.asarray(vertices, dtype=np.float64), rot)
    center = v.mean(axis=0)  # Find3D centres on the vertex mean, not the bounding-box centre
    centred = v - center
    size = np.abs(centred).max() if mode == "box" else np.linalg.norm(centred, axis=1).max()
    if not size > 0:
        raise MeshError("all vertices coincide; the shape cannot be normalised")
    scale = extent / size
    shift = trimesh.transformations.translation_matrix(-center)
    return trimesh.transformations.scale_matrix(scale) @ shift @ rot


def normalize_mesh(
    mesh: trimesh.Trimesh, config: MeshConfig | None = None
) -> tuple[trimesh.Trimesh, np.ndarray]:
    """A normalised copy of ``mesh`` and the ``(4, 4)`` transform applied (for points in file coordinates)."""
    config = config or MeshConfig()
    transform = normalization_transform(mesh.vertices, config.normalize, config.extent, config.up_axis)
    out = mesh.copy()
    out.apply_transform(transform)
    return out, transform


def shape_seed(base: int, uid: str) -> int:
    """A per-shape seed that depends only on ``base`` and ``uid`` (stable across runs and machines)."""
    digest = hashlib.sha256(f"{base}:{uid}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def sample_surface(mesh: trimesh.Trimesh, num_points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform surface samples and the face each came from.

    Returns:
        ``points`` ``(N, 3)`` float32 and ``face_ids`` ``(N,)`` int64 into ``mesh.faces``.
    """
    if num_points <= 0:
        raise ValueError(f"num_points must be positive, got {num_points}")
    points, face_ids = trimesh.sample.sample_surface(mesh, num_points, seed=seed)
    return points.astype(np.float32), face_ids.astype(np.int64)


def surface_distance(mesh: trimesh.Trimesh, points: np.ndarray, max_points: int = 1000, seed: int = 0) -> np.ndarray:
    """Distance from points to the mesh surface (exact, trimesh's closest point; needs ``rtree``).

    Args:
        mesh: the mesh.
        points: ``(N, 3)`` points in the mesh's frame.
        max_points: at most this many points are measured (a seeded subset): a frame mismatch moves them all.
        seed: seed of the subset.

    Returns:
        ``(min(N, max_points),)`` float64 distances.
    """
    points = np.asarray(points, dtype=np.float64)
    if len(points) > max_points:
        points = points[np.random.default_rng(seed).choice(len(points), max_points, replace=False)]
    try:
        import rtree  # noqa: F401 - trimesh's closest-point search needs it; say so plainly
    except ImportError:
        raise ImportError(
            "checking given points against the mesh needs the rtree package: pip install 'patchalign3d[render]'"
        ) from None
    _, distance, _ = trimesh.proximity.closest_point(mesh, points)
    return np.asarray(distance, dtype=np.float64)
