"""Find3D's benchmark protocol from the files Find3D publishes: fixed rotations, object subsets, top-k prompts.

Find3D (github.com/ziqi-ma/Find3D, MIT licence) ships, in ``model/evaluation/benchmark/benchmark_reproducibility/``::

    shapenetpart/random_rotation_test.pt   (2874, 3): one (roll, yaw, pitch) per shape of the HDF5 test set
    shapenetpart/subset_idxs.json          {category: [position within the category's test shapes, ...]}
    shapenetpart/topk_prompts.json         {category: [prompt per part]}
    partnete/rand_rotation.pt              (1906, 3): objects by category name, then object id (assumed;
                                           each object's own rand_rotation.pt is used when the copy has them)
    partnete/subset_idxs.json              {Category: [object id, ...]}

The package does not copy them: point ``protocol_dir`` (``--protocol-dir``, or the environment variable
``PATCHALIGN3D_FIND3D_DIR``) at that folder. A row rotates a shape's raw coordinates as Find3D's
``common/utils.py::rotate_pts`` does: ``R = Rz(pitch) @ Ry(yaw) @ Rx(roll)``, points become ``points @ R.T``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from patchalign3d.data import Find3DKey, PartDataset, PartNetE, ShapeNetPart, ShapeNetPartH5
from patchalign3d.data.base import DatasetFormatError
from patchalign3d.evaluation.prompt_table import PromptTable

__all__ = [
    "FIND3D_DIR_ENV",
    "FIND3D_SOURCE",
    "Find3DFiles",
    "Find3DFileMissing",
    "find3d_rotation_matrix",
    "find3d_topk_table",
    "resolve_protocol_dir",
]

#: Environment variable naming the folder that holds Find3D's ``shapenetpart/`` and ``partnete/`` files.
FIND3D_DIR_ENV = "PATCHALIGN3D_FIND3D_DIR"
#: Where Find3D publishes the files (repository, folder, commit the package was checked against).
FIND3D_SOURCE = (
    "github.com/ziqi-ma/Find3D, model/evaluation/benchmark/benchmark_reproducibility/ "
    "(commit f0801f75a5e35a39a0cd2fd2c44e28aed8a1e238, MIT licence)"
)
#: Find3D's PartNetE loader reads each object's rotation from this file in the object's folder, when present.
OBJECT_ROTATION = "rand_rotation.pt"
OBJECT_ROTATION_SOURCE = "ziqi-ma/Find3D model/data/data.py:315"
#: The files of each benchmark, relative to the protocol folder.
FIND3D_FILES: dict[str, dict[str, str]] = {
    "shapenetpart": {
        "rotation": "shapenetpart/random_rotation_test.pt",
        "subset": "shapenetpart/subset_idxs.json",
        "prompts": "shapenetpart/topk_prompts.json",
    },
    "partnete": {"rotation": "partnete/rand_rotation.pt", "subset": "partnete/subset_idxs.json"},
}


class Find3DFileMissing(FileNotFoundError):
    """A file of Find3D's protocol is not where the protocol folder says; the message says where to get it."""


def resolve_protocol_dir(protocol_dir: str | os.PathLike | None) -> Path | None:
    """``protocol_dir``, else ``$PATCHALIGN3D_FIND3D_DIR``, else None."""
    chosen = protocol_dir if protocol_dir is not None else os.environ.get(FIND3D_DIR_ENV) or None
    return None if chosen is None else Path(chosen).expanduser()


def _find3d_file(protocol_dir: str | os.PathLike | None, relative: str, what: str) -> Path:
    folder = resolve_protocol_dir(protocol_dir)
    how = (
        f"pass --protocol-dir DIR (Python: Protocol(protocol_dir=DIR); or set {FIND3D_DIR_ENV}) where DIR holds "
        f"{relative}. Find3D ships it in {FIND3D_SOURCE}"
    )
    if folder is None:
        raise Find3DFileMissing(f"Find3D's {what} ({relative}) is needed but no protocol folder is set: {how}")
    path = folder / relative
    if not path.is_file():
        raise Find3DFileMissing(f"Find3D's {what} is not at {path}: {how}")
    return path


def find3d_rotation_matrix(angles: Any) -> np.ndarray:
    """``(3, 3)`` rotation of one ``(roll, yaw, pitch)`` row, as Find3D's ``rotate_pts``: Rz(pitch) Ry(yaw) Rx(roll)."""
    roll, yaw, pitch = (float(a) for a in np.asarray(angles, dtype=np.float64).reshape(3))
    cr, sr, cy, sy, cp, sp = np.cos(roll), np.sin(roll), np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rz = np.array([[cp, -sp, 0.0], [sp, cp, 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry @ rx


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _benchmark_of(dataset: PartDataset) -> str:
    if isinstance(dataset, ShapeNetPartH5):
        if dataset.split != "test":
            raise ValueError(f"Find3D's ShapeNetPart files cover the test split, not {dataset.split!r}")
        return "shapenetpart"
    if isinstance(dataset, ShapeNetPart):
        raise ValueError(
            f"Find3D's ShapeNetPart rotations and subsets index the HDF5 release's test set in its file order "
            f"(ply_data_test0.h5, ply_data_test1.h5), an order the split lists of {dataset.root} do not give: "
            "point --root at shapenet_part_seg_hdf5_data (or the folder holding its hdf5_data/)"
        )
    if isinstance(dataset, PartNetE):
        if dataset.split != "test":
            raise ValueError(f"Find3D's PartNetE files cover the test split, not {dataset.split!r}")
        return "partnete"
    raise ValueError(
        f"Find3D publishes rotations and subsets for ShapeNetPart (HDF5 release) and PartNetE only, not for "
        f"{type(dataset).__name__}"
    )


@dataclass
class Find3DFiles:
    """Find3D's rotation and subset files for one benchmark, matched to a dataset's shapes.

    Build with :meth:`for_dataset`; ``rotation(key)`` and ``in_subset(key)`` take a record's
    :class:`~patchalign3d.data.Find3DKey` (``record.extra["find3d"]``).
    """

    benchmark: str
    rotations: np.ndarray | None = None
    subset: dict[str, set[str]] | None = None
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    order: str = ""
    object_rotations: dict[int, Path] | None = None  # Find3D row -> <object>/rand_rotation.pt

    @classmethod
    def for_dataset(
        cls, dataset: PartDataset, protocol_dir: str | os.PathLike | None, *, rotation: bool, subset: bool
    ) -> Find3DFiles:
        benchmark = _benchmark_of(dataset)
        out = cls(benchmark, order=_order_assumed(dataset))
        names = FIND3D_FILES[benchmark]
        per_object = _per_object_rotations(dataset) if rotation and benchmark == "partnete" else None
        if per_object:
            # Find3D's PartNetE loader reads <object>/rand_rotation.pt (model/data/data.py line 315): exact,
            # no row order to assume
            out.object_rotations = per_object
            out.order = f"each object's own rand_rotation.pt, as Find3D's loader reads it ({OBJECT_ROTATION_SOURCE})"
            out.files["rotation"] = {"path": f"<object>/{OBJECT_ROTATION}", "sha256": "one file per object"}
        elif rotation:
            path = _find3d_file(protocol_dir, names["rotation"], f"{benchmark} rotation file")
            out.rotations = _read_rotations(path)
            out._record("rotation", path)
            total = dataset.find3d_total  # shapes of the whole listing, before filters and skips
            if total != len(out.rotations):
                raise DatasetFormatError(
                    path,
                    f"has {len(out.rotations)} rows, one per shape of Find3D's {benchmark} test set in order, but "
                    f"{dataset.root} lists {total} shapes: the rows can only be matched on the complete set",
                )
        if subset:
            path = _find3d_file(protocol_dir, names["subset"], f"{benchmark} subset file")
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
                raise DatasetFormatError(path, "expected {category: [index or object id, ...]}")
            out.subset = {str(k): {str(m) for m in v} for k, v in data.items()}
            out._record("subset", path)
        return out

    def _record(self, role: str, path: Path) -> None:
        self.files[role] = {"path": str(path), "sha256": _sha256(path)}

    def rotation(self, key: Find3DKey) -> np.ndarray:
        """The ``(3, 3)`` rotation of the shape at ``key``."""
        if self.object_rotations is not None:
            return find3d_rotation_matrix(_read_rotations(self.object_rotations[key.row], rows=False)[0])
        assert self.rotations is not None
        return find3d_rotation_matrix(self.rotations[key.row])

    def in_subset(self, key: Find3DKey) -> bool:
        assert self.subset is not None
        return key.member in self.subset.get(key.category, ())

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "source": FIND3D_SOURCE, "files": self.files, "order_assumed": self.order}


def _order_assumed(dataset: PartDataset) -> str:
    """How Find3D's rows are matched to the dataset's shapes, in words, for the report."""
    if isinstance(dataset, ShapeNetPartH5):
        return (
            f"rows are the shapes of {', '.join(dataset.h5_files)} concatenated in this order (the split's file "
            "list, else the file names sorted). Find3D's loader concatenates glob('hdf5_data/*test*.h5') unsorted "
            "(model/data/data.py line 358), an order its file system chose; the sorted order is assumed"
        )
    return (
        "rows are the objects sorted by category name, then by object id as a string (Find3D's loader lists "
        "folders with sorted(os.listdir(...)), line 277); Find3D's code never reads this file by row (it loads "
        "<object>/rand_rotation.pt, line 315, used instead when every object folder has one) and loops over "
        "categories in its own order (Door last), so the row order is assumed"
    )


def _per_object_rotations(dataset: PartDataset) -> dict[int, Path] | None:
    """``{Find3D row: <object>/rand_rotation.pt}`` when every object folder of the copy holds one, else None."""
    files = {r.extra["find3d"].row: r.paths["points"].parent / OBJECT_ROTATION for r in dataset.records}
    return files if files and all(p.is_file() for p in files.values()) else None


def _read_rotations(path: Path, rows: bool = True) -> np.ndarray:
    """``(N, 3)`` (roll, yaw, pitch) rows; ``rows=False``: one object's ``(3,)`` file, returned as ``(1, 3)``."""
    import torch

    try:
        rot = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DatasetFormatError(path, f"not a readable tensor file ({type(e).__name__}: {e})") from None
    if not rows and torch.is_tensor(rot) and rot.shape == (3,):
        rot = rot[None]
    if not torch.is_tensor(rot) or rot.dim() != 2 or rot.shape[1] != 3 or not rot.is_floating_point():
        want = "(N, 3)" if rows else "(3,)"
        raise DatasetFormatError(path, f"expected a float tensor {want} of (roll, yaw, pitch), got {getattr(rot, 'shape', type(rot))}")
    return rot.double().numpy()


def find3d_topk_table(protocol_dir: str | os.PathLike | None) -> PromptTable:
    """Find3D's ShapeNetPart top-k prompts (``topk_prompts.json``) as a prompt table.

    The published file lists three prompts for Airplane's four parts (its second string holds the wing and tail
    sentences joined); as Find3D's loader does, prompt i stands for part i, and a part with no prompt is never
    predicted and not scored (Find3D's IoU loop runs over the prompts, ``model/evaluation/core.py`` line 83).
    The sentences are used verbatim, undecorated (``model/data/data.py`` lines 411-414).
    """
    path = _find3d_file(protocol_dir, FIND3D_FILES["shapenetpart"]["prompts"], "ShapeNetPart top-k prompt file")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(p, str) for p in v) for v in data.values()
    ):
        raise DatasetFormatError(path, "expected {category: [prompt, ...]}")
    return PromptTable(f"find3d-topk ({path})", categories=data, allow_fewer=True, verbatim=True)
