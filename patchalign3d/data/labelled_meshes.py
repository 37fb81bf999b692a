"""Meshes with per-face part names: the demo's synthetic shapes, or any collection in the same layout.

Layout (what ``data_engine.synthetic.write_dataset`` writes)::

    root/<category>/<uid>.ply            any mesh format trimesh reads
    root/<category>/<uid>.parts.json     {"uid", "category", "part_names": [K], "face_labels": [F ints]}

Each shape is scored on ``num_points`` points sampled on its surface with a seed derived from (seed, uid),
so a shape's points do not depend on which other shapes are loaded; a point takes its face's label.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from patchalign3d.data.base import DatasetFormatError, PartDataset, PartShape, ShapeRecord, read_json

__all__ = ["LabelledMeshes", "SIDECAR_SUFFIX"]

SIDECAR_SUFFIX = ".parts.json"
MESH_SUFFIXES = (".ply", ".obj", ".glb", ".off", ".stl")


def _uid_seed(seed: int, uid: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{uid}".encode()).digest()[:4], "little")


class LabelledMeshes(PartDataset):
    """Part-labelled meshes found below ``root`` (one folder per category).

    Args:
        root: the collection folder.
        num_points: surface points sampled per shape.
        seed: base seed of the sampling.
        categories, limit: keep only these categories / the first ``limit`` shapes (sorted by path).
    """

    name = "labelled-meshes"

    def __init__(
        self,
        root: str | Path,
        num_points: int = 2048,
        seed: int = 0,
        categories: list[str] | str | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(root)
        if num_points < 1:
            raise ValueError(f"num_points must be positive, got {num_points}")
        self.num_points, self.seed = num_points, seed
        for side in sorted(self.root.rglob(f"*{SIDECAR_SUFFIX}")):
            stem = side.name[: -len(SIDECAR_SUFFIX)]
            mesh = next((side.with_name(stem + s) for s in MESH_SUFFIXES if side.with_name(stem + s).is_file()), None)
            if mesh is None:
                raise DatasetFormatError(side, f"no mesh file {stem}{{{','.join(MESH_SUFFIXES)}}} beside this sidecar")
            meta = read_json(side, "part sidecar")
            missing = [k for k in ("part_names", "face_labels") if k not in meta]
            if missing:
                raise DatasetFormatError(side, f"sidecar lacks {missing}")
            category = str(meta.get("category") or side.parent.name)
            self.records.append(ShapeRecord(str(meta.get("uid") or stem), category, list(meta["part_names"]),
                                            {"mesh": mesh, "sidecar": side}))
        if not self.records:
            raise DatasetFormatError(self.root, f"no '*{SIDECAR_SUFFIX}' part sidecars below this folder")
        self._finalize(categories, limit)

    def load(self, record: ShapeRecord) -> PartShape:
        import trimesh

        from patchalign3d.data.io import load_mesh

        mesh = load_mesh(record.paths["mesh"])
        face_labels = np.asarray(read_json(record.paths["sidecar"], "part sidecar")["face_labels"], dtype=np.int64)
        if face_labels.shape != (len(mesh.faces),):
            raise DatasetFormatError(record.paths["sidecar"],
                                     f"{len(face_labels)} face labels for a mesh of {len(mesh.faces)} faces")
        if face_labels.size and (face_labels.min() < -1 or face_labels.max() >= len(record.part_names)):
            raise DatasetFormatError(record.paths["sidecar"], f"face labels must lie in -1..{len(record.part_names) - 1}")
        points, face = trimesh.sample.sample_surface(mesh, self.num_points, seed=_uid_seed(self.seed, record.uid))
        return PartShape(record.uid, record.category, points.astype(np.float32), face_labels[face],
                         list(record.part_names), source=str(record.paths["mesh"]))
