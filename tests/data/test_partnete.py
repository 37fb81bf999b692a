"""PartNetE loader and the restricted reader of its pickled label.npy, on folders in PartSLIP's layout."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from patchalign3d.data import DatasetFormatError, PartNetE, build_dataset
from patchalign3d.data.partnete import read_partnete_meta
from patchalign3d.data.safe_npy import load_npy_dict
from tests.data.bench_fixtures import write_partnete

META = {"Bottle": ["lid"], "Chair": ["arm", "back", "leg", "seat", "wheel"], "Box": ["lid"]}
OBJECTS = {
    "Chair": {"179": [5, 10, 0, 3, 12, 0], "40067": [2, 0, 8, 4, 6, 0]},
    "Bottle": {"3380": [7, 13], "100013": [0, 20]},
}


class CreatesFile:
    """Unpickling this creates a file: what a crafted label.npy could do to np.load(allow_pickle=True)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_partnete_layout_and_order(tmp_path):
    root = write_partnete(tmp_path / "pne", OBJECTS, META)
    ds = build_dataset("partnete", root)
    assert isinstance(ds, PartNetE) and ds.categories == ["Bottle", "Chair"]
    # category name, then object id as a string (Find3D's sorted(os.listdir)): "100013" < "3380"
    assert [r.uid for r in ds.records] == ["Bottle/100013", "Bottle/3380", "Chair/179", "Chair/40067"]
    assert [r.extra["find3d"].row for r in ds.records] == [0, 1, 2, 3]
    chair = ds[2]
    assert chair.category == "Chair" and chair.part_names == META["Chair"]
    assert chair.labels.tolist() == [-1] * 5 + [0] * 10 + [2] * 3 + [3] * 12
    assert chair.points.shape == (30, 3) and chair.points.dtype == np.float32
    bottle = ds[1]  # ascii PLY
    assert bottle.labels.tolist() == [-1] * 7 + [0] * 13
    # data/test/ as in the Hugging Face dataset, category filter, few-shot split absent
    nested = write_partnete(tmp_path / "nested", OBJECTS, META, nested=True)
    assert [r.uid for r in PartNetE(nested, categories=["chair"]).records] == ["Chair/179", "Chair/40067"]
    with pytest.raises(DatasetFormatError, match=r"no few_shot/ or data/few_shot/ folder"):
        PartNetE(nested, "few_shot")


def test_partnete_missing_files_say_how_to_go_on(tmp_path):
    root = write_partnete(tmp_path / "pne", OBJECTS, META)
    (root / "test" / "Chair" / "179" / "label.npy").unlink()
    with pytest.raises(
        DatasetFormatError, match=r"test: 1 of the 4 shapes it lists are absent \(first: .*179/label\.npy\)\. "
        r"To score the 3 present shapes only, pass --dataset-option missing=skip"
    ):
        PartNetE(root)
    ds = PartNetE(root, missing="skip")
    assert len(ds) == 3 and ds.skipped == [("Chair/179", str(root / "test" / "Chair" / "179" / "label.npy"))]
    assert ds.records[2].extra["find3d"].row == 3  # the rows still count the object left out
    (root / "test" / "Lamp").mkdir()
    with pytest.raises(DatasetFormatError, match=r"Lamp: category 'Lamp' is not in PartNetE_meta\.json"):
        PartNetE(root, missing="skip")


def test_label_npy_bad_values(tmp_path):
    root = write_partnete(tmp_path / "pne", {"Bottle": {"1": [2, 3]}}, META)
    label = root / "test" / "Bottle" / "1" / "label.npy"
    np.save(label, {"semantic_seg": np.array([-1, -1, 0, 0, 1])})
    with pytest.raises(DatasetFormatError, match=r"label\.npy: labels must lie in \[-1, 0\]"):
        PartNetE(root)[0]
    np.save(label, {"instance_seg": np.zeros(5)})
    with pytest.raises(DatasetFormatError, match=r"label\.npy: lacks \['semantic_seg'\]"):
        PartNetE(root)[0]
    np.save(label, {"semantic_seg": np.array(["lid"] * 5)})
    with pytest.raises(DatasetFormatError, match=r"entry 'semantic_seg' must be a numeric array, found <U3"):
        PartNetE(root)[0]
    np.save(label, np.zeros(5, dtype=np.int64))
    with pytest.raises(DatasetFormatError, match=r"expected a dict saved with np\.save .* int64 array of shape \(5,\)"):
        PartNetE(root)[0]


def test_crafted_label_npy_is_refused_and_its_code_never_runs(tmp_path):
    proof, target = tmp_path / "proof-it-works", tmp_path / "created-by-the-file"
    # np.save pickles the object array; unpickling calls open(target, "w")
    np.save(tmp_path / "control.npy", np.array(CreatesFile(str(proof)), dtype=object), allow_pickle=True)
    np.save(tmp_path / "label.npy", np.array(CreatesFile(str(target)), dtype=object), allow_pickle=True)
    # the control file really carries a payload: a plain np.load(allow_pickle=True) runs it (in a child process)
    subprocess.run(
        [sys.executable, "-c", f"import numpy; numpy.load({str(tmp_path / 'control.npy')!r}, allow_pickle=True)"],
        check=True,
    )
    assert proof.exists()
    with pytest.raises(DatasetFormatError, match=r"label\.npy: refused to unpickle: the pickle references io\.open"):
        load_npy_dict(tmp_path / "label.npy")
    assert not target.exists()
    # inside a dict, next to a real array, the same
    np.save(tmp_path / "mixed.npy", {"semantic_seg": np.zeros(3), "x": CreatesFile(str(target))}, allow_pickle=True)
    with pytest.raises(DatasetFormatError, match=r"mixed\.npy: refused to unpickle"):
        load_npy_dict(tmp_path / "mixed.npy")
    assert not target.exists()


def test_label_npy_written_by_numpy_1(tmp_path):
    """NumPy 1.x names its pickle helper numpy.core.multiarray (protocol 3, as np.save wrote then)."""
    data = np.empty((), dtype=object)
    data[()] = {"semantic_seg": np.array([-1, 0, 2], dtype=np.int64), "instance_seg": np.array([0, 1, 1])}
    payload = pickle.dumps(data, protocol=3).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in payload
    with open(tmp_path / "old.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(payload)
    out = load_npy_dict(tmp_path / "old.npy", ("semantic_seg",))
    assert out["semantic_seg"].tolist() == [-1, 0, 2] and out["instance_seg"].tolist() == [0, 1, 1]


def test_real_partnete_meta(shared_data, tmp_path):
    """PartSLIP's PartNetE_meta.json as published: 45 categories; a root built around it loads."""
    meta_path = shared_data / "partnete" / "PartNetE_meta.json"
    meta = read_partnete_meta(meta_path)
    assert len(meta) == 45 and list(meta) == sorted(meta)
    assert meta["Bottle"] == ["lid"] and meta["Chair"] == ["arm", "back", "leg", "seat", "wheel"]
    root = tmp_path / "pne"
    write_partnete(root, {"Chair": {"179": [1, 4, 4, 4, 4, 4]}}, META)
    shutil.copy(meta_path, root / "PartNetE_meta.json")  # the publisher's file, in a temporary root
    shape = PartNetE(root)[0]
    assert shape.part_names == ["arm", "back", "leg", "seat", "wheel"]
    assert json.loads(meta_path.read_text())["Chair"] == shape.part_names
