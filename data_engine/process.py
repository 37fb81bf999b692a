"""One mesh to one store record: load, normalise, sample points, render, run the teacher, back-project.

:func:`process_mesh` is the whole data engine for a single shape (what every worker of a collection run calls).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from .backproject import backproject, point_visibility, resolve_visibility
from .cameras import CameraRig, make_rig
from .config import DataEngineConfig
from .labels import (
    LabelConfig,
    PartLabels,
    ShapeAnnotation,
    from_face_labels,
    from_point_labels,
    has_find3d_files,
    read_find3d,
    read_sidecar,
    sidecar_path,
)
from .mesh import check_mesh, load_mesh, normalize_mesh, sample_surface, shape_seed, surface_distance
from .render import Renderer, make_renderer
from .store import make_record
from .teachers import Teacher


class StageTimer:
    """Wall time per named stage, accumulated (``timer("render")`` is a context manager)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            _cuda_sync()  # GPU work is asynchronous; charge it to the stage that queued it
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def _cuda_sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class ShapeCheckError(ValueError):
    """A shape fails a quality check (``DataEngineConfig.checks``); the message says which and by how much."""


@dataclass
class ShapePoints:
    """The points a record is made of: ``points`` ``(N, 3)`` normalised, their ``faces`` ``(N,)`` or
    ``None`` (given points), and the ``labels`` over them."""

    points: np.ndarray
    faces: np.ndarray | None
    labels: PartLabels
    label_source: str


def find_sidecar(path: str | os.PathLike | None, config: LabelConfig) -> ShapeAnnotation | None:
    """The ``<stem>.parts.json`` annotation next to ``path``, when there is one and sidecars are on."""
    if path is None or not config.sidecar or not sidecar_path(path).is_file():
        return None
    return read_sidecar(sidecar_path(path))


def find_find3d_dir(uid: str, config: LabelConfig) -> Path | None:
    """``<find3d_root>/<uid>`` when it holds Find3D's three per-object files."""
    if not config.find3d_root:
        return None
    folder = Path(config.find3d_root) / uid
    return folder if has_find3d_files(folder) else None


def check_given_points(mesh: trimesh.Trimesh, points: np.ndarray, source: str, tolerance: float | None) -> None:
    """Raise :class:`ShapeCheckError` when given points do not lie on the normalised mesh.

    Features are back-projected by depth onto these points, and a mismatch would otherwise be hidden by the
    nearest-neighbour fill of unseen points.
    """
    if tolerance is None:
        return
    distance = float(np.quantile(surface_distance(mesh, points), 0.95))
    if distance > tolerance:
        raise ShapeCheckError(
            f"{source} points are off the mesh as normalised here: 95 % lie within {distance:.4f} of the surface, "
            f"more than checks.max_point_distance={tolerance} (were they normalised another way? see mesh.normalize, "
            "mesh.extent, mesh.up_axis)"
        )


def shape_points(
    mesh: trimesh.Trimesh,
    transform: np.ndarray,
    uid: str,
    config: DataEngineConfig,
    annotation: ShapeAnnotation | None,
    find3d_dir: Path | None,
) -> ShapePoints:
    """Choose the shape's points and labels: Find3D's points, a sidecar's labelled points, or surface samples.

    ``mesh`` is already normalised; ``transform`` took the file's coordinates there (sidecar points are
    in file coordinates, Find3D points are already normalised).
    """
    drop = config.labels.drop
    if find3d_dir is not None:
        points, labels = read_find3d(find3d_dir, drop)
        check_given_points(mesh, points, f"Find3D's {find3d_dir / 'points.pt'}", config.checks.max_point_distance)
        return ShapePoints(points, None, labels, "find3d")
    if annotation is not None and annotation.point_labels is not None:
        points = trimesh.transform_points(annotation.points, transform).astype(np.float32)
        check_given_points(mesh, points, "the sidecar's", config.checks.max_point_distance)
        return ShapePoints(
            points, None, from_point_labels(annotation.point_labels, annotation.part_names, drop), "points"
        )
    points, faces = sample_surface(mesh, config.mesh.num_points, seed=shape_seed(config.mesh.seed, uid))
    if annotation is not None and annotation.face_labels is not None:
        if len(annotation.face_labels) != len(mesh.faces):
            raise ValueError(
                f"the sidecar labels {len(annotation.face_labels)} faces, the mesh has {len(mesh.faces)}"
            )
        return ShapePoints(
            points,
            faces,
            from_face_labels(annotation.face_labels, annotation.part_names, faces, drop),
            "faces",
        )
    return ShapePoints(points, faces, PartLabels.empty(len(points)), "none")


def process_mesh(
    mesh_or_path: trimesh.Trimesh | str | os.PathLike,
    config: DataEngineConfig | None = None,
    *,
    uid: str | None = None,
    category: str | None = None,
    annotation: ShapeAnnotation | None = None,
    teacher: Teacher | None = None,
    renderer: Renderer | None = None,
    rig: CameraRig | None = None,
    timer: StageTimer | None = None,
) -> dict[str, Any]:
    """Turn one mesh into its store record (points, back-projected teacher features, part labels).

    Args:
        mesh_or_path: a mesh file (GLB, OBJ, PLY, OFF, ...) or a ``trimesh.Trimesh``.
        config: settings (defaults: Find3D settings with the pretrained DINOv2-base teacher).
        uid: record uid (default: the sidecar's, else the file stem, else ``"mesh"``).
        category: category (default: the sidecar's, else ``""``).
        annotation: labels to use instead of looking for a ``<stem>.parts.json`` sidecar.
        teacher, renderer, rig: reuse across calls (built from ``config`` when omitted).
        timer: collects per-stage wall time (load, sample, render, teacher, backproject, write).

    Returns:
        The store item: ``uid``, ``category``, ``points`` (N, 3) float32, ``features`` (N, D) float16,
        ``part_names`` (JSON list), ``part_masks`` (K, N) uint8, ``meta`` (JSON dict).

    Raises:
        MeshError: the mesh is empty, corrupt, not a mesh, or degenerate.
    """
    config = config or DataEngineConfig()
    timer = timer or StageTimer()
    teacher = teacher or Teacher(config.teacher)
    renderer = renderer or make_renderer(config.render)
    rig = rig or make_rig(config.camera)
    path = None if isinstance(mesh_or_path, trimesh.Trimesh) else Path(mesh_or_path)
    with timer("load"):
        if path is None:
            mesh = mesh_or_path
            check_mesh(mesh)
        else:
            mesh = load_mesh(path)
        annotation = annotation or find_sidecar(path, config.labels)
        uid = (
            uid
            or (annotation.uid if annotation and annotation.uid else None)
            or (path.stem if path else "mesh")
        )
        category = category if category is not None else (annotation.category if annotation else "")
        find3d_dir = find_find3d_dir(uid, config.labels)
    with timer("sample"):
        mesh, transform = normalize_mesh(mesh, config.mesh)
        shape = shape_points(mesh, transform, uid, config, annotation, find3d_dir)
    with timer("render"):
        views = renderer.render(mesh, rig)
    with timer("teacher"):
        grids = teacher.patch_features(views.rgb)
    with timer("backproject"):
        uv, visible = point_visibility(rig, views, shape.points, shape.faces, config.backproject)
        features, view_counts = backproject(
            grids, uv, visible, shape.points, rig.resolution, config.backproject
        )
    with timer("write"):
        meta = {
            "teacher": teacher.name,
            "pretrained": teacher.pretrained,
            "views": rig.num_views,
            "resolution": rig.resolution,
            "img_size": teacher.config.img_size,
            "feature_dim": int(features.shape[1]),
            "num_points": len(shape.points),
            "render_backend": config.render.backend,
            "visibility": resolve_visibility(config.backproject.visibility, shape.faces is not None),
            "seen_fraction": float((view_counts > 0).mean()),
            "label_source": shape.label_source,
            "source": str(path) if path is not None else "",
        }
        record = make_record(
            uid, category, shape.points, features, shape.labels.names, shape.labels.masks, meta
        )
    return record
