"""Shapes with what the metrics need: sampled points, part labels per point and annotated keypoints.

Reads ``<folder>/<category>/<uid>.<ext>`` meshes with ``<uid>.parts.json`` sidecars (the demo's synthetic
shapes, or any mesh labelled the same way). Part labels are made comparable across the shapes of a category:
a name drawn among synonyms (a bicycle's ``"tire"`` or ``"wheel"``) counts as its registered part, and labels
index the category's sorted part vocabulary. Named keypoints become semantic ids with
:func:`~patchalign3d.keypoints.discover.metrics.side_ids`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchalign3d.keypoints.discover.metrics import Annotated, side_ids

MESH_SUFFIXES = (".ply", ".obj", ".glb", ".off")


@dataclass
class LabelledShape:
    """One shape for the metrics.

    Attributes:
        uid, category, path: where it came from.
        points: ``(N, 3)`` surface samples in the mesh's frame.
        part_labels: ``(N,)`` canonical part of each sample (names in ``part_vocabulary``), -1 when unlabelled.
        part_names: the canonical part name of each label id the shape uses.
        annotated: keypoints with semantic ids (empty when the sidecar has none).
    """

    uid: str
    category: str
    path: Path
    points: np.ndarray
    part_labels: np.ndarray
    part_names: list[str]
    annotated: Annotated


def canonical_part(category: str, name: str) -> str:
    """The registered part a synthetic category's shape means by ``name`` (itself when unknown)."""
    from data_engine.synthetic import CATEGORIES

    spec = CATEGORIES.get(category)
    if spec is not None:
        for part in spec.parts:
            if name in spec.names_of(part):
                return part
    return name


def shape_files(folder: str | Path) -> dict[str, list[Path]]:
    """``{category: meshes with a sidecar}`` under ``folder/<category>/``, sorted by uid."""
    out: dict[str, list[Path]] = {}
    root = Path(folder)
    for path in sorted(p for p in root.glob("*/*") if p.suffix.lower() in MESH_SUFFIXES):
        if path.with_name(path.stem + ".parts.json").is_file():
            out.setdefault(path.parent.name, []).append(path)
    return out


def load_labelled(path: str | Path, num_points: int = 2048, seed: int = 0) -> tuple[LabelledShape, list[str]]:
    """Sample a labelled mesh; returns the shape (labels still per shape name) and the canonical names."""
    import trimesh

    from data_engine.synthetic import read_sidecar
    from patchalign3d.data.io import load_mesh

    path = Path(path)
    mesh = load_mesh(path)
    side = read_sidecar(path, mesh)
    if side is None:
        raise ValueError(f"{path}: no .parts.json sidecar beside the mesh")
    keypoints = {n: np.asarray(v, dtype=np.float64).reshape(-1, 3) for n, v in side.get("keypoints", {}).items()}
    samples, faces = trimesh.sample.sample_surface(mesh, num_points, seed=seed)
    labels = side["face_labels"][faces] if len(side["face_labels"]) else np.full(num_points, -1)
    lo, hi = samples.min(axis=0), samples.max(axis=0)
    diag = float(np.linalg.norm(hi - lo)) or 1.0
    names = [canonical_part(side["category"], n) for n in side["part_names"]]
    shape = LabelledShape(uid=str(side["uid"]), category=str(side["category"]), path=path,
                          points=samples.astype(np.float32), part_labels=np.asarray(labels, np.int64),
                          part_names=names, annotated=side_ids(keypoints, diag))
    return shape, names


def load_category(paths: Sequence[Path], num_points: int = 2048, seed: int = 0) -> list[LabelledShape]:
    """Shapes of one category with labels re-indexed into the category's sorted canonical vocabulary."""
    loaded = [load_labelled(p, num_points, seed) for p in paths]
    vocabulary = sorted({n for _, names in loaded for n in names})
    out = []
    for shape, names in loaded:
        remap = np.array([vocabulary.index(n) for n in names] + [-1], dtype=np.int64)
        shape.part_labels = remap[shape.part_labels]  # -1 stays -1 (the appended entry)
        shape.part_names = vocabulary
        out.append(shape)
    return out
