"""PartNet-Mobility (SAPIEN) objects with sampled, labelled points.

Layout, as SAPIEN ships it (one folder per object)::

    root/<object id>/point_sample/pts-<N>.txt     "x y z" per point
                    /point_sample/label-<N>.txt   one integer per point: a PartNet part id (< 0: none)
                    /result.json                  PartNet's part tree [{"text", "name", "id", "objs"?, "children"?}]
                    /mobility.urdf                links; each <visual name="<part name>-<part id>"> is a part
                    /semantics.txt                "link_<i> <joint type> <semantic label>" per link
                    /meta.json                    optional, {"model_cat": "Bottle", ...}

The label values are the ``id`` of ``result.json``'s nodes (its leaves in practice), not link indices. Two label
spaces:

* ``label_space="part"``: PartNet's parts, named by their node ``name``; nodes sharing a name are one part
  (four "leg" leaves are one "leg").
* ``label_space="link"``: the URDF's movable links, named by ``semantics.txt``; a part id reaches its link
  through the visual ``<name>-<id>`` that the link holds. Links sharing a label are one part (two "door" links).

``vocabulary="category"`` gives every object of a category the sorted union of the category's names (as
PartNetE-style benchmarks score a category's full list); ``"object"`` keeps each object's own names.
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
    read_xml,
)

__all__ = ["PartNetMobility", "read_semantics", "read_part_tree", "read_urdf_visuals"]

_PTS = re.compile(r"^pts-(\d+)\.txt$")
LABEL_SPACES = ("part", "link")
VOCABULARIES = ("category", "object")


def read_semantics(path: str | Path) -> dict[str, str]:
    """``semantics.txt`` -> ``{link name: semantic label}``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(path, "missing semantics.txt ('link_<i> <joint type> <semantic label>' per line)")
    out: dict[str, str] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) < 3 or not re.fullmatch(r"link_\d+", cols[0]):
            raise DatasetFormatError(path, f"line {i}: expected 'link_<i> <joint type> <semantic label>', got {line!r}")
        out[cols[0]] = cols[-1]
    if not out:
        raise DatasetFormatError(path, "no links listed")
    return out


def read_part_tree(path: str | Path) -> dict[int, str]:
    """``result.json`` -> ``{part id: name}`` for every node that can carry points (leaves and nodes with objs).

    The file is a list of root nodes (or one node); nodes nest through ``children`` to any depth.
    """
    path = Path(path)
    tree = read_json(path, "result.json (PartNet part tree)")
    roots = tree if isinstance(tree, list) else [tree]
    parts: dict[int, str] = {}
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or "id" not in node:
            raise DatasetFormatError(path, f"every node needs an 'id' (and a 'name'); found {str(node)[:80]!r}")
        children = node.get("children") or []
        if not isinstance(children, list):
            raise DatasetFormatError(path, f"node {node['id']}: 'children' must be a list")
        if not children or node.get("objs"):
            name = node.get("name") or node.get("text")
            if not isinstance(name, str) or not name.strip():
                raise DatasetFormatError(path, f"node {node['id']} has no 'name'")
            try:
                parts[int(node["id"])] = name.strip()
            except (TypeError, ValueError):
                raise DatasetFormatError(path, f"node id {node['id']!r} is not an integer") from None
        stack.extend(reversed(children))  # pre-order, in file order
    if not parts:
        raise DatasetFormatError(path, "no part nodes")
    return parts


def read_urdf_visuals(path: str | Path) -> dict[int, str]:
    """``mobility.urdf`` -> ``{part id: link name}`` from visual names ``"<part name>-<part id>"``."""
    robot = read_xml(path, "mobility.urdf (needed for label_space='link')")
    out: dict[int, str] = {}
    for link in robot.iter("link"):
        for visual in link.iter("visual"):
            name = visual.get("name", "")
            _, sep, pid = name.rpartition("-")
            if not sep or not pid.isdigit():
                raise DatasetFormatError(path, f"link {link.get('name')!r}: visual name {name!r} is not '<part>-<id>'")
            out[int(pid)] = str(link.get("name"))
    if not out:
        raise DatasetFormatError(path, "no <visual name='<part>-<id>'> in any link")
    return out


class PartNetMobility(PartDataset):
    """PartNet-Mobility point samples with part or link labels.

    Args:
        root: folder of object folders.
        num_points: which ``pts-<N>.txt`` to read when several exist (default: the largest).
        label_space: ``"part"`` (PartNet parts from ``result.json``) or ``"link"`` (URDF links named by
            ``semantics.txt``).
        vocabulary: ``"category"`` (the sorted union of the category's names) or ``"object"`` (its own).
        categories, limit: as in :class:`~patchalign3d.data.base.PartDataset`.
    """

    name = "partnet"

    def __init__(
        self,
        root: str | Path,
        num_points: int | None = None,
        *,
        label_space: str = "part",
        vocabulary: str = "category",
        categories: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(root)
        if label_space in VOCABULARIES:
            raise ValueError(
                f"label_space={label_space!r} chose the vocabulary in earlier versions: use vocabulary={label_space!r} "
                f"and label_space one of {LABEL_SPACES}"
            )
        if label_space not in LABEL_SPACES:
            raise ValueError(f"label_space must be one of {LABEL_SPACES}, got {label_space!r}")
        if vocabulary not in VOCABULARIES:
            raise ValueError(f"vocabulary must be one of {VOCABULARIES}, got {vocabulary!r}")
        self.label_space = label_space
        objects = sorted(
            (p for p in self.root.iterdir() if (p / "point_sample").is_dir()),
            key=lambda p: (len(p.name), p.name),
        )  # numeric ids in numeric order
        if not objects:
            raise DatasetFormatError(self.root, "no object folder with a point_sample/ subfolder")
        for obj in objects:
            pts, lab = _pick_sample(obj / "point_sample", num_points)
            id_to_name = _label_names(obj, label_space)
            names = list(dict.fromkeys(id_to_name.values()))
            meta = obj / "meta.json"
            category = str(read_json(meta, "meta.json").get("model_cat", "")) if meta.is_file() else ""
            self.records.append(
                ShapeRecord(obj.name, category, names, {"points": pts, "labels": lab}, {"names": id_to_name})
            )
        self._finalize(categories, limit)
        if vocabulary == "category":
            # sorted per category so that the label space does not depend on which objects were kept
            union = {c: sorted(n) for c, n in self.category_parts().items()}
            for r in self.records:
                r.part_names = union[r.category]

    def load(self, record: ShapeRecord) -> PartShape:
        table = read_text_table(record.paths["points"], 3, "point sample (x y z per line)")
        points = check_points(record.paths["points"], table[:, :3])
        lpath = record.paths["labels"]
        raw = read_text_table(lpath, 1, "point labels (one PartNet part id per line)", dtype=np.float64)
        if raw.shape[1] != 1:
            raise DatasetFormatError(lpath, f"expected one integer per line, found {raw.shape[1]} columns")
        raw = raw[:, 0]
        if raw.shape[0] != points.shape[0]:
            raise DatasetFormatError(
                lpath, f"{raw.shape[0]} labels for {points.shape[0]} points in {record.paths['points'].name}"
            )
        if not np.all(raw == np.round(raw)):
            raise DatasetFormatError(lpath, "labels must be integers")
        ids = raw.astype(np.int64)
        id_to_name: dict[int, str] = record.extra["names"]
        unknown = sorted(set(np.unique(ids[ids >= 0]).tolist()) - set(id_to_name))
        if unknown:
            where = "result.json's part nodes" if self.label_space == "part" else "mobility.urdf's visuals"
            raise DatasetFormatError(
                lpath, f"part ids {unknown[:5]} are not among {where} (ids {sorted(id_to_name)[:10]})"
            )
        index = {n: i for i, n in enumerate(record.part_names)}
        lut = np.full(max(id_to_name) + 1, -1, dtype=np.int64)
        for pid, name in id_to_name.items():
            lut[pid] = index[name]
        labels = np.where(ids >= 0, lut[np.clip(ids, 0, None)], -1)
        return PartShape(
            record.uid, record.category, points, labels, list(record.part_names), source=str(record.paths["points"])
        )


def _label_names(obj: Path, label_space: str) -> dict[int, str]:
    """``{part id: label name}`` of one object in the chosen label space."""
    if label_space == "part":
        return read_part_tree(obj / "result.json")
    links = read_semantics(obj / "semantics.txt")
    visuals = read_urdf_visuals(obj / "mobility.urdf")
    out: dict[int, str] = {}
    for pid, link in visuals.items():
        if link not in links:
            raise DatasetFormatError(
                obj / "semantics.txt", f"lists no {link!r}, whose visual holds part {pid} in mobility.urdf"
            )
        out[pid] = links[link]
    return out


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
