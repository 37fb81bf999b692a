"""FAUST human scans with semantic part labels (coarse: arm, head, leg, torso), in two layouts.

* SATR's layout::

      root/meshes.txt                    mesh names, one per line (optional: else every key of the labels file)
      root/scans/<name>.obj              the mesh; labels follow its vertex order
      root/coarse_gt.json                {"<name>": ["torso", "arm", ...] one label string per vertex}
      root/fine_grained_gt.json          same, finer labels

* ``.npz`` files (what the PatchAlign3D release reads)::

      root/**/*.npz                      points (N, 3), labels (N,) int, label_names (K,) str

All shapes share one category, ``"human"``. In SATR's layout the label space is the sorted set of label
strings over the whole file, so every scan is scored over the same ``K`` parts.
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
    as_name_list,
    check_labels,
    check_points,
    read_json,
    read_obj_vertices,
)

__all__ = ["FAUST", "UNLABELLED_NAMES"]

#: Label strings read as "no label" (-1).
UNLABELLED_NAMES = frozenset({"", "unlabeled", "unlabelled", "unknown", "none", "background"})

_GT_FILES = {"coarse": "coarse_gt.json", "fine": "fine_grained_gt.json"}


class FAUST(PartDataset):
    """FAUST part segmentation.

    Args:
        root: SATR-layout folder (with ``coarse_gt.json``) or a folder of ``.npz`` files.
        granularity: ``"coarse"`` or ``"fine"`` (SATR layout only).
        layout: ``"auto"``, ``"satr"`` or ``"npz"``.
        categories, limit: as in :class:`~patchalign3d.data.base.PartDataset`.
    """

    name = "faust"

    def __init__(
        self,
        root: str | Path,
        granularity: str = "coarse",
        *,
        layout: str = "auto",
        categories: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(root)
        if granularity not in _GT_FILES:
            raise ValueError(f"granularity must be one of {sorted(_GT_FILES)}, got {granularity!r}")
        if layout == "auto":
            layout = "satr" if any((self.root / f).is_file() for f in _GT_FILES.values()) else "npz"
        if layout not in ("satr", "npz"):
            raise ValueError(f"layout must be 'auto', 'satr' or 'npz', got {layout!r}")
        self.granularity = granularity
        self.layout = layout
        self._gt: dict[str, list[str]] = {}
        if layout == "satr":
            self._index_satr()
        else:
            self._index_npz()
        self._finalize(categories, limit)

    # -- SATR -----------------------------------------------------------------------------------------
    def _index_satr(self) -> None:
        gt_path = self.root / _GT_FILES[self.granularity]
        gt = read_json(gt_path, f"{self.granularity} ground-truth labels")
        if not isinstance(gt, dict) or not all(isinstance(v, list) for v in gt.values()):
            raise DatasetFormatError(gt_path, "expected {mesh name: [label string per vertex]}")
        self._gt = gt
        self._gt_path = gt_path
        names_path = self.root / "meshes.txt"
        if names_path.is_file():
            names = [ln.strip() for ln in names_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        else:
            names = sorted(gt)
        vocab: set[str] = set()
        for key, labels in gt.items():
            bad = next((v for v in labels if not isinstance(v, str)), None)
            if bad is not None:
                raise DatasetFormatError(gt_path, f"mesh {key!r}: labels must be strings, found {bad!r}")
            vocab.update(labels)
        part_names = sorted(vocab - UNLABELLED_NAMES)
        if not part_names:
            raise DatasetFormatError(gt_path, "no label strings")
        for name in names:
            stem = name[:-4] if name.endswith(".obj") else name
            key = stem if stem in gt else name
            if key not in gt:
                raise DatasetFormatError(gt_path, f"no labels for mesh {name!r} listed in {names_path.name}")
            self.records.append(
                ShapeRecord(
                    stem, "human", part_names, {"points": self.root / "scans" / f"{stem}.obj"}, {"key": key}
                )
            )

    # -- npz -------------------------------------------------------------------------------------------
    def _index_npz(self) -> None:
        files = sorted(self.root.rglob("*.npz"))
        if not files:
            raise DatasetFormatError(
                self.root, "no FAUST data: expected coarse_gt.json + scans/*.obj (SATR layout) or *.npz files"
            )
        for path in files:
            names = _npz_names(path)
            uid = path.relative_to(self.root).with_suffix("").as_posix()
            self.records.append(ShapeRecord(uid, "human", names, {"points": path}))

    def load(self, record: ShapeRecord) -> PartShape:
        path = record.paths["points"]
        if self.layout == "satr":
            points = read_obj_vertices(path)
            strings = self._gt[record.extra["key"]]
            if len(strings) != points.shape[0]:
                raise DatasetFormatError(
                    self._gt_path,
                    f"mesh {record.extra['key']!r} has {len(strings)} labels but {path} has {points.shape[0]} vertices",
                )
            index = {n: i for i, n in enumerate(record.part_names)}
            labels = np.fromiter((index.get(s, -1) for s in strings), dtype=np.int64, count=len(strings))
        else:
            with _open_npz(path) as z:
                if "points" not in z or "labels" not in z:
                    raise DatasetFormatError(path, f"npz needs 'points' and 'labels', has {sorted(z.files)}")
                points = check_points(path, z["points"])
                labels = check_labels(path, z["labels"], points.shape[0], len(record.part_names))
        return PartShape(
            record.uid, record.category, points, labels, list(record.part_names), source=str(path)
        )


def _open_npz(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DatasetFormatError(path, f"not a readable .npz file ({e})") from None


def _npz_names(path: Path) -> list[str]:
    with _open_npz(path) as z:
        if "label_names" not in z:
            raise DatasetFormatError(path, f"npz lacks 'label_names' (has {sorted(z.files)})")
        try:
            raw = z["label_names"]
        except ValueError as e:  # object arrays need pickle, which is refused for safety
            raise DatasetFormatError(
                path, f"'label_names' must be a string array, not objects ({e})"
            ) from None
        names = as_name_list(path, raw)
    if not names:
        raise DatasetFormatError(path, "'label_names' is empty")
    return names
