"""Common pieces of the benchmark datasets: the shape record, the dataset base class and small readers.

Every benchmark loader turns its own on-disk layout into :class:`PartShape` items with one label convention:
``labels[n]`` is an index into ``part_names`` and ``-1`` marks an unlabelled point. The loaders index their
files when constructed (cheap: file names, split lists, label maps) and read points lazily in
``__getitem__``, so that a data loader with workers can spread the reading.
"""

from __future__ import annotations

import json
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

__all__ = [
    "DatasetFormatError",
    "Find3DKey",
    "MISSING_POLICIES",
    "PartShape",
    "PartDataset",
    "ShapeRecord",
    "read_json",
    "read_xml",
    "read_pcd",
    "read_obj_vertices",
    "read_text_table",
    "check_labels",
    "check_points",
    "pcd_xyz",
    "as_name_list",
]


class DatasetFormatError(ValueError):
    """A benchmark file is missing or malformed. The message names the file and what is wrong with it."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass
class PartShape:
    """One labelled shape of a benchmark.

    Attributes:
        uid: identifier, unique within the dataset (e.g. ``"04379243/1a00aa6b..."``).
        category: category name (``""`` when the benchmark has none).
        points: ``(N, 3)`` float32 coordinates as stored (no normalisation, no axis swap).
        labels: ``(N,)`` int64 index into ``part_names``; ``-1`` = unlabelled.
        part_names: the ``K`` names of this shape's label space, in label order.
        normals: optional ``(N, 3)`` float32 normals.
        source: the file the points came from.
    """

    uid: str
    category: str
    points: np.ndarray
    labels: np.ndarray
    part_names: list[str]
    normals: np.ndarray | None = None
    source: str = ""

    @property
    def num_parts(self) -> int:
        return len(self.part_names)


class Find3DKey(NamedTuple):
    """Where a shape sits in the files Find3D publishes for its benchmark protocol.

    Attributes:
        row: the shape's row in the rotation tensor (its position in Find3D's order of the whole split).
        category: the key of the shape's category in ``subset_idxs.json``.
        member: how ``subset_idxs.json`` names the shape within its category (a position or an object id).
    """

    row: int
    category: str
    member: str


#: What a loader does when its listing names files that are absent: stop, or score the present shapes only.
MISSING_POLICIES = ("error", "skip")


@dataclass
class ShapeRecord:
    """What a dataset knows about a shape before reading its points (used to order and batch shapes)."""

    uid: str
    category: str
    part_names: list[str]
    paths: dict[str, Path] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class PartDataset(Sequence[PartShape]):
    """A benchmark as a sequence of :class:`PartShape`.

    Subclasses fill ``self.records`` in ``__init__`` (cheap metadata only) and implement :meth:`load`.
    ``categories`` filters by category name (case-insensitive), ``missing`` says what to do about listed files
    that are absent (stop with an error that says how to go on, or leave those shapes out and list them in
    ``skipped``), and ``limit`` keeps the first shapes, all applied by :meth:`_finalize`.
    """

    #: Benchmark name used by the registry and in reports.
    name: ClassVar[str] = "dataset"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(f"{type(self).__name__}: dataset root {self.root} does not exist")
        self.records: list[ShapeRecord] = []
        #: what the loader did about absent files (``"error"``, ``"skip"``; None: it does not check)
        self.missing_policy: str | None = None
        #: shapes a partial copy lacks, left out with ``missing="skip"``: ``[(uid, absent file)]`` (for the
        #: HDF5 release of ShapeNetPart, whole files: ``[(file name, absent path)]``)
        self.skipped: list[tuple[str, str]] = []

    # -- what subclasses implement --------------------------------------------------------------
    def load(self, record: ShapeRecord) -> PartShape:  # pragma: no cover - abstract
        raise NotImplementedError

    def zero_logit_label(self, record: ShapeRecord) -> int:
        """The label the release predicts for a point whose logits are all zero: its first logit column.

        The release scores a shape against its own label list, so column 0 is label 0; benchmarks it scores
        against a wider list (ShapeNetPart's 50 parts) override this.
        """
        return 0

    def release_order(self) -> list[int]:
        """Record indices in the order the released evaluation script's loader reads the shapes (its per-batch
        cIoU depends on it); the record order unless a loader knows the release's."""
        return list(range(len(self.records)))

    def choices(self) -> dict[str, Any]:
        """The loader's options that change a figure, for the report (none unless a loader has some)."""
        return {}

    # -- sequence protocol ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> PartShape:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"{type(self).__name__} indices must be integers, got {type(index).__name__}")
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"shape index {index} out of range for {len(self)} shapes")
        return self.load(self.records[index])

    def __iter__(self) -> Iterator[PartShape]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, shapes={len(self)}, categories={len(self.categories)})"

    # -- cheap metadata -----------------------------------------------------------------------------
    @property
    def categories(self) -> list[str]:
        """Category names in order of first appearance (sorted datasets give sorted names)."""
        return list(dict.fromkeys(r.category for r in self.records))

    def category_parts(self) -> dict[str, list[str]]:
        """Union of the part names of each category, in order of first appearance."""
        out: dict[str, dict[str, None]] = {}
        for r in self.records:
            out.setdefault(r.category, {}).update(dict.fromkeys(r.part_names))
        return {c: list(names) for c, names in out.items()}

    def _finalize(
        self,
        categories: Iterable[str] | None,
        limit: int | None,
        missing: str | None = None,
        listing: str | Path | None = None,
    ) -> None:
        """Keep the wanted categories, check that every kept record's files exist (``missing``: ``"error"`` or
        ``"skip"``, ``None``: not checked here), then keep the first ``limit``."""
        self._filter_categories(categories)
        self.missing_policy = missing
        if missing is not None:
            self._check_present(missing, listing or self.root)
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0, got {limit}")
            self.records = self.records[:limit]

    def _check_present(self, missing: str, listing: str | Path) -> None:
        if missing not in MISSING_POLICIES:
            raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
        absent = {}
        for r in self.records:
            gone = next((p for p in r.paths.values() if not Path(p).is_file()), None)
            if gone is not None:
                absent[r.uid] = str(gone)
        if not absent:
            return
        if missing == "error":
            first = next(iter(absent.values()))
            raise DatasetFormatError(
                listing,
                f"{len(absent)} of the {len(self.records)} shapes it lists are absent (first: {first}). To score "
                f"the {len(self.records) - len(absent)} present shapes only, pass --dataset-option missing=skip "
                "(Python: missing='skip'); the report then lists the shapes left out",
            )
        self.skipped.extend(absent.items())
        self.records = [r for r in self.records if r.uid not in absent]

    def _filter_categories(self, categories: Iterable[str] | None) -> None:
        if categories is not None:
            wanted = {c.lower() for c in ([categories] if isinstance(categories, str) else categories)}
            known = {r.category.lower() for r in self.records}
            unknown = sorted(wanted - known)
            if unknown:
                raise ValueError(
                    f"{type(self).__name__} at {self.root}: unknown categories {unknown}; "
                    f"available: {sorted({r.category for r in self.records})}"
                )
            self.records = [r for r in self.records if r.category.lower() in wanted]


# ---------------------------------------------------------------------------------------------------
# small readers, each raising DatasetFormatError with the file name
# ---------------------------------------------------------------------------------------------------
def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetFormatError(path, f"missing {what}")
    return path


def read_xml(path: str | Path, what: str) -> ET.Element:
    """The root element of an XML file; a missing or unparsable file raises :class:`DatasetFormatError`."""
    path = _require(Path(path), what)
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DatasetFormatError(path, f"not valid XML ({e})") from None


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parse a JSON file; a missing or unparsable file raises :class:`DatasetFormatError`."""
    path = _require(Path(path), what)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(path, f"not valid JSON ({e})") from None


def read_text_table(
    path: str | Path, min_cols: int, what: str = "text table", dtype: Any = np.float32
) -> np.ndarray:
    """Read a whitespace-separated numeric table ``(rows, cols)`` with at least ``min_cols`` columns.

    ``#`` starts a comment. numpy's C parser reads well-formed files; a malformed one is re-read line by line
    to say which line is wrong.
    """
    path = _require(Path(path), what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "empty input file": reported below
            table = np.loadtxt(path, dtype=np.float64, ndmin=2, comments="#")
    except ValueError:
        _diagnose_table(path, what)
        raise  # pragma: no cover - _diagnose_table always raises for input loadtxt refuses
    if table.size == 0:
        raise DatasetFormatError(path, f"empty {what}")
    if table.shape[1] < min_cols:
        raise DatasetFormatError(
            path, f"expected at least {min_cols} columns per line, line 1 has {table.shape[1]}"
        )
    return table.astype(dtype, copy=False)


def _diagnose_table(path: Path, what: str) -> None:
    """Raise a :class:`DatasetFormatError` naming the first bad line of a table numpy could not read."""
    text = path.read_text(encoding="utf-8", errors="replace")
    rows = [(i + 1, ln.split("#", 1)[0].split()) for i, ln in enumerate(text.splitlines())]
    rows = [(n, cells) for n, cells in rows if cells]
    if not rows:
        raise DatasetFormatError(path, f"empty {what}")
    first_line, first = rows[0]
    for n, cells in rows:
        if len(cells) != len(first):
            raise DatasetFormatError(
                path, f"line {n} has {len(cells)} columns, expected {len(first)} like line {first_line}"
            )
        for c in cells:
            try:
                float(c)
            except ValueError:
                raise DatasetFormatError(path, f"line {n}: non-numeric value {c!r}") from None
    raise DatasetFormatError(path, f"unreadable {what}")


def check_labels(path: str | Path, labels: np.ndarray, num_points: int, num_parts: int) -> np.ndarray:
    """Validate ``(N,)`` integer labels in ``[-1, num_parts)`` and return them as int64."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DatasetFormatError(path, f"labels must be one-dimensional, got shape {labels.shape}")
    if labels.shape[0] != num_points:
        raise DatasetFormatError(path, f"{labels.shape[0]} labels for {num_points} points")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise DatasetFormatError(path, "labels must be integers")
    elif labels.dtype.kind not in "iu":
        raise DatasetFormatError(path, f"labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < -1 or labels.max() >= num_parts):
        raise DatasetFormatError(
            path,
            f"labels must lie in [-1, {num_parts - 1}] for {num_parts} parts, found [{labels.min()}, {labels.max()}]",
        )
    return labels


def check_points(path: str | Path, points: np.ndarray) -> np.ndarray:
    """Validate a non-empty, finite ``(N, 3)`` array and return it as float32."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise DatasetFormatError(path, f"points must have shape (N, 3), got {points.shape}")
    if points.shape[0] == 0:
        raise DatasetFormatError(path, "no points")
    points = points.astype(np.float32, copy=False)
    if not np.all(np.isfinite(points)):
        raise DatasetFormatError(path, "points contain NaN or infinite coordinates")
    return points


_PCD_TYPES = {
    ("F", 4): "<f4",
    ("F", 8): "<f8",
    ("I", 1): "<i1",
    ("I", 2): "<i2",
    ("I", 4): "<i4",
    ("I", 8): "<i8",
    ("U", 1): "<u1",
    ("U", 2): "<u2",
    ("U", 4): "<u4",
    ("U", 8): "<u8",
}


def read_pcd(path: str | Path) -> dict[str, np.ndarray]:
    """Read a PCD v0.7 point cloud (``DATA ascii`` or ``binary``) into ``{field: (N,) or (N, count)}``.

    ``binary_compressed`` files are refused with a clear error (convert them with ``pcl_convert_pcd_ascii_binary``
    or open3d).
    """
    path = _require(Path(path), "PCD file")
    raw = path.read_bytes()
    header: dict[str, list[str]] = {}
    pos = 0
    while True:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise DatasetFormatError(path, "PCD header has no DATA line")
        line = raw[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        header[key.upper()] = vals
        if key.upper() == "DATA":
            break
    for key in ("FIELDS", "SIZE", "TYPE", "POINTS", "DATA"):
        if key not in header:
            raise DatasetFormatError(path, f"PCD header lacks {key}")
    fields = header["FIELDS"]
    counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
    if not (len(fields) == len(header["SIZE"]) == len(header["TYPE"]) == len(counts)):
        raise DatasetFormatError(path, "PCD header FIELDS/SIZE/TYPE/COUNT lengths differ")
    n = int(header["POINTS"][0])
    mode = header["DATA"][0].lower()
    if mode == "ascii":
        try:
            flat = np.array(raw[pos:].split(), dtype=np.float64)
        except ValueError as e:
            raise DatasetFormatError(path, f"non-numeric value in ascii PCD data ({e})") from None
        width = sum(counts)
        if flat.size < n * width:
            raise DatasetFormatError(
                path, f"header says {n} points but the data hold {flat.size // max(width, 1)}"
            )
        table = flat[: n * width].reshape(n, width)
        out, col = {}, 0
        for name, c in zip(fields, counts):
            out[name] = table[:, col] if c == 1 else table[:, col : col + c]
            col += c
        return out
    if mode == "binary":
        try:
            dtype = np.dtype(
                [
                    (
                        f"{name}_{i}" if fields.count(name) > 1 else name,
                        _PCD_TYPES[(t.upper(), int(s))],
                        (c,) if c > 1 else (),
                    )
                    for i, (name, s, t, c) in enumerate(zip(fields, header["SIZE"], header["TYPE"], counts))
                ]
            )
        except KeyError as e:
            raise DatasetFormatError(path, f"unsupported PCD field type/size {e}") from None
        if len(raw) - pos < n * dtype.itemsize:
            raise DatasetFormatError(
                path, f"binary PCD data truncated: {len(raw) - pos} bytes for {n} points"
            )
        rec = np.frombuffer(raw, dtype=dtype, count=n, offset=pos)
        return {name: np.array(rec[name]) for name in dtype.names}
    raise DatasetFormatError(path, f"PCD DATA {mode!r} is not supported (use ascii or binary)")


def pcd_xyz(path: str | Path) -> np.ndarray:
    """The ``(N, 3)`` float32 ``x y z`` of a PCD file."""
    data = read_pcd(path)
    missing = [k for k in ("x", "y", "z") if k not in data]
    if missing:
        raise DatasetFormatError(path, f"PCD has no field(s) {missing}; fields: {sorted(data)}")
    return check_points(path, np.stack([data["x"], data["y"], data["z"]], axis=1))


_OBJ_VERTEX = re.compile(rb"^v\s+(\S+)\s+(\S+)\s+(\S+)", re.MULTILINE)


def read_obj_vertices(path: str | Path) -> np.ndarray:
    """The ``(V, 3)`` vertices of a Wavefront OBJ, in file order.

    Per-vertex labels index the file's vertex order, which mesh libraries may change (merging duplicates,
    dropping unreferenced vertices), so the ``v`` lines are read directly.
    """
    path = _require(Path(path), "OBJ mesh")
    rows = _OBJ_VERTEX.findall(path.read_bytes())
    if not rows:
        raise DatasetFormatError(path, "no vertex ('v x y z') lines")
    try:
        verts = np.array(rows, dtype=np.float64)
    except ValueError as e:
        raise DatasetFormatError(path, f"non-numeric vertex coordinate ({e})") from None
    return check_points(path, verts)


def as_name_list(path: str | Path, names: Any, what: str = "label names") -> list[str]:
    """Turn an array or list of names (bytes or str) into ``list[str]``."""
    arr = np.asarray(names)
    if arr.ndim != 1:
        raise DatasetFormatError(path, f"{what} must be a 1-D list of strings, got shape {arr.shape}")
    out = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.tolist()]
    return out
