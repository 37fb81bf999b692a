"""PartNetE (PartSLIP's PartNet-Ensembled: 45 categories, 1,906 test objects).

Layout, as PartSLIP ships it (``PartNetE_meta.json`` and ``data/test.zip`` unzipped)::

    root/PartNetE_meta.json                 {category: [part name, ...]}, the label order of each category
    root/test/<Category>/<id>/pc.ply        coloured point cloud          (or root/data/test/...)
    root/test/<Category>/<id>/label.npy     np.save of {"semantic_seg": (n,), "instance_seg": (n,)}

``semantic_seg`` indexes the category's meta list; ``-1`` marks a point of no part (unlabelled here). The
``label.npy`` dict is a pickle: it is read by :func:`~patchalign3d.data.safe_npy.load_npy_dict`, which builds
NumPy arrays and nothing else, so a crafted file cannot run code.

Objects are ordered by category name, then by object id as strings (the order of Find3D's loader,
``sorted(os.listdir(...))``); that order numbers the rows of Find3D's ``rand_rotation.pt``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from patchalign3d.data.base import (
    DatasetFormatError,
    Find3DKey,
    PartDataset,
    PartShape,
    ShapeRecord,
    check_labels,
    check_points,
    read_json,
)
from patchalign3d.data.safe_npy import load_npy_dict

__all__ = ["PartNetE", "read_partnete_meta"]

META_FILE = "PartNetE_meta.json"
PARTNETE_SPLITS = ("test", "few_shot")


def read_partnete_meta(path: str | Path) -> dict[str, list[str]]:
    """``PartNetE_meta.json`` -> ``{category: [part names in label order]}``."""
    meta = read_json(path, f"{META_FILE} (PartSLIP's part names per category)")
    if not isinstance(meta, dict) or not meta:
        raise DatasetFormatError(path, "expected a JSON object {category: [part name, ...]}")
    for cat, parts in meta.items():
        if not isinstance(parts, list) or not parts or not all(isinstance(p, str) and p.strip() for p in parts):
            raise DatasetFormatError(path, f"category {cat!r}: expected a non-empty list of part names")
    return meta


def _point_at_parent(root: Path) -> None:
    """A root without the meta file that is a split folder (or a category folder) of a PartNetE copy: say which
    folder to give instead."""
    for parent in list(root.resolve().parents)[:3]:
        if (parent / META_FILE).is_file():
            raise DatasetFormatError(
                root / META_FILE,
                f"missing, but {parent} holds it: {root} is a folder inside the PartNetE copy; pass --root {parent} "
                "(the folder holding PartNetE_meta.json and test/ or data/test/)",
            )
    if root.name in PARTNETE_SPLITS:
        raise DatasetFormatError(
            root / META_FILE,
            f"missing: {root} looks like PartNetE's {root.name}/ folder; pass --root the folder above it, with "
            "PartNetE_meta.json (PartSLIP ships it beside data/) placed there",
        )


class PartNetE(PartDataset):
    """PartNetE's test (or few-shot) objects with semantic part labels.

    Args:
        root: the folder holding ``PartNetE_meta.json`` and ``test/`` (or ``data/test/``).
        split: ``"test"`` (1,906 objects) or ``"few_shot"``.
        categories, limit: as in :class:`~patchalign3d.data.base.PartDataset`.
        missing: an object folder without ``pc.ply`` or ``label.npy``: ``"error"`` or ``"skip"``.
    """

    name = "partnete"

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        *,
        categories: Iterable[str] | None = None,
        limit: int | None = None,
        missing: str = "error",
    ) -> None:
        super().__init__(root)
        if split not in PARTNETE_SPLITS:
            raise ValueError(f"unknown PartNetE split {split!r}; expected one of {PARTNETE_SPLITS}")
        self.split = split
        if not (self.root / META_FILE).is_file():
            _point_at_parent(self.root)
        meta = read_partnete_meta(self.root / META_FILE)
        candidates = [self.root / split, self.root / "data" / split]
        folder = next((c for c in candidates if c.is_dir()), None)
        if folder is None:
            raise DatasetFormatError(
                self.root, f"no {split}/ or data/{split}/ folder (PartSLIP's data/{split}.zip, unzipped)"
            )
        self.folder = folder
        row = 0
        for cat_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            cat = cat_dir.name
            if cat not in meta:
                raise DatasetFormatError(cat_dir, f"category {cat!r} is not in {META_FILE}")
            for obj in sorted(p for p in cat_dir.iterdir() if p.is_dir()):
                self.records.append(
                    ShapeRecord(
                        f"{cat}/{obj.name}",
                        cat,
                        list(meta[cat]),
                        {"points": obj / "pc.ply", "labels": obj / "label.npy"},
                        {"find3d": Find3DKey(row, cat, obj.name)},
                    )
                )
                row += 1
        if not self.records:
            raise DatasetFormatError(folder, "no <Category>/<id>/ object folders")
        self.find3d_total = row  # object folders in Find3D's numbering, before filters and skips
        self._finalize(categories, limit, missing, folder)

    def load(self, record: ShapeRecord) -> PartShape:
        from patchalign3d.data.io import ShapeFileError, load_points

        path = record.paths["points"]
        try:
            points = check_points(path, load_points(path))
        except (ShapeFileError, FileNotFoundError) as e:
            raise DatasetFormatError(path, f"unreadable point cloud ({e})") from None
        lpath = record.paths["labels"]
        sem = np.asarray(load_npy_dict(lpath, ("semantic_seg",))["semantic_seg"]).reshape(-1)
        labels = check_labels(lpath, sem, points.shape[0], len(record.part_names))
        return PartShape(record.uid, record.category, points, labels, list(record.part_names), source=str(path))
