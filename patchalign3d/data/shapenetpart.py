"""ShapeNetPart (16 categories, 50 parts) in its two public releases.

* :class:`ShapeNetPart` reads ``shapenetcore_partanno_segmentation_benchmark_v0_normal``::

      root/synsetoffset2category.txt                     "Airplane\\t02691156" per line
      root/train_test_split/shuffled_{train,val,test}_file_list.json   ["shape_data/<synset>/<id>", ...]
      root/<synset>/<id>.txt                             "x y z nx ny nz part_id" per point (global ids 0..49)

* :class:`ShapeNetPartH5` reads the HDF5 release (``shapenet_part_seg_hdf5_data``)::

      root/ply_data_{train0..,val0,test0..}.h5           data (B, 2048, 3), label (B, 1) category, pid (B, 2048) global part id
      root/{train,val,test}_hdf5_file_list.txt           optional list of the split's files

  ``root`` may also be the folder above, holding ``hdf5_data/`` (as Find3D's loader expects). Shapes are
  numbered in file order (``ply_data_test0.h5`` then ``ply_data_test1.h5``: 2874 test shapes), the order
  that Find3D's ``random_rotation_test.pt`` and ``subset_idxs.json`` index.

Labels become per-category indices (``global id - first id of the category``) and ``part_names`` the
category's parts in global-id order, named as in the public release of PatchAlign3D.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from patchalign3d.data.base import (
    MISSING_POLICIES,
    DatasetFormatError,
    Find3DKey,
    PartDataset,
    PartShape,
    ShapeRecord,
    check_labels,
    check_points,
    read_json,
    read_text_table,
)

__all__ = [
    "SHAPENETPART_PARTS",
    "SHAPENETPART_SYNSETS",
    "SHAPENETPART_OFFSETS",
    "ShapeNetPart",
    "ShapeNetPartH5",
    "read_synset_file",
    "load_shapenetpart",
]

#: Parts of each category in global part-id order (ids are consecutive across categories in this order).
SHAPENETPART_PARTS: dict[str, tuple[str, ...]] = {
    "Airplane": ("body", "wing", "tail", "engine or frame"),
    "Bag": ("handle", "body"),
    "Cap": ("crown", "brim"),
    "Car": ("roof", "hood", "wheel", "body"),
    "Chair": ("back", "seat", "leg", "arm"),
    "Earphone": ("earcup", "headband", "data wire"),
    "Guitar": ("headstock", "neck", "body"),
    "Knife": ("blade", "handle"),
    "Lamp": ("base", "lampshade", "fixing bracket", "pole"),
    "Laptop": ("keyboard", "screen"),
    "Motorbike": ("gas tank", "seat", "wheel", "handles or handlebars", "headlight", "engine or frame"),
    "Mug": ("handle", "cup"),
    "Pistol": ("barrel", "handle or grip", "trigger and guard"),
    "Rocket": ("body", "fin", "nose"),
    "Skateboard": ("wheel", "deck", "belt for foot"),
    "Table": ("desktop", "leg or support", "drawer"),
}

#: ShapeNet synset id of each category.
SHAPENETPART_SYNSETS: dict[str, str] = {
    "Airplane": "02691156",
    "Bag": "02773838",
    "Cap": "02954340",
    "Car": "02958343",
    "Chair": "03001627",
    "Earphone": "03261776",
    "Guitar": "03467517",
    "Knife": "03624134",
    "Lamp": "03636649",
    "Laptop": "03642806",
    "Motorbike": "03790512",
    "Mug": "03797390",
    "Pistol": "03948459",
    "Rocket": "04099429",
    "Skateboard": "04225987",
    "Table": "04379243",
}


def _offsets() -> dict[str, int]:
    out, start = {}, 0
    for cat, parts in SHAPENETPART_PARTS.items():
        out[cat] = start
        start += len(parts)
    return out


#: First global part id of each category (Airplane 0, Bag 4, ..., Table 47).
SHAPENETPART_OFFSETS: dict[str, int] = _offsets()
NUM_GLOBAL_PARTS = sum(len(p) for p in SHAPENETPART_PARTS.values())

_SPLITS = {
    "train": ("train",),
    "val": ("val",),
    "test": ("test",),
    "trainval": ("train", "val"),
    "all": ("train", "val", "test"),
}


def read_synset_file(path: str | Path) -> dict[str, str]:
    """Parse ``synsetoffset2category.txt`` into ``{synset: category}`` (category spelled as in the file)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(path, "missing synsetoffset2category.txt (category<TAB>synset per line)")
    out: dict[str, str] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split()
        if len(cols) != 2:
            raise DatasetFormatError(path, f"line {i}: expected 'Category synset', got {line!r}")
        cat, synset = cols
        if cat not in SHAPENETPART_PARTS:
            raise DatasetFormatError(path, f"line {i}: unknown ShapeNetPart category {cat!r}")
        out[synset] = cat
    if not out:
        raise DatasetFormatError(path, "no categories listed")
    return out


def _release_zero_logit_label(record: ShapeRecord) -> int:
    # the release's logits span the 50 global parts; all zero, argmax is global part 0, Airplane's body
    return 0 if SHAPENETPART_OFFSETS[record.category] == 0 else -1


class ShapeNetPart(PartDataset):
    """ShapeNetPart, ``..._v0_normal`` layout (one ``.txt`` per shape).

    Args:
        root: folder holding ``synsetoffset2category.txt``, ``train_test_split/`` and one folder per synset.
        split: ``"test"`` (the benchmark), ``"train"``, ``"val"``, ``"trainval"`` or ``"all"``.
        categories: keep only these categories (names as in ``synsetoffset2category.txt``, any case).
        missing: what to do when a listed shape file is absent: ``"error"`` or ``"skip"`` (partial copies).
        limit: keep the first ``limit`` shapes of the split list.
    """

    name = "shapenetpart"
    zero_logit_label = staticmethod(_release_zero_logit_label)

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        *,
        categories: Iterable[str] | None = None,
        missing: str = "error",
        limit: int | None = None,
    ) -> None:
        super().__init__(root)
        if split not in _SPLITS:
            raise ValueError(f"unknown ShapeNetPart split {split!r}; expected one of {sorted(_SPLITS)}")
        self.split = split
        synsets = read_synset_file(self.root / "synsetoffset2category.txt")
        for part in _SPLITS[split]:
            list_path = self.root / "train_test_split" / f"shuffled_{part}_file_list.json"
            entries = read_json(list_path, f"split list for {part!r}")
            if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                raise DatasetFormatError(
                    list_path, "expected a JSON list of 'shape_data/<synset>/<id>' strings"
                )
            for entry in entries:
                bits = entry.strip("/").split("/")
                if len(bits) < 2:
                    raise DatasetFormatError(
                        list_path, f"malformed entry {entry!r}; expected 'shape_data/<synset>/<id>'"
                    )
                synset, shape_id = bits[-2], bits[-1]
                if synset not in synsets:
                    raise DatasetFormatError(
                        list_path, f"entry {entry!r}: synset {synset} is not in synsetoffset2category.txt"
                    )
                path = self.root / synset / f"{shape_id}.txt"
                cat = synsets[synset]
                self.records.append(
                    ShapeRecord(f"{synset}/{shape_id}", cat, list(SHAPENETPART_PARTS[cat]), {"points": path})
                )
        lists = [self.root / "train_test_split" / f"shuffled_{part}_file_list.json" for part in _SPLITS[split]]
        self._category_rank = {cat: i for i, cat in enumerate(synsets.values())}
        self._finalize(categories, limit, missing, lists[0] if len(lists) == 1 else lists[0].parent)

    def release_order(self) -> list[int]:
        """The release's ``PartNormalDataset`` order: categories as ``synsetoffset2category.txt`` lists them, then
        the shape files by sorted name (``src/datasets/shapenet.py`` lines 43-65 of the release)."""
        def key(i: int) -> tuple[int, str]:
            r = self.records[i]
            return self._category_rank[r.category], r.paths["points"].name

        return sorted(range(len(self.records)), key=key)

    def load(self, record: ShapeRecord) -> PartShape:
        path = record.paths["points"]
        if not path.is_file():
            raise DatasetFormatError(path, f"missing shape file listed in the {self.split} split")
        table = read_text_table(path, 7, "ShapeNetPart shape file (x y z nx ny nz part_id)")
        if table.shape[1] != 7:
            raise DatasetFormatError(
                path, f"expected 7 columns (x y z nx ny nz part_id), found {table.shape[1]}"
            )
        return _make_shape(path, record, table[:, :3], table[:, 6], normals=table[:, 3:6])


class ShapeNetPartH5(PartDataset):
    """ShapeNetPart, HDF5 release (2048 points per shape, no normals). Needs ``h5py``.

    Args:
        root: folder with the ``ply_data_*.h5`` files, or the folder holding ``hdf5_data/``.
        split: ``"test"``, ``"train"``, ``"val"``, ``"trainval"`` or ``"all"``.
        categories, limit: as for :class:`ShapeNetPart`.
        missing: what to do when a file list names an absent ``.h5`` file: ``"error"`` or ``"skip"``.
    """

    name = "shapenetpart-h5"
    zero_logit_label = staticmethod(_release_zero_logit_label)

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
        if (self.root / "hdf5_data").is_dir() and not any(self.root.glob("*.h5")):
            self.root = self.root / "hdf5_data"
        if split not in _SPLITS:
            raise ValueError(f"unknown ShapeNetPart split {split!r}; expected one of {sorted(_SPLITS)}")
        if missing not in MISSING_POLICIES:
            raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
        self.split = split
        cats = list(SHAPENETPART_PARTS)
        self._arrays: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
        row, per_category = 0, dict.fromkeys(cats, 0)
        files = self._split_files(missing)
        #: the ``.h5`` files in the order their shapes are numbered (Find3D's rows depend on it)
        self.h5_files = [p.name for p in files]
        for path in files:
            data, label, pid = _read_h5(path)
            self._arrays[path] = (data, pid)
            for i, c in enumerate(label):
                cat = cats[int(c)]
                key = Find3DKey(row, cat.lower(), str(per_category[cat]))  # Find3D: lower-case names
                row, per_category[cat] = row + 1, per_category[cat] + 1
                self.records.append(
                    ShapeRecord(
                        f"{path.stem}/{i}", cat, list(SHAPENETPART_PARTS[cat]), {"points": path},
                        {"row": i, "find3d": key},
                    )
                )
        self.find3d_total = row  # shapes in Find3D's numbering (all files read, before filters)
        self._finalize(categories, limit)
        self.missing_policy = missing

    def choices(self) -> dict[str, object]:
        return {"hdf5_files_in_order": list(self.h5_files)}

    def _split_files(self, missing: str) -> list[Path]:
        files: list[Path] = []
        for part in _SPLITS[self.split]:
            listing = self.root / f"{part}_hdf5_file_list.txt"
            if listing.is_file():
                names = [ln.strip() for ln in listing.read_text(encoding="utf-8").splitlines() if ln.strip()]
                paths = [self.root / Path(name).name for name in names]  # lists may carry the authors' prefix
                absent = [p for p in paths if not p.is_file()]
                if absent and missing == "error":
                    raise DatasetFormatError(
                        listing,
                        f"lists {absent[0].name!r} but {absent[0]} does not exist ({len(absent)} of {len(paths)} "
                        "files absent). To score the shapes of the present files only, pass --dataset-option "
                        "missing=skip (Python: missing='skip')",
                    )
                self.skipped.extend((p.name, str(p)) for p in absent)
                files.extend(p for p in paths if p.is_file())
            else:
                found = sorted(self.root.glob(f"*_{part}[0-9]*.h5"))
                if not found:
                    raise DatasetFormatError(
                        listing, f"missing, and no '*_{part}<n>.h5' file in {self.root} to fall back on"
                    )
                files.extend(found)
        return files

    def load(self, record: ShapeRecord) -> PartShape:
        path = record.paths["points"]
        data, pid = self._arrays[path]
        row = record.extra["row"]
        return _make_shape(path, record, data[row], pid[row])


def _read_h5(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        import h5py
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("reading the ShapeNetPart HDF5 release needs h5py: pip install h5py") from None
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("data", "label", "pid") if k not in f]
            if missing:
                raise DatasetFormatError(
                    path, f"HDF5 file lacks dataset(s) {missing}; has {sorted(f.keys())}"
                )
            data, label, pid = np.asarray(f["data"]), np.asarray(f["label"]), np.asarray(f["pid"])
    except OSError as e:
        raise DatasetFormatError(path, f"not a readable HDF5 file ({e})") from None
    if data.ndim != 3 or data.shape[2] != 3:
        raise DatasetFormatError(path, f"'data' must have shape (B, N, 3), got {data.shape}")
    label = label.reshape(-1)
    if label.shape[0] != data.shape[0] or pid.shape != data.shape[:2]:
        raise DatasetFormatError(
            path,
            f"inconsistent shapes: data {data.shape}, label {label.shape}, pid {pid.shape} (want (B,N,3), (B,), (B,N))",
        )
    if label.size and (label.min() < 0 or label.max() >= len(SHAPENETPART_PARTS)):
        raise DatasetFormatError(
            path, f"'label' must hold category ids 0..15, found [{label.min()}, {label.max()}]"
        )
    return data, label, pid


def _make_shape(
    path: Path,
    record: ShapeRecord,
    xyz: np.ndarray,
    global_ids: np.ndarray,
    normals: np.ndarray | None = None,
) -> PartShape:
    cat = record.category
    offset, k = SHAPENETPART_OFFSETS[cat], len(SHAPENETPART_PARTS[cat])
    gid = np.asarray(global_ids)
    local = gid.astype(np.int64) - offset
    if gid.size and (local.min() < 0 or local.max() >= k):
        bad = gid[(local < 0) | (local >= k)][0]
        raise DatasetFormatError(
            path, f"part id {int(bad)} is not a {cat} part (its ids are {offset}..{offset + k - 1})"
        )
    points = check_points(path, xyz)
    return PartShape(
        uid=record.uid,
        category=cat,
        points=points,
        labels=check_labels(path, local, points.shape[0], k),
        part_names=list(record.part_names),
        normals=None if normals is None else np.ascontiguousarray(normals, dtype=np.float32),
        source=str(path),
    )


def load_shapenetpart(root: str | Path, split: str = "test", **kwargs) -> PartDataset:
    """Open ShapeNetPart at ``root`` in whichever release it holds (``.h5`` files here or in ``hdf5_data/`` ->
    HDF5, else the normal layout)."""
    root = Path(root)
    if any(root.glob("*.h5")) or any((root / "hdf5_data").glob("*.h5")):
        return ShapeNetPartH5(root, split, **kwargs)
    return ShapeNetPart(root, split, **kwargs)
