"""ScanObjectNN's part annotations: real scans of 15 categories, from the raw release with parts.

Only the raw release ``object_dataset_complete_with_parts`` carries part labels (the ``.h5`` files hold an
object/background mask). Its layout (``hkust-vgd/scanobjectnn`` README, "Raw files" and "Parts"; COPS's
``data/ScanObjectNN.py`` reads it so)::

    root/object_dataset_complete_with_parts_/split_new.txt
        "<scene>_<object>.bin<TAB><category id>[<TAB>t]" per line; "t" marks the test split
    root/object_dataset_complete_with_parts_/<category>/<scene>_<object>.bin
        float32: the point count n, then n x 11 floats (x y z nx ny nz r g b instance_label semantic_label)
    root/object_dataset_complete_with_parts_/<category>/<scene>_<object>_part.bin
        float32: n, then n x 2 floats, the last the point's part id
    root/training_data/part_labels/<category>_meta.xml
        <class id=".." text=".."/> per part (id 0 = "unknown")

``root`` may also be the ``object_dataset_complete_with_parts_`` folder itself. The part XMLs ship with this
package (MIT, ``scanobjectnn_parts/``) and are used when the copy has none. Category ids are the order of
ScanObjectNN's ``shape_names_ext.txt`` (its FAQ: bag 0 ... toilet 14).

Choices, each in the report (:meth:`ScanObjectNN.choices`):

* ``background="keep"``: points of part id 0 ("unknown", including the scan's surroundings) are a scored class
  named ``"background"``, as COPS's evaluation keeps them (its loader's ``filter_background=False``,
  ``tests/utils/get_dataset.py`` line 23; remapping, ``data/ScanObjectNN.py`` lines 28-44 and 121-122);
  ``"drop"`` removes those points, as COPS's ``filter_background_by_zeros`` (lines 117-119) and other evaluators.
* ``drop_parts="cops"``: bin "base" and chair "head", which no scan carries, leave the label space and their
  points (none) become unlabelled, as COPS's ``part_id_remapping``; ``"none"`` keeps every XML part.
* ``scene="keep"``: every point of the file; ``"object"`` keeps the object's points only: the most frequent
  ``semantic_label`` other than 0, 1, 2 (ScanObjectNN's ``data_utils.py::load_pc_file`` with ``with_bg=False``,
  lines 67-74; COPS's loader default, lines 103-110).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from patchalign3d.data.base import (
    DatasetFormatError,
    PartDataset,
    PartShape,
    ShapeRecord,
    check_points,
    read_xml,
)

__all__ = [
    "SCANOBJECTNN_CATEGORIES",
    "COPS_DROPPED_PARTS",
    "ScanObjectNN",
    "read_part_xml",
    "read_scanobjectnn_bin",
]

#: Category names by id (ScanObjectNN's ``shape_names_ext.txt`` order).
SCANOBJECTNN_CATEGORIES: tuple[str, ...] = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door",
    "shelf", "table", "bed", "pillow", "sink", "sofa", "toilet",
)
#: Parts COPS maps to -1 (never present in the scans): XML names by category.
COPS_DROPPED_PARTS: dict[str, tuple[str, ...]] = {"bin": ("base",), "chair": ("head",)}
#: The part XMLs shipped with the package (ScanObjectNN, MIT licence; LICENSE beside them).
PACKAGED_PART_LABELS = Path(__file__).with_name("scanobjectnn_parts")

_FOLDERS = ("object_dataset_complete_with_parts_", "object_dataset_complete_with_parts")
_SPLIT_FILE = "split_new.txt"
_BACKGROUND_SOURCE = "marco-garosi/COPS data/ScanObjectNN.py:117-122; tests/utils/get_dataset.py:23"
#: COPS subsamples a scan larger than this before anything else (tests/19_evaluate_model_various_settings.py:41).
COPS_MAX_SCAN_POINTS = 100_000


def read_part_xml(path: str | Path) -> dict[int, str]:
    """``<category>_meta.xml`` -> ``{part id: name}`` (names as written, e.g. ``"bag_body"``; id 0 = unknown)."""
    path = Path(path)
    root = read_xml(path, "part-label XML (ScanObjectNN's training_data/part_labels/)")
    out: dict[int, str] = {}
    for node in root.iter("class"):
        try:
            out[int(node.attrib["id"])] = node.attrib["text"]
        except (KeyError, ValueError):
            raise DatasetFormatError(path, f"a <class> element needs an integer id and a text, got {node.attrib}") from None
    if 0 not in out or len(out) < 2:
        raise DatasetFormatError(path, "expected <class id=\"0\" .../> (unknown) and at least one part")
    return out


def read_scanobjectnn_bin(path: str | Path, width: int) -> np.ndarray:
    """A raw ``.bin`` file: float32 count ``n``, then ``n * width`` floats -> ``(n, width)`` float32."""
    path = Path(path)
    raw = np.fromfile(path, dtype="<f4")
    if raw.size == 0:
        raise DatasetFormatError(path, "empty file (expected a float32 point count, then the points)")
    n = float(raw[0])
    if not (np.isfinite(n) and n == int(n) and n >= 1):
        raise DatasetFormatError(path, f"the first float32 must be the point count, got {n}")
    if raw.size != 1 + width * int(n):
        raise DatasetFormatError(
            path, f"header says {int(n)} points, so {1 + width * int(n)} float32 values ({width} a point after the "
            f"count), but the file holds {raw.size}"
        )
    return raw[1:].reshape(int(n), width)


class ScanObjectNN(PartDataset):
    """ScanObjectNN scans with part labels (the raw ``object_dataset_complete_with_parts`` release).

    Args:
        root: the folder holding ``object_dataset_complete_with_parts_/`` (or that folder).
        split: ``"test"`` (lines marked ``t``) or ``"train"``.
        background: ``"keep"`` (a scored class ``"background"``) or ``"drop"`` (those points removed).
        drop_parts: ``"cops"`` (bin base and chair head out of the label space), ``"none"``, or a mapping
            ``{category: [XML part name, ...]}``.
        scene: ``"keep"`` every point, or ``"object"`` the object instance's points only.
        split_file: the split list (default: ``split_new.txt`` in the data folder).
        part_labels: folder of ``<category>_meta.xml`` (default: ``training_data/part_labels/`` beside the
            data, else the copies shipped with the package).
        categories, limit: as in :class:`~patchalign3d.data.base.PartDataset`.
        missing: a listed scan without its ``.bin`` or ``_part.bin``: ``"error"`` or ``"skip"``.
    """

    name = "scanobjectnn"

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        *,
        background: str = "keep",
        drop_parts: str | Mapping[str, Sequence[str]] = "cops",
        scene: str = "keep",
        split_file: str | Path | None = None,
        part_labels: str | Path | None = None,
        categories: Iterable[str] | None = None,
        limit: int | None = None,
        missing: str = "error",
        max_scan_points: int | str | None = COPS_MAX_SCAN_POINTS,
    ) -> None:
        super().__init__(root)
        if split not in ("test", "train"):
            raise ValueError(f"unknown ScanObjectNN split {split!r}; expected 'test' or 'train'")
        if isinstance(max_scan_points, str) and max_scan_points.lower() in ("none", "all"):
            max_scan_points = None
        if max_scan_points is not None and (not str(max_scan_points).isdigit() or int(max_scan_points) < 1):
            raise ValueError(f"max_scan_points must be a positive integer or 'none', got {max_scan_points!r}")
        self.max_scan_points = None if max_scan_points is None else int(max_scan_points)
        if background not in ("keep", "drop"):
            raise ValueError(f"background must be 'keep' or 'drop', got {background!r}")
        if scene not in ("keep", "object"):
            raise ValueError(f"scene must be 'keep' or 'object', got {scene!r}")
        self.split, self.background, self.scene = split, background, scene
        self.folder = _data_folder(self.root)
        self.split_file = Path(split_file).expanduser() if split_file is not None else self.folder / _SPLIT_FILE
        self.part_labels = _part_label_folder(self.root, self.folder, part_labels)
        self.dropped = _dropped(drop_parts)
        self.drop_parts = drop_parts if isinstance(drop_parts, str) else "custom"
        self._label_maps: dict[str, tuple[list[str], dict[int, int]]] = {}
        for cid, stem in self._split_entries():
            cat = SCANOBJECTNN_CATEGORIES[cid]
            names, _ = self._label_map(cat)
            folder = self.folder / cat
            self.records.append(
                ShapeRecord(
                    f"{cat}/{stem}", cat, list(names),
                    {"points": folder / f"{stem}.bin", "parts": folder / f"{stem}_part.bin"},
                )
            )
        if not self.records:
            raise DatasetFormatError(self.split_file, f"lists no {split} scans")
        self._finalize(categories, limit, missing, self.split_file)

    # -- the listing ---------------------------------------------------------------------------------------
    def _split_entries(self) -> list[tuple[int, str]]:
        if not self.split_file.is_file():
            raise DatasetFormatError(
                self.split_file,
                "missing split list (COPS reads split_new.txt from the object_dataset_complete_with_parts_ "
                "folder): put it there, or pass --dataset-option split_file=PATH to a list in the same format "
                "(<scan>.bin<TAB><category id>[<TAB>t])",
            )
        out = []
        for i, line in enumerate(self.split_file.read_text(encoding="utf-8").splitlines(), 1):
            cols = line.strip().split("\t") if "\t" in line else line.split()
            if not cols or not cols[0]:
                continue
            if len(cols) < 2 or not cols[0].endswith(".bin") or not cols[1].strip().isdigit():
                raise DatasetFormatError(
                    self.split_file, f"line {i}: expected '<scan>.bin<TAB><category id>[<TAB>t]', got {line!r}"
                )
            cid = int(cols[1])
            if cid >= len(SCANOBJECTNN_CATEGORIES):
                raise DatasetFormatError(self.split_file, f"line {i}: category id {cid} is not one of 0..14")
            is_test = len(cols) > 2 and cols[2].strip() == "t"
            if is_test == (self.split == "test"):
                out.append((cid, cols[0].strip()[: -len(".bin")]))
        return out

    def _label_map(self, category: str) -> tuple[list[str], dict[int, int]]:
        """The category's label space and ``{XML part id: label}`` (dropped ids -> -1; id 0 -> 0 or absent)."""
        if category not in self._label_maps:
            xml = read_part_xml(self.part_labels / f"{category}_meta.xml")
            dropped = set(self.dropped.get(category, ()))
            unknown_drop = dropped - set(xml.values())
            if unknown_drop:
                raise ValueError(
                    f"drop_parts names {sorted(unknown_drop)} for {category}, whose parts are {sorted(xml.values())}"
                )
            names: list[str] = ["background"] if self.background == "keep" else []
            mapping: dict[int, int] = {0: 0} if self.background == "keep" else {}
            for pid in sorted(k for k in xml if k != 0):
                if xml[pid] in dropped:
                    mapping[pid] = -1
                else:
                    mapping[pid] = len(names)
                    names.append(xml[pid].replace("_", " "))
            self._label_maps[category] = (names, mapping)
        return self._label_maps[category]

    # -- one scan ----------------------------------------------------------------------------------------------
    def load(self, record: ShapeRecord) -> PartShape:
        path, ppath = record.paths["points"], record.paths["parts"]
        for p in (path, ppath):
            if not p.is_file():
                raise DatasetFormatError(p, f"missing scan file listed in {self.split_file.name}")
        table = read_scanobjectnn_bin(path, 11)
        parts = read_scanobjectnn_bin(ppath, 2)
        if len(parts) != len(table):
            raise DatasetFormatError(ppath, f"{len(parts)} part labels for the {len(table)} points of {path.name}")
        ids = parts[:, -1]
        if not np.all(np.isfinite(ids)) or not np.all(ids == np.round(ids)):
            raise DatasetFormatError(ppath, "part ids must be whole numbers")
        ids = ids.astype(np.int64)
        if self.scene == "object":
            keep = _object_points(path, table[:, 10])
            table, ids = table[keep], ids[keep]
        if self.background == "drop":
            keep = ids != 0
            table, ids = table[keep], ids[keep]
        _, mapping = self._label_map(record.category)
        unknown = sorted(set(np.unique(ids).tolist()) - set(mapping))
        if unknown:
            raise DatasetFormatError(
                ppath, f"part ids {unknown} are not in {record.category}_meta.xml (ids {sorted(mapping)})"
            )
        lut = np.full(max(mapping) + 1, -1, dtype=np.int64)
        for pid, label in mapping.items():
            lut[pid] = label
        if self.max_scan_points is not None and len(table) > self.max_scan_points:
            # COPS's draw, exactly: the global NumPy seed reset to 0 before each scan, then a choice without
            # replacement (tests/19_evaluate_model_various_settings.py lines 41, 208-214)
            keep = np.random.RandomState(0).choice(np.arange(len(table)), self.max_scan_points, replace=False)
            table, ids = table[keep], ids[keep]
        points = check_points(path, table[:, :3])
        return PartShape(
            record.uid, record.category, points, lut[ids], list(record.part_names),
            normals=np.ascontiguousarray(table[:, 3:6], dtype=np.float32), source=str(path),
        )

    # -- for the report --------------------------------------------------------------------------------------
    def choices(self) -> dict[str, Any]:
        keep = self.background == "keep"
        return {
            "background": {
                "value": self.background,
                "rule": "points of part id 0 ('unknown', the scan's surroundings included) are a scored class "
                "'background'" if keep else "points of part id 0 ('unknown') are removed before scoring and 'background' "
                "leaves the label space (COPS's filter_background_by_zeros keeps class 0 in its mean_iou)",
                "source": _BACKGROUND_SOURCE,
            },
            "drop_parts": {
                "value": {c: list(v) for c, v in self.dropped.items()},
                "rule": f"{self.drop_parts}: these XML parts leave the label space; their points are unlabelled",
                "source": "marco-garosi/COPS data/ScanObjectNN.py:28-44",
            },
            "scene": {
                "value": self.scene,
                "rule": "every point of the scan file" if self.scene == "keep" else
                "the object's points only (the most frequent semantic label other than 0, 1, 2)",
                "source": "marco-garosi/COPS tests/utils/get_dataset.py:23 (filter_background=False)"
                if self.scene == "keep" else
                "hkust-vgd/scanobjectnn data_utils.py:67-74; marco-garosi/COPS data/ScanObjectNN.py:103-110",
            },
            "max_scan_points": {
                "value": self.max_scan_points,
                "rule": "every point of the scan" if self.max_scan_points is None else
                f"a scan of more than {self.max_scan_points} points keeps {self.max_scan_points} of them, drawn as "
                "COPS draws them (NumPy seed 0 before each scan, without replacement)",
                "source": "marco-garosi/COPS tests/19_evaluate_model_various_settings.py:41,208-214",
            },
            "part_labels": {"value": str(self.part_labels), "rule": "part names from <category>_meta.xml"},
            "split_file": {"value": str(self.split_file), "rule": f"the '{self.split}' lines of the split list"},
        }


def _data_folder(root: Path) -> Path:
    for name in _FOLDERS:
        if (root / name).is_dir():
            return root / name
    if (root / _SPLIT_FILE).is_file() or any((root / c).is_dir() for c in SCANOBJECTNN_CATEGORIES):
        return root
    raise DatasetFormatError(
        root,
        "no object_dataset_complete_with_parts_/ folder here (ScanObjectNN's object_dataset_complete_with_parts.zip, "
        "unzipped; its publisher gives it on request): pass --root the folder that holds it, or the folder itself",
    )


def _part_label_folder(root: Path, folder: Path, given: str | Path | None) -> Path:
    if given is not None:
        path = Path(given).expanduser()
        if not path.is_dir():
            raise DatasetFormatError(path, "part_labels must be a folder of <category>_meta.xml files")
        return path
    for base in (root, folder.parent):
        if (base / "training_data" / "part_labels").is_dir():
            return base / "training_data" / "part_labels"
    return PACKAGED_PART_LABELS


def _dropped(drop_parts: str | Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    if drop_parts == "cops":
        return dict(COPS_DROPPED_PARTS)
    if drop_parts == "none":
        return {}
    if isinstance(drop_parts, Mapping):
        return {str(c): tuple(str(p) for p in v) for c, v in drop_parts.items()}
    raise ValueError(f"drop_parts must be 'cops', 'none' or {{category: [part, ...]}}, got {drop_parts!r}")


def _object_points(path: Path, semantic: np.ndarray) -> np.ndarray:
    """Indices of the object's points: the most frequent semantic label other than 0, 1, 2 (unannotated, wall,
    floor), as ScanObjectNN's ``load_pc_file(with_bg=False)``."""
    candidates = semantic[(semantic != 0) & (semantic != 1) & (semantic != 2)]
    if candidates.size == 0:
        raise DatasetFormatError(path, "scene='object': no point has a semantic label other than 0, 1, 2")
    values, counts = np.unique(candidates, return_counts=True)
    return np.flatnonzero(semantic == values[np.argmax(counts)])
