"""Find3D's Objaverse part-segmentation benchmark.

Layout::

    root/{seen,unseen,shapenetpart}/<class words>_<uid>/points5000.pcd   x y z (+ normals, colours)
                                                      /labels.npy       (N,) int, 0 = unlabelled, 1..K parts
                                                      /label_map.json   {"1": "part name", ..., "K": ...}

The category of an object is its folder name without the trailing ``_<uid>``, underscores read as spaces
(as Find3D does to decorate prompts, ``"<part> of a <category>"``). Each object has its own label space.
Find3D names the seen split's folder ``seenclass`` in its code and ``seen`` in its notes; both are accepted.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from patchalign3d.data.base import (
    DatasetFormatError,
    PartDataset,
    PartShape,
    ShapeRecord,
    check_labels,
    pcd_xyz,
    read_json,
)

__all__ = ["ObjaverseBench", "OBJAVERSE_SPLITS", "read_label_map"]

#: Accepted folder names of each split.
OBJAVERSE_SPLITS: dict[str, tuple[str, ...]] = {
    "seen": ("seen", "seenclass"),
    "unseen": ("unseen", "unseenclass"),
    "shapenetpart": ("shapenetpart",),
}


def read_label_map(path: str | Path) -> list[str]:
    """``label_map.json`` -> part names ordered by label ``1..K``."""
    path = Path(path)
    mapping = read_json(path, "label map ({'1': name, ...})")
    if not isinstance(mapping, dict) or not mapping:
        raise DatasetFormatError(path, "expected a non-empty JSON object {'1': name, ...}")
    try:
        keys = sorted(int(k) for k in mapping)
    except ValueError:
        raise DatasetFormatError(path, f"keys must be integers 1..K, got {sorted(mapping)}") from None
    if keys != list(range(1, len(keys) + 1)):
        raise DatasetFormatError(
            path, f"keys must be exactly 1..{len(keys)} (0 means unlabelled), got {keys}"
        )
    names = [mapping[str(k)] for k in keys]
    bad = next((n for n in names if not isinstance(n, str) or not n.strip()), None)
    if bad is not None:
        raise DatasetFormatError(path, f"part names must be non-empty strings, found {bad!r}")
    return names


def category_from_folder(name: str) -> str:
    """``"coffee_mug_3f1b..."`` -> ``"coffee mug"`` (the last ``_`` field is the object uid)."""
    bits = name.split("_")
    return " ".join(bits[:-1]) if len(bits) > 1 else name


class ObjaverseBench(PartDataset):
    """Find3D's Objaverse benchmark.

    Args:
        root: the benchmark folder (holding ``seen/``, ``unseen/``, ``shapenetpart/``), or one split's folder
            when ``split`` is ``None``.
        split: ``"seen"``, ``"unseen"``, ``"shapenetpart"`` or ``None``.
        categories, limit: as in :class:`~patchalign3d.data.base.PartDataset`.
    """

    name = "objaverse"

    def __init__(
        self,
        root: str | Path,
        split: str | None = "seen",
        *,
        categories: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(root)
        self.split = split
        folder = self.root
        if split is not None:
            if split not in OBJAVERSE_SPLITS:
                raise ValueError(
                    f"unknown Objaverse benchmark split {split!r}; expected {sorted(OBJAVERSE_SPLITS)} or None"
                )
            found = [self.root / d for d in OBJAVERSE_SPLITS[split] if (self.root / d).is_dir()]
            if not found:
                raise DatasetFormatError(
                    self.root, f"no {' or '.join(OBJAVERSE_SPLITS[split])}/ folder for split {split!r}"
                )
            folder = found[0]
        objects = sorted(p for p in folder.iterdir() if p.is_dir())
        if not objects:
            raise DatasetFormatError(
                folder, "no object folders (each holds points5000.pcd, labels.npy, label_map.json)"
            )
        for obj in objects:
            names = read_label_map(obj / "label_map.json")
            self.records.append(
                ShapeRecord(
                    uid=obj.name,
                    category=category_from_folder(obj.name),
                    part_names=names,
                    paths={"points": obj / "points5000.pcd", "labels": obj / "labels.npy"},
                )
            )
        self._finalize(categories, limit)

    def load(self, record: ShapeRecord) -> PartShape:
        points = pcd_xyz(record.paths["points"])
        lpath = record.paths["labels"]
        if not lpath.is_file():
            raise DatasetFormatError(lpath, "missing labels.npy (per-point labels, 0 = unlabelled)")
        try:
            raw = np.load(lpath, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DatasetFormatError(lpath, f"not a readable .npy array ({e})") from None
        raw = np.asarray(raw).reshape(-1) if np.ndim(raw) == 2 and 1 in np.shape(raw) else raw
        if np.size(raw) and np.min(raw) < 0:
            raise DatasetFormatError(lpath, f"labels must be 0 (unlabelled) or 1..K, found {np.min(raw)}")
        labels = check_labels(
            lpath, np.asarray(raw).astype(np.int64) - 1, points.shape[0], len(record.part_names)
        )
        return PartShape(
            record.uid,
            record.category,
            points,
            labels,
            list(record.part_names),
            source=str(record.paths["points"]),
        )
