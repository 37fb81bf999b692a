"""What every keypoint detector does first: check the names, read the shape, know its scale.

The bottom of :mod:`patchalign3d.keypoints`: detection, lifting and the pointers all build on these helpers,
and this module imports none of them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from patchalign3d.api import _as_cloud
from patchalign3d.data.io import MESH_SUFFIXES, load_geometry
from patchalign3d.text import validate_part_names


@dataclass
class ShapeInput:
    """A shape as points, plus the mesh they were sampled on (None for a point cloud).

    Attributes:
        points: ``(N, 3)`` float32.
        mesh: the ``trimesh.Trimesh`` the points were sampled on, or None.
        source: what the input was, in words (``"mesh"``, ``"point cloud"``, ``"point cloud file"``), for
            reports that say how a file was read.
    """

    points: np.ndarray
    mesh: Any = None
    source: str = "point cloud"


def validate_names(names: Sequence[str]) -> list[str]:
    """Cleaned, distinct, non-empty keypoint names (the part-name rules of :mod:`patchalign3d.text`)."""
    return validate_part_names(names)


_OBJ_FACE = re.compile(rb"^f\s", re.MULTILINE)
_PLY_FACES = re.compile(rb"^element\s+face\s+(\d+)", re.MULTILINE)


def declared_faces(path: str | os.PathLike) -> int | None:
    """How many faces a mesh file says it holds (OBJ ``f`` lines, the PLY header, the OFF counts); None
    for other formats. Read from the text itself, so that faces a reader could not parse are still counted."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".obj", ".ply", ".off"):
        return None
    data = path.read_bytes()
    if suffix == ".obj":
        return len(_OBJ_FACE.findall(data))
    if suffix == ".ply":
        header = data.split(b"end_header", 1)[0]
        found = _PLY_FACES.search(header)
        return int(found.group(1)) if found else 0
    lines = [ln.split(b"#", 1)[0].strip() for ln in data.splitlines()[:50]]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].upper().endswith(b"OFF"):
        return None
    counts = (lines[0][3:].split() or (lines[1].split() if len(lines) > 1 else []))
    return int(counts[1]) if len(counts) >= 2 and counts[1].isdigit() else None


def read_shape_file(path: str | os.PathLike) -> trimesh.Trimesh | trimesh.PointCloud:
    """A shape file as a mesh, or as a point cloud when it has no faces.

    Raises:
        ValueError: a mesh file that declares faces of which none could be read (the reader would otherwise
            hand back its bare vertices as a point cloud, and every keypoint would be placed on them).
    """
    shape = load_geometry(path)
    if isinstance(shape, trimesh.PointCloud) and Path(path).suffix.lower() in MESH_SUFFIXES:
        faces = declared_faces(path)
        if faces:
            raise ValueError(
                f"{path}: the file declares {faces} faces but none could be read, so it would be used as a point "
                f"cloud of its {len(shape.vertices)} vertices; re-export the mesh (e.g. `trimesh.load(...).export`, "
                "Blender), or save the vertices as a point-cloud file (.xyz, .pcd) to use them as points on purpose"
            )
    return shape


def as_shape(shape: Any, *, num_points: int = 2048, seed: int = 0) -> ShapeInput:
    """Points of a cloud, mesh or file; a mesh is sampled on its surface (``num_points``, seeded).

    Raises:
        ValueError: a mesh with no surface (no faces, or every face degenerate), a mesh file whose faces could
            not be read, bad coordinates, an empty cloud.
    """
    source = "point cloud"
    if isinstance(shape, (str, os.PathLike)):
        shape = read_shape_file(shape)
        source = "point cloud file"
    if isinstance(shape, trimesh.PointCloud):
        shape = np.asarray(shape.vertices, dtype=np.float32)
    if isinstance(shape, trimesh.Trimesh):
        if len(shape.faces) == 0 or not shape.area > 0:
            what = "no faces" if len(shape.faces) == 0 else "only degenerate faces (total area 0)"
            raise ValueError(f"the mesh has no surface to put keypoints on: {what}")
        if not np.isfinite(shape.vertices).all():
            raise ValueError("the mesh has NaN or infinite vertex coordinates")
        samples, _ = trimesh.sample.sample_surface(shape, num_points, seed=seed)
        return ShapeInput(samples.astype(np.float32), shape, "mesh")
    cloud = _as_cloud(shape)
    if len(cloud) == 0:
        raise ValueError("the point cloud is empty: there is no surface to put keypoints on")
    return ShapeInput(cloud, None, source)


def diagonal(points: np.ndarray) -> float:
    """Length of the ``(N, 3)`` points' bounding-box diagonal (the scale radii are given in); 1 for a single point."""
    return float(np.linalg.norm(np.ptp(np.asarray(points, dtype=np.float64), axis=0))) or 1.0
