"""One loader for shapes on disk: meshes through trimesh, point clouds through trimesh or numpy.

Supported: ``.ply .obj .glb .gltf .off .stl`` (trimesh; scenes flattened with their transforms),
``.pcd`` (ASCII or binary, fields x y z first or anywhere), ``.npz``/``.npy`` and ``.txt``/``.xyz``/``.pts``
(whitespace columns, x y z first).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import trimesh

MESH_SUFFIXES = (".ply", ".obj", ".glb", ".gltf", ".off", ".stl")
POINT_SUFFIXES = (".pcd", ".npz", ".npy", ".txt", ".xyz", ".pts")
SUPPORTED_SUFFIXES = MESH_SUFFIXES + POINT_SUFFIXES
#: Keys looked for, in order, in an ``.npz`` of points.
NPZ_POINT_KEYS = ("points", "xyz", "pos", "coords", "data")


class ShapeFileError(ValueError):
    """A shape file is missing, of an unknown type, empty or corrupt."""


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give one shape file (`patchalign3d segment FOLDER --out OUTDIR` "
                                "and segment_files() take folders)")
    if not path.is_file():
        raise FileNotFoundError(f"no such shape file: {path}")
    if path.stat().st_size == 0:
        raise ShapeFileError(f"{path}: the file is empty")
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ShapeFileError(f"{path}: unsupported file type {path.suffix!r}; expected one of {SUPPORTED_SUFFIXES}")


def load_geometry(path: str | os.PathLike) -> trimesh.Trimesh | trimesh.PointCloud:
    """A mesh file as a single ``Trimesh`` (scenes flattened), or a ``PointCloud`` for vertex-only files."""
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in POINT_SUFFIXES:
        return trimesh.PointCloud(load_points(path))
    try:
        loaded = trimesh.load(path, process=False)
    except Exception as err:
        raise ShapeFileError(f"{path}: could not be read as a mesh ({type(err).__name__}: {err})") from err
    if isinstance(loaded, trimesh.Scene):
        if not loaded.geometry:
            raise ShapeFileError(f"{path}: the scene holds no geometry")
        meshes = _scene_meshes(loaded)
        if meshes:
            return trimesh.util.concatenate(meshes) if len(meshes) > 1 else meshes[0]
        clouds = [g for g in loaded.dump(concatenate=False) if isinstance(g, trimesh.PointCloud)]
        if clouds:
            return trimesh.PointCloud(np.concatenate([c.vertices for c in clouds]))
        raise ShapeFileError(f"{path}: the scene has neither triangles nor points")
    if isinstance(loaded, (trimesh.Trimesh, trimesh.PointCloud)):
        if len(loaded.vertices) == 0:
            raise ShapeFileError(f"{path}: no vertices")
        return loaded
    raise ShapeFileError(f"{path}: trimesh returned a {type(loaded).__name__}, not a mesh or point cloud")


def load_mesh(path: str | os.PathLike) -> trimesh.Trimesh:
    """A mesh file as one ``Trimesh`` with faces; clear error for point clouds and empty meshes."""
    geom = load_geometry(path)
    if not isinstance(geom, trimesh.Trimesh) or len(geom.faces) == 0:
        raise ShapeFileError(f"{path}: has no faces (a point cloud?); a mesh is needed here")
    return geom


def load_points(path: str | os.PathLike) -> np.ndarray:
    """The ``(N, 3)`` float32 points of a shape file (mesh files give their vertices)."""
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".pcd":
            from patchalign3d.data.base import pcd_xyz  # the one PCD reader (ascii and binary)

            pts = pcd_xyz(path)
        elif suffix == ".npz":
            pts = _read_npz(path)
        elif suffix == ".npy":
            pts = np.load(path, allow_pickle=False)
        elif suffix in (".txt", ".xyz", ".pts"):
            pts = np.loadtxt(path, dtype=np.float64, ndmin=2, comments="#")
            if pts.shape[1] < 3:
                raise ShapeFileError(f"{path}: needs at least 3 columns (x y z), found {pts.shape[1]}")
            pts = pts[:, :3]
        else:
            pts = np.asarray(load_geometry(path).vertices)
    except ShapeFileError:
        raise
    except Exception as err:
        raise ShapeFileError(f"{path}: could not be read ({type(err).__name__}: {err})") from err
    pts = np.asarray(pts)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ShapeFileError(f"{path}: points must be (N, 3), got shape {pts.shape}")
    if len(pts) == 0:
        raise ShapeFileError(f"{path}: no points")
    return pts.astype(np.float32, copy=False)


def _read_npz(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        for key in NPZ_POINT_KEYS:
            if key in data.files:
                return data[key]
        raise ShapeFileError(f"{path}: no points array; expected one of the keys {NPZ_POINT_KEYS}, found {data.files}")


def _scene_meshes(scene: trimesh.Scene) -> list[trimesh.Trimesh]:
    # dump() applies each node's transform and keeps each geometry's own visuals
    return [g for g in scene.dump(concatenate=False) if isinstance(g, trimesh.Trimesh)]


def load_mesh_pieces(path: str | os.PathLike) -> list[trimesh.Trimesh]:
    """The triangle meshes of a mesh file, one per geometry of its scene, transforms applied.

    Each piece keeps its own colours, UVs and material (a flattened mesh cannot hold several materials);
    :func:`load_mesh` is their concatenation, face for face in this order. A file with no triangles (a
    point cloud) gives an empty list.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in POINT_SUFFIXES:
        return []
    try:
        loaded = trimesh.load(path, process=False, force="scene")
    except Exception as err:
        raise ShapeFileError(f"{path}: could not be read as a mesh ({type(err).__name__}: {err})") from err
    pieces = _scene_meshes(loaded)
    return pieces if any(len(p.faces) for p in pieces) else []
