"""KeypointNet in its release layout: annotations, the 2048-point clouds, meshes and the official splits.

::

    <root>/annotations/<class>.json     list of {class_id, model_id, keypoints: [{xyz, semantic_id,
                                        pcd_info: {point_index}, mesh_info: {face_index, face_uv}}, ...],
                                        symmetries}  (``annotations/all.json`` with every class also works)
    <root>/pcds/<synset>/<model_id>.pcd               2048 points, ascii ``x y z rgb``
    <root>/models/<synset>/<model_id>/models/model_normalized.obj   (or ShapeNetCore.v2.ply/<synset>/<id>.ply)
    <root>/splits/{train,val,test}.txt                lines ``<synset>-<model_id>``

Shapes of a split are scored on their ``.pcd`` (coordinates as stored, as the benchmark does); a split shape
whose ``.pcd`` is absent is listed in :attr:`KeypointNet.missing`, never silently dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from patchalign3d.data import DatasetFormatError, read_pcd

#: KeypointNet's 16 classes (WordNet synset -> name), as in its benchmark code.
SYNSETS: dict[str, str] = {
    "02691156": "airplane", "02808440": "bathtub", "02818832": "bed", "02876657": "bottle",
    "02954340": "cap", "02958343": "car", "03001627": "chair", "03467517": "guitar",
    "03513137": "helmet", "03624134": "knife", "03642806": "laptop", "03790512": "motorcycle",
    "03797390": "mug", "04225987": "skateboard", "04379243": "table", "04530566": "vessel",
}
CATEGORY_SYNSETS: dict[str, str] = {name: synset for synset, name in SYNSETS.items()}
#: The categories of the ZeroKey / UKPGAN protocol.
PROTOCOL_CATEGORIES: tuple[str, ...] = ("airplane", "chair", "table")
SPLITS: tuple[str, ...] = ("train", "val", "test", "all")


@dataclass
class KeypointNetShape:
    """One annotated shape.

    Attributes:
        synset, model_id, category: its identity (``key`` is ``<synset>-<model_id>``, the split files' form).
        point_indices: ``(M,)`` annotated point indices into the ``.pcd`` (repeats kept, as annotated).
        semantic_ids: ``(M,)`` the annotation's semantic id of each keypoint (consistent within a class).
        pcd_path: the 2048-point cloud.
        mesh_path: the mesh when present, else None.
    """

    synset: str
    model_id: str
    category: str
    point_indices: np.ndarray
    semantic_ids: np.ndarray
    pcd_path: Path
    mesh_path: Path | None = None
    _points: np.ndarray | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return f"{self.synset}-{self.model_id}"

    @property
    def points(self) -> np.ndarray:
        """``(N, 3)`` float64, as stored (read once)."""
        if self._points is None:
            data = read_pcd(self.pcd_path)
            if not {"x", "y", "z"} <= set(data):
                raise DatasetFormatError(self.pcd_path, f"PCD has no x y z fields; fields: {sorted(data)}")
            pts = np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float64)
            if not np.isfinite(pts).all():
                raise DatasetFormatError(self.pcd_path, "NaN or infinite coordinates")
            bad = self.point_indices[(self.point_indices < 0) | (self.point_indices >= len(pts))]
            if bad.size:
                raise DatasetFormatError(
                    self.pcd_path, f"annotated point_index {int(bad[0])} is outside the cloud's {len(pts)} points"
                )
            self._points = pts
        return self._points

    @property
    def gt_indices(self) -> np.ndarray:
        """The distinct annotated point indices (the benchmark's ground truth), sorted."""
        return np.unique(self.point_indices)

    def keypoints_by_semantic_id(self) -> dict[int, np.ndarray]:
        """``{semantic_id: point indices}``."""
        out: dict[int, list[int]] = {}
        for s, i in zip(self.semantic_ids.tolist(), self.point_indices.tolist()):
            out.setdefault(int(s), []).append(int(i))
        return {s: np.asarray(v, dtype=np.int64) for s, v in out.items()}


def resolve_categories(categories: str | Sequence[str] | None) -> list[str]:
    """Category names (or synsets) -> validated names; ``None`` is the protocol's airplane, chair, table."""
    if categories is None:
        return list(PROTOCOL_CATEGORIES)
    if isinstance(categories, str):
        categories = [c for c in (p.strip() for p in categories.split(",")) if c]
    out = []
    for c in categories:
        name = SYNSETS.get(c, c.lower())
        if name not in CATEGORY_SYNSETS:
            raise ValueError(f"unknown KeypointNet category {c!r}; known: {sorted(CATEGORY_SYNSETS)}")
        out.append(name)
    if not out:
        raise ValueError("no KeypointNet category given")
    return list(dict.fromkeys(out))


def _annotation_entries(path: Path) -> list:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetFormatError(path, f"not valid JSON ({err})") from None
    if not isinstance(data, list):
        raise DatasetFormatError(
            path, f"expected a list of annotated models (the KeypointNet release layout), got a {type(data).__name__}"
        )
    return data


def _parse_entry(path: Path, i: int, entry) -> tuple[str, str, np.ndarray, np.ndarray]:
    where = f"entry {i}"
    if not isinstance(entry, dict):
        raise DatasetFormatError(path, f"{where} is a {type(entry).__name__}, not an object")
    missing = [k for k in ("class_id", "model_id", "keypoints") if k not in entry]
    if missing:
        raise DatasetFormatError(path, f"{where} lacks {missing} (expected class_id, model_id, keypoints)")
    kps = entry["keypoints"]
    if not isinstance(kps, list):
        raise DatasetFormatError(path, f"{where} ({entry['model_id']}): 'keypoints' must be a list")
    idx, sem = [], []
    for j, kp in enumerate(kps):
        try:
            index = kp["pcd_info"]["point_index"]
            semantic = kp.get("semantic_id", -1)
        except (TypeError, KeyError):
            raise DatasetFormatError(
                path, f"{where} ({entry['model_id']}), keypoint {j}: no pcd_info.point_index"
            ) from None
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise DatasetFormatError(
                path, f"{where} ({entry['model_id']}), keypoint {j}: point_index must be a non-negative integer, got {index!r}"
            )
        idx.append(index)
        sem.append(int(semantic))
    return str(entry["class_id"]), str(entry["model_id"]), np.asarray(idx, np.int64), np.asarray(sem, np.int64)


def read_split(root: Path, split: str) -> list[str] | None:
    """Keys ``<synset>-<model_id>`` of a split file, in file order (None for ``"all"``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if split == "all":
        return None
    path = root / "splits" / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no split file {path} (KeypointNet layout: <root>/splits/{split}.txt)")
    keys = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        synset, sep, model_id = line.partition("-")
        if not sep or not model_id:
            raise DatasetFormatError(path, f"line {n}: expected '<synset>-<model_id>', got {line!r}")
        keys.append(line)
    return keys


class KeypointNet(Sequence[KeypointNetShape]):
    """The annotated shapes of some categories and one split whose point clouds are present.

    Args:
        root: the KeypointNet folder.
        categories: names or synsets (default airplane, chair, table); a string may be comma-separated.
        split: ``train``, ``val``, ``test`` or ``all``.

    Attributes:
        missing: keys of annotated split shapes whose ``.pcd`` is absent, per category.
        unannotated: keys of the split (in the chosen categories) that no annotation covers.
    """

    def __init__(self, root: str | os.PathLike, categories: str | Sequence[str] | None = None, split: str = "test") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"KeypointNet folder {self.root} does not exist")
        self.categories = resolve_categories(categories)
        self.split = split
        split_keys = read_split(self.root, split)
        wanted = set(split_keys) if split_keys is not None else None
        self.shapes: list[KeypointNetShape] = []
        self.missing: dict[str, list[str]] = {}
        self.annotated: dict[str, set[str]] = {}
        self.unannotated: dict[str, list[str]] = {}
        for category in self.categories:
            synset = CATEGORY_SYNSETS[category]
            entries = self._annotations(category)
            self.annotated[category] = {f"{synset}-{e[1]}" for e in entries}
            for _class_id, model_id, idx, sem in entries:
                key = f"{synset}-{model_id}"
                if wanted is not None and key not in wanted:
                    continue
                pcd = self.root / "pcds" / synset / f"{model_id}.pcd"
                if not pcd.is_file():
                    self.missing.setdefault(category, []).append(key)
                    continue
                self.shapes.append(KeypointNetShape(synset, model_id, category, idx, sem, pcd, self._mesh(synset, model_id)))
            if split_keys is not None:
                gone = [k for k in split_keys if k.startswith(synset + "-") and k not in self.annotated[category]]
                if gone:
                    self.unannotated[category] = gone
        self.shapes.sort(key=lambda s: (self.categories.index(s.category), s.key))

    def _annotations(self, category: str) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
        synset = CATEGORY_SYNSETS[category]
        own, combined = self.root / "annotations" / f"{category}.json", self.root / "annotations" / "all.json"
        path = own if own.is_file() else combined
        if not path.is_file():
            raise FileNotFoundError(f"no annotations for {category}: expected {own} (or {combined})")
        out = []
        for i, entry in enumerate(_annotation_entries(path)):
            parsed = _parse_entry(path, i, entry)
            if parsed[0] == synset:
                out.append(parsed)
            elif path == own:
                raise DatasetFormatError(path, f"entry {i} has class_id {parsed[0]!r}, not {category}'s {synset}")
        return out

    def _mesh(self, synset: str, model_id: str) -> Path | None:
        for candidate in (
            self.root / "models" / synset / model_id / "models" / "model_normalized.obj",
            self.root / "ShapeNetCore.v2.ply" / synset / f"{model_id}.ply",
        ):
            if candidate.is_file():
                return candidate
        return None

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i):  # type: ignore[override]
        return self.shapes[i]

    def __iter__(self) -> Iterator[KeypointNetShape]:
        return iter(self.shapes)

    @property
    def num_missing(self) -> int:
        return sum(len(v) for v in self.missing.values())

    def by_key(self) -> dict[str, KeypointNetShape]:
        return {s.key: s for s in self.shapes}

    def present_elsewhere(self) -> dict[str, int]:
        """For each other split, how many annotated shapes of these categories have their ``.pcd`` here."""
        out = {}
        for split in ("train", "val", "test"):
            if split == self.split or not (self.root / "splits" / f"{split}.txt").is_file():
                continue
            keys = read_split(self.root, split) or []
            out[split] = sum(
                1 for k in keys
                if any(k in a for a in self.annotated.values())
                and (self.root / "pcds" / k.split("-")[0] / f"{k.split('-', 1)[1]}.pcd").is_file()
            )
        return out


# -- names for the semantic ids -------------------------------------------------------------------------------
def _ids(name: str, *ids: int) -> dict[int, str]:
    return dict.fromkeys(ids, name)


#: A plain-language name per semantic id for the protocol's classes, used as zero-shot prompts and to group
#: the few-shot support keypoints (symmetric ids share a name: one name, several instances). KeypointNet
#: publishes ids only. The chair names follow the mean position of each id over the 999 annotated chairs
#: (front is -z, up is +y); airplane and table follow the meanings listed by B2-3D's authors
#: (``utils/data/keypoint_labels.py`` of wimmerth/back-to-3d-few-shot-keypoints), reworded.
DEFAULT_NAMES: dict[str, dict[int, str]] = {
    "chair": {
        **_ids("top corner of the chair back", 0, 1),
        **_ids("bottom corner of the chair back", 2, 3),
        **_ids("front corner of the seat", 4, 5),
        **_ids("front end of the armrest", 6, 8),
        **_ids("back end of the armrest", 7, 9),
        **_ids("end of a chair leg", 10, 11, 12, 13, 14, 17, 18, 19, 20),
        15: "top of the chair's central column",
        16: "bottom of the chair's central column",
    },
    "table": {
        **_ids("corner of the table top", 0, 1, 2, 3),
        **_ids("end of a table leg", 4, 5, 6, 7),
        **_ids("end of the bar between the table legs", 8, 9, 10, 11),
    },
    "airplane": {
        0: "nose of the airplane",
        1: "cockpit",
        2: "tail end of the airplane",
        **_ids("wing tip", 3, 5),
        **_ids("wing root", 4, 6, 12, 13),
        **_ids("tip of the horizontal stabilizer", 7, 8),
        9: "top of the vertical stabilizer",
        **_ids("tip of the tail stabilizer", 10, 11),
        **_ids("airplane engine", 14, 15, 16, 17, 18),
    },
}


def keypoint_names_for(category: str, semantic_ids: Sequence[int] = (), table: dict | None = None) -> dict[int, str]:
    """``{semantic_id: name}`` of a category (ids without a name get ``"keypoint <id>"``)."""
    known = (table if table is not None else DEFAULT_NAMES).get(category, {})
    known = {int(k): str(v) for k, v in known.items()}
    return {**known, **{int(s): f"keypoint {int(s)}" for s in semantic_ids if int(s) not in known}}


def read_names_table(path: str | os.PathLike) -> dict[str, dict[int, str]]:
    """A JSON ``{category: {semantic_id: name}}`` replacing :data:`DEFAULT_NAMES` for the categories it has."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the names table ({err})") from None
    ok = isinstance(data, dict) and all(
        isinstance(v, dict) and all(str(k).isdigit() and isinstance(n, str) and n.strip() for k, n in v.items())
        for v in data.values()
    )
    if not ok:
        raise ValueError(f"{path}: expected {{category: {{semantic_id: name}}}}, e.g. {{\"chair\": {{\"0\": \"seat corner\"}}}}")
    return {**DEFAULT_NAMES, **{c: {int(k): n for k, n in v.items()} for c, v in data.items()}}
