"""Part labels per point: multi-label membership with cleaned names, from several annotation sources.

Sources:

* Find3D-style per-view masks with names (a point is in a mask when a mask pixel shows the point's face),
  and Find3D's per-object files ``points.pt``, ``mask2points.pt``, ``mask_labels.txt``;
* per-face labels (``<stem>.parts.json`` sidecars of synthetic shapes, PartNet-style face annotations);
* per-point labels (sidecars with ``points`` and ``point_labels``, ShapeNetPart ``.txt`` files).

Names are cleaned with ``patchalign3d.text.clean_name``; masks with the same cleaned name are merged (union),
and names in ``drop`` (``unknown`` by default, as Find3D) are removed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# One table of ShapeNetPart's part names and global ids for the whole project (the release's names).
from patchalign3d.data.shapenetpart import SHAPENETPART_OFFSETS, SHAPENETPART_PARTS

#: Sidecar file next to a mesh: ``<stem>.parts.json``.
SIDECAR_SUFFIX = ".parts.json"
#: Find3D's per-object annotation files.
FIND3D_FILES = ("points.pt", "mask2points.pt", "mask_labels.txt")


class LabelError(ValueError):
    """An annotation file is malformed or does not match its shape."""


@dataclass
class LabelConfig:
    """Where labels come from and how names are treated.

    Attributes:
        sidecar: read ``<stem>.parts.json`` next to each mesh when present.
        find3d_root: folder of Find3D per-object folders ``<find3d_root>/<uid>/{points.pt, mask2points.pt,
            mask_labels.txt}``; when a shape has one, its points (already normalised by Find3D) are used as
            the shape's points and features are back-projected onto them by depth test.
        drop: cleaned names removed (Find3D drops masks its VLM named ``unknown``).
    """

    sidecar: bool = True
    find3d_root: str | None = None
    drop: list[str] = field(default_factory=lambda: ["unknown"])


def _clean(name: str) -> str:
    from patchalign3d.text import clean_name  # imported late: the text package is heavier than this module

    return clean_name(name)


@dataclass
class PartLabels:
    """Multi-label part membership of ``N`` points.

    Attributes:
        names: ``K`` cleaned, unique part names.
        masks: ``(K, N)`` bool, ``masks[k, n]`` when point ``n`` carries part ``k``.
    """

    names: list[str]
    masks: np.ndarray

    @classmethod
    def empty(cls, num_points: int) -> PartLabels:
        """No parts: ``K = 0``."""
        return cls([], np.zeros((0, num_points), dtype=bool))

    @classmethod
    def from_masks(
        cls, masks: np.ndarray, names: Sequence[str], drop: Sequence[str] = ("unknown",)
    ) -> PartLabels:
        """Clean ``names``, merge rows of ``(K, N)`` ``masks`` whose cleaned names agree, drop ``drop``."""
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 2 or masks.shape[0] != len(names):
            raise LabelError(f"masks of shape {masks.shape} do not match {len(names)} names")
        dropped = {_clean(d) for d in drop}
        merged: dict[str, np.ndarray] = {}
        for name, row in zip(names, masks, strict=True):
            key = _clean(str(name))
            if not key or key in dropped:
                continue
            merged[key] = merged[key] | row if key in merged else row.copy()
        if not merged:
            return cls.empty(masks.shape[1])
        return cls(list(merged), np.stack(list(merged.values())))

    @property
    def num_points(self) -> int:
        return int(self.masks.shape[1])


def from_point_labels(
    point_labels: np.ndarray, names: Sequence[str], drop: Sequence[str] = ("unknown",)
) -> PartLabels:
    """Single label per point (``-1`` unlabelled) into ``PartLabels``.

    Args:
        point_labels: ``(N,)`` ints in ``-1 .. K-1``.
        names: ``K`` part names.
    """
    point_labels = np.asarray(point_labels, dtype=np.int64)
    if point_labels.size and (point_labels.min() < -1 or point_labels.max() >= len(names)):
        raise LabelError(
            f"labels span {point_labels.min()}..{point_labels.max()} but there are {len(names)} names"
        )
    masks = point_labels[None, :] == np.arange(len(names))[:, None]
    return PartLabels.from_masks(masks, names, drop)


def from_face_labels(
    face_labels: np.ndarray, names: Sequence[str], point_faces: np.ndarray, drop: Sequence[str] = ("unknown",)
) -> PartLabels:
    """Per-face labels (``-1`` unlabelled) carried to points through the face each point lies on.

    Args:
        face_labels: ``(F,)`` ints in ``-1 .. K-1``.
        names: ``K`` part names.
        point_faces: ``(N,)`` face of each point.
    """
    face_labels = np.asarray(face_labels, dtype=np.int64)
    point_faces = np.asarray(point_faces, dtype=np.int64)
    if point_faces.size and point_faces.max() >= len(face_labels):
        raise LabelError(
            f"points lie on face {point_faces.max()} but only {len(face_labels)} faces are labelled"
        )
    return from_point_labels(face_labels[point_faces], names, drop)


def from_view_masks(
    view_masks: Sequence[tuple[int, np.ndarray, str]],
    face_ids: np.ndarray,
    point_faces: np.ndarray,
    drop: Sequence[str] = ("unknown",),
) -> PartLabels:
    """Find3D's rule: a point belongs to a named 2D mask when a mask pixel shows the point's face.

    Args:
        view_masks: ``(view index, (R, R) bool mask, name)`` per mask.
        face_ids: ``(V, R, R)`` rendered front face per pixel (``-1`` background).
        point_faces: ``(N,)`` face of each point.
    """
    point_faces = np.asarray(point_faces, dtype=np.int64)
    rows, names = [], []
    for view, mask, name in view_masks:
        faces = np.unique(face_ids[view][np.asarray(mask, dtype=bool)])
        rows.append(np.isin(point_faces, faces[faces >= 0]))
        names.append(name)
    if not rows:
        return PartLabels.empty(len(point_faces))
    return PartLabels.from_masks(np.stack(rows), names, drop)


def has_find3d_files(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds Find3D's ``points.pt``, ``mask2points.pt`` and ``mask_labels.txt``."""
    return all((Path(folder) / name).is_file() for name in FIND3D_FILES)


def read_find3d(
    folder: str | os.PathLike, drop: Sequence[str] = ("unknown",)
) -> tuple[np.ndarray, PartLabels]:
    """Find3D per-object annotations.

    Returns:
        ``points`` ``(N, 3)`` float32 (Find3D-normalised) and their ``PartLabels``.
    """
    import torch

    folder = Path(folder)
    points = torch.load(folder / "points.pt", map_location="cpu", weights_only=True)
    mask2points = torch.load(folder / "mask2points.pt", map_location="cpu", weights_only=True)
    names = [line.strip() for line in (folder / "mask_labels.txt").read_text().splitlines() if line.strip()]
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    masks = (
        np.asarray(mask2points).astype(bool).reshape(len(names), -1) if names else np.zeros((0, len(points)))
    )
    if masks.shape[1] != len(points):
        raise LabelError(f"{folder}: mask2points has {masks.shape[1]} columns for {len(points)} points")
    return points, PartLabels.from_masks(masks, names, drop)


@dataclass
class ShapeAnnotation:
    """What a sidecar says about a shape.

    Attributes:
        uid: the shape's uid, or ``None`` to derive it from the path.
        category: category name (``""`` unknown).
        part_names: ``K`` names (uncleaned).
        face_labels: ``(F,)`` per-face labels, or ``None``.
        point_labels: ``(N,)`` per-point labels with ``points`` ``(N, 3)`` in the mesh file's coordinates,
            or ``None``.
    """

    uid: str | None = None
    category: str = ""
    part_names: list[str] = field(default_factory=list)
    face_labels: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    points: np.ndarray | None = None


def sidecar_path(mesh_path: str | os.PathLike) -> Path:
    """``<dir>/<stem>.parts.json`` for ``<dir>/<stem>.<ext>``."""
    path = Path(mesh_path)
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def read_sidecar(path: str | os.PathLike) -> ShapeAnnotation:
    """Parse a ``.parts.json`` sidecar (``face_labels``, or ``points`` with ``point_labels``)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise LabelError(f"{path}: unreadable sidecar ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("part_names", []), list):
        raise LabelError(f"{path}: a sidecar is a JSON object with a 'part_names' list")
    ann = ShapeAnnotation(
        uid=data.get("uid"),
        category=str(data.get("category", "")),
        part_names=list(data.get("part_names", [])),
    )
    if "face_labels" in data:
        ann.face_labels = np.asarray(data["face_labels"], dtype=np.int64)
    if "point_labels" in data:
        if "points" not in data:
            raise LabelError(f"{path}: 'point_labels' need the 'points' they label")
        ann.point_labels = np.asarray(data["point_labels"], dtype=np.int64)
        ann.points = np.asarray(data["points"], dtype=np.float32).reshape(-1, 3)
        if len(ann.points) != len(ann.point_labels):
            raise LabelError(f"{path}: {len(ann.points)} points but {len(ann.point_labels)} point labels")
    return ann


def read_shapenetpart(path: str | os.PathLike, category: str) -> tuple[np.ndarray, PartLabels]:
    """A ShapeNetPart ``x y z nx ny nz label`` file with its category's part names.

    Args:
        path: the ``.txt`` file.
        category: ShapeNetPart category name, e.g. ``"Table"``.

    Returns:
        ``points`` ``(N, 3)`` float32 and ``PartLabels`` over the category's parts (all of them, so
        ``K`` is fixed per category even when a shape lacks some parts).
    """
    if category not in SHAPENETPART_PARTS:
        raise LabelError(f"unknown ShapeNetPart category {category!r}")
    data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if data.shape[1] != 7:
        raise LabelError(f"{path}: expected 7 columns (x y z nx ny nz label), found {data.shape[1]}")
    first = SHAPENETPART_OFFSETS[category]
    names = SHAPENETPART_PARTS[category]
    local = data[:, 6].astype(np.int64) - first
    if local.min() < 0 or local.max() >= len(names):
        raise LabelError(
            f"{path}: part ids {data[:, 6].min():.0f}..{data[:, 6].max():.0f} are not {category}'s"
        )
    masks = local[None, :] == np.arange(len(names))[:, None]
    labels = PartLabels([_clean(n) for n in names], masks)
    return data[:, :3].astype(np.float32), labels
