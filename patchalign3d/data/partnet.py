"""PartNet-Mobility style objects with sampled, labelled points.

Layout (one folder per object)::

    root/<object id>/point_sample/pts-<N>.txt     "x y z [...]" per point
                    /point_sample/label-<N>.txt   one integer per point: the link index i of "link_i"; < 0 = none
                    /semantics.txt                "link_i <joint type> <semantic name>" per link
                    /meta.json                    optional, {"model_cat": "StorageFurniture", ...}

Links with the same semantic name are one part (two doors are one "door"). The label space of an object is
either its own semantic names (``label_space="object"``) or every name seen in its category
(``"category"``, as PartNetE-style benchmarks score a category's full part list).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from patchalign3d.data.base import (
    DatasetFormatError,
    PartDataset,
    PartShape,
    ShapeRecord,
    check_points,
    read_json,
    read_text_table,
)

__all__ = ["PartNetMobility", "read_semantics"]

_PTS = re.compile(r"^pts-(\d+)\.txt$")


def read_semantics(path: str | Path) -> dict[int, str]:
    """``semantics.txt`` -> ``{link index: semantic name}``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(
            path, "missing semantics.txt ('link_<i> <joint type> <semantic name>' per line)"
        )
    out: dict[int, str] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        m = re.fullmatch(r"link_(\d+)", cols[0])
        if m is None or len(cols) < 2:
            raise DatasetFormatError(
                path, f"line {i}: expected 'link_<i> <joint type> <semantic name>', got {line!r}"
            )
        out[int(m.group(1))] = cols[-1]
    if not out:
        raise DatasetFormatError(path, "no links listed")
    return out


class PartNetMobility(PartDataset):
    """PartNet-Mobility style point samples with semantic part labels.

    Args:
        root: folder of object folders.
        num_points: which ``pts-<N>.txt`` to read when several exist (default: the largest).
        label_space: ``"category"`` (union of the category's semantic names) or ``"object"``.
        categories, limit: as in :class:`~patchalign3d.data.base.PartDataset`.
    """

    name = "partnet"

    def __init__(
        self,
        root: str | Path,
        num_points: int | None = None,
        *,
        label_space: str = "category",
        categories: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(root)
        if label_space not in ("category", "object"):
            raise ValueError(f"label_space must be 'category' or 'object', got {label_space!r}")
        objects = sorted(
            (p for p in self.root.iterdir() if (p / "point_sample").is_dir()),
            key=lambda p: (len(p.name), p.name),
        )  # numeric ids in numeric order
        if not objects:
            raise DatasetFormatError(self.root, "no object folder with a point_sample/ subfolder")
        for obj in objects:
            pts, lab = _pick_sample(obj / "point_sample", num_points)
            links = read_semantics(obj / "semantics.txt")
            names = list(dict.fromkeys(links.values()))
            meta = obj / "meta.json"
            category = str(read_json(meta, "meta.json").get("model_cat", "")) if meta.is_file() else ""
            self.records.append(
                ShapeRecord(obj.name, category, names, {"points": pts, "labels": lab}, {"links": links})
            )
        self._finalize(categories, limit)
        if label_space == "category":
            # sorted per category so that the label space does not depend on which objects were kept
            union = {c: sorted(n) for c, n in self.category_parts().items()}
            for r in self.records:
                r.part_names = union[r.category]

    def load(self, record: ShapeRecord) -> PartShape:
        table = read_text_table(record.paths["points"], 3, "point sample (x y z per line)")
        points = check_points(record.paths["points"], table[:, :3])
        lpath = record.paths["labels"]
        raw = read_text_table(lpath, 1, "point labels (one link index per line)", dtype=np.float64)
        if raw.shape[1] != 1:
            raise DatasetFormatError(lpath, f"expected one integer per line, found {raw.shape[1]} columns")
        raw = raw[:, 0]
        if raw.shape[0] != points.shape[0]:
            raise DatasetFormatError(
                lpath, f"{raw.shape[0]} labels for {points.shape[0]} points in {record.paths['points'].name}"
            )
        if not np.all(raw == np.round(raw)):
            raise DatasetFormatError(lpath, "labels must be integers")
        links: dict[int, str] = record.extra["links"]
        index = {n: i for i, n in enumerate(record.part_names)}
        link_ids = raw.astype(np.int64)
        unknown = sorted(set(np.unique(link_ids[link_ids >= 0]).tolist()) - set(links))
        if unknown:
            raise DatasetFormatError(lpath, f"link indices {unknown[:5]} are not listed in semantics.txt")
        lut = np.full(max(links) + 1, -1, dtype=np.int64)
        for link, name in links.items():
            lut[link] = index[name]
        labels = np.where(link_ids >= 0, lut[np.clip(link_ids, 0, None)], -1)
        return PartShape(
            record.uid,
            record.category,
            points,
            labels,
            list(record.part_names),
            source=str(record.paths["points"]),
        )


def _pick_sample(folder: Path, num_points: int | None) -> tuple[Path, Path]:
    sizes = sorted(int(m.group(1)) for p in folder.iterdir() if (m := _PTS.match(p.name)))
    if not sizes:
        raise DatasetFormatError(folder, "no pts-<N>.txt file")
    n = sizes[-1] if num_points is None else num_points
    pts, lab = folder / f"pts-{n}.txt", folder / f"label-{n}.txt"
    if not pts.is_file():
        raise DatasetFormatError(pts, f"missing (available sizes: {sizes})")
    if not lab.is_file():
        raise DatasetFormatError(lab, f"missing label file for {pts.name}")
    return pts, lab
