"""Benchmark loaders on folders written here in the real formats, and on ../shared/data when present."""

from __future__ import annotations

import json

import numpy as np
import pytest

from patchalign3d.data import (
    FAUST,
    DatasetFormatError,
    ObjaverseBench,
    ShapeNetPart,
    ShapeNetPartH5,
    build_dataset,
    read_pcd,
)
from tests.data.bench_fixtures import (
    blob,
    write_faust_npz,
    write_faust_satr,
    write_objaverse,
    write_pcd,
    write_shapenetpart,
    write_shapenetpart_h5,
)

SHAPES = [
    ("Table", "t1", "test", [6, 3, 1]),
    ("Skateboard", "s1", "test", [2, 8, 0]),
    ("Table", "t2", "train", [5, 5, 0]),
]


# -- ShapeNetPart, normal layout --------------------------------------------------------------------------
def test_shapenetpart_normal_layout(tmp_path):
    root = write_shapenetpart(tmp_path / "snp", SHAPES)
    ds = ShapeNetPart(root, "test")
    assert len(ds) == 2 and ds.categories == ["Table", "Skateboard"]
    t = ds[0]
    assert t.uid == "04379243/t1" and t.category == "Table"
    assert t.part_names == ["desktop", "leg or support", "drawer"]
    # file holds global ids 47, 48, 49 -> local 0, 1, 2
    assert t.labels.tolist() == [0] * 6 + [1] * 3 + [2]
    assert t.points.shape == (10, 3) and t.points.dtype == np.float32 and t.normals.shape == (10, 3)
    s = ds[1]
    assert s.part_names == ["wheel", "deck", "belt for foot"] and s.labels.tolist() == [0] * 2 + [1] * 8
    assert [r.uid for r in ShapeNetPart(root, "trainval").records] == ["04379243/t2"]
    assert len(ShapeNetPart(root, "all", categories=["table"])) == 2
    assert len(ShapeNetPart(root, "all", limit=1)) == 1
    assert build_dataset("shapenetpart", root).name == "shapenetpart"
    with pytest.raises(ValueError, match=r"the partnet loader takes no option \['missing'\]; its options: \["):
        build_dataset("partnet", root, missing="skip")


def test_shapenetpart_errors(tmp_path):
    root = write_shapenetpart(tmp_path / "snp", SHAPES)
    ds = ShapeNetPart(root, "test")
    (root / "04379243" / "t1.txt").unlink()
    with pytest.raises(DatasetFormatError, match=r"t1\.txt: missing shape file"):
        ds[0]  # removed after the listing was checked
    with pytest.raises(DatasetFormatError, match=r"1 of the 2 shapes it lists are absent \(first: .*t1\.txt\)"):
        ShapeNetPart(root, "test")
    partial = ShapeNetPart(root, "test", missing="skip")
    assert [r.uid for r in partial.records] == ["04225987/s1"]
    assert partial.skipped == [("04379243/t1", str(root / "04379243" / "t1.txt"))]
    # a chair part id inside a table file
    (root / "04225987" / "s1.txt").write_text("0 0 0 0 0 1 12\n" * 3)
    with pytest.raises(
        DatasetFormatError, match=r"s1\.txt: part id 12 is not a Skateboard part \(its ids are 44\.\.46\)"
    ):
        ShapeNetPart(root, "test", missing="skip")[0]
    (root / "04225987" / "s1.txt").write_text("0 0 0 0 0 1 45\n0 0 0 0 1 45\n")
    with pytest.raises(DatasetFormatError, match=r"s1\.txt: line 2 has 6 columns, expected 7"):
        ShapeNetPart(root, "test", missing="skip")[0]
    with pytest.raises(ValueError, match="unknown categories"):
        ShapeNetPart(root, "test", missing="skip", categories=["Rocketship"])
    (root / "train_test_split" / "shuffled_test_file_list.json").write_text("{not json")
    with pytest.raises(DatasetFormatError, match=r"shuffled_test_file_list\.json: not valid JSON"):
        ShapeNetPart(root, "test")
    (root / "synsetoffset2category.txt").unlink()
    with pytest.raises(DatasetFormatError, match="synsetoffset2category.txt: missing"):
        ShapeNetPart(root, "test")


def test_shapenetpart_shared_data(shared_data):
    root = shared_data / "shapenetpart"
    test = ShapeNetPart(root, "test", missing="skip")
    assert [r.uid for r in test.records] == ["04379243/1a00aa6b75362cc5b324368d54a7416f"]
    shape = test[0]
    raw = np.loadtxt(root / "04379243" / "1a00aa6b75362cc5b324368d54a7416f.txt")
    assert shape.points.shape == (len(raw), 3)
    assert np.allclose(shape.points, raw[:, :3], atol=1e-6)
    assert np.array_equal(shape.labels, raw[:, 6].astype(int) - 47)
    assert shape.category == "Table" and shape.part_names == ["desktop", "leg or support", "drawer"]
    train = ShapeNetPart(root, "train", missing="skip")
    assert sorted(train.categories) == ["Skateboard", "Table"] and len(train) == 3
    for s in train:  # the skateboards carry only the deck label
        if s.category == "Skateboard":
            assert set(s.labels.tolist()) == {1}
    assert len(test.skipped) == 2873  # the split lists 2874 shapes; the copy holds one of them
    with pytest.raises(
        DatasetFormatError,
        match=r"shuffled_test_file_list\.json: 2873 of the 2874 shapes it lists are absent .*To score the 1 present "
        r"shapes only, pass --dataset-option missing=skip",
    ):
        ShapeNetPart(root, "test")


# -- ShapeNetPart, HDF5 -------------------------------------------------------------------------------------
def test_shapenetpart_h5(tmp_path):
    pytest.importorskip("h5py")  # an optional dependency of this loader only
    p1, l1 = blob([3, 2, 1, 2])
    p2, l2 = blob([4, 4])
    root = write_shapenetpart_h5(tmp_path / "h5", [(4, p1, l1 + 12), (14, p2, l2 + 44)])  # Chair, Skateboard
    ds = build_dataset("shapenetpart", root, split="test")
    assert isinstance(ds, ShapeNetPartH5) and len(ds) == 2
    chair, board = ds[0], ds[1]
    assert chair.category == "Chair" and chair.part_names == ["back", "seat", "leg", "arm"]
    assert chair.labels.tolist() == l1.tolist() and np.allclose(chair.points, p1)
    assert board.category == "Skateboard" and board.labels.tolist() == l2.tolist()
    assert ds.records[1].uid == "ply_data_test0/1"
    import h5py

    with h5py.File(root / "ply_data_test0.h5", "a") as f:
        del f["pid"]
    with pytest.raises(
        DatasetFormatError, match=r"ply_data_test0\.h5: HDF5 file lacks dataset\(s\) \['pid'\]"
    ):
        ShapeNetPartH5(root, "test")
    (root / "test_hdf5_file_list.txt").write_text("ply_data_test9.h5\n")
    with pytest.raises(DatasetFormatError, match=r"test_hdf5_file_list\.txt: lists 'ply_data_test9\.h5'"):
        ShapeNetPartH5(root, "test")


# -- FAUST ----------------------------------------------------------------------------------------------------
def test_faust_satr_layout(tmp_path):
    meshes = {
        "tr_scan_000": ["torso", "arm", "arm", "head", "leg", "leg"],
        "tr_scan_001": ["leg", "torso", "torso", "head", "arm", ""],
    }
    root = write_faust_satr(tmp_path / "faust", meshes)
    ds = FAUST(root)
    assert ds.layout == "satr" and len(ds) == 2 and ds.categories == ["human"]
    s = ds[1]
    assert s.part_names == ["arm", "head", "leg", "torso"]  # sorted over the whole file, "" = unlabelled
    assert s.labels.tolist() == [2, 3, 3, 1, 0, -1]
    assert s.points.shape == (6, 3)
    # labels follow the OBJ's vertex order, even with other lines in between
    obj = (root / "scans" / "tr_scan_000.obj").read_text().splitlines()
    (root / "scans" / "tr_scan_000.obj").write_text("\n".join(["o body", "vn 0 0 1"] + obj))
    assert np.allclose(ds[0].points, FAUST(root)[0].points)
    (root / "coarse_gt.json").write_text(json.dumps({**meshes, "tr_scan_000": ["torso"] * 5}))
    with pytest.raises(
        DatasetFormatError,
        match=r"coarse_gt\.json: mesh 'tr_scan_000' has 5 labels but .*tr_scan_000\.obj has 6 vertices",
    ):
        FAUST(root)[0]
    (root / "meshes.txt").write_text("tr_scan_000\ntr_scan_007\n")
    with pytest.raises(DatasetFormatError, match="no labels for mesh 'tr_scan_007'"):
        FAUST(root)


def test_faust_npz_layout(tmp_path):
    root = write_faust_npz(
        tmp_path / "npz",
        {
            "a": (["arm", "head", "leg", "torso"], [0, 1, 2, 3, 3]),
            "b": (["arm", "head", "leg", "torso"], [3, 3, 0, 2, 1]),
        },
    )
    ds = build_dataset("faust", root)
    assert ds.layout == "npz" and [r.uid for r in ds.records] == ["a", "b"]
    assert ds[1].labels.tolist() == [3, 3, 0, 2, 1] and ds[1].part_names == ["arm", "head", "leg", "torso"]
    np.savez(
        root / "c.npz", points=np.zeros((3, 3)), labels=np.array([0, 4, 1]), label_names=np.array(["x", "y"])
    )
    with pytest.raises(
        DatasetFormatError, match=r"c\.npz: labels must lie in \[-1, 1\] for 2 parts, found \[0, 4\]"
    ):
        FAUST(root)[2]
    np.savez(root / "c.npz", points=np.zeros((3, 3)), labels=np.array([0, 1, 1]))
    with pytest.raises(DatasetFormatError, match=r"c\.npz: npz lacks 'label_names'"):
        FAUST(root)


# -- Find3D's Objaverse benchmark ------------------------------------------------------------------------------
@pytest.mark.parametrize("binary", [False, True])
def test_objaverse_bench(tmp_path, binary):
    root = write_objaverse(
        tmp_path / "obja",
        "seenclass",
        {
            "coffee_mug_abc123": (["handle", "body"], [2, 3, 5]),
            "chair_ff00": (["leg", "seat", "back"], [0, 4, 4, 2]),
        },
        binary=binary,
    )
    ds = ObjaverseBench(root, "seen")
    assert [r.uid for r in ds.records] == ["chair_ff00", "coffee_mug_abc123"]
    assert ds.categories == ["chair", "coffee mug"]
    mug = ds[1]
    assert mug.part_names == ["handle", "body"]
    assert mug.labels.tolist() == [-1] * 2 + [0] * 3 + [1] * 5  # 0 in labels.npy = unlabelled
    assert mug.points.shape == (10, 3)
    assert np.allclose(mug.points, blob([2, 3, 5], seed=0)[0], atol=1e-5)
    with pytest.raises(DatasetFormatError, match="no unseen or unseenclass/ folder"):
        ObjaverseBench(root, "unseen")
    obj = root / "seenclass" / "chair_ff00"
    (obj / "label_map.json").write_text(json.dumps({"1": "leg", "3": "back"}))
    with pytest.raises(DatasetFormatError, match=r"chair_ff00/label_map\.json: keys must be exactly 1\.\.2"):
        ObjaverseBench(root, "seen")
    (obj / "label_map.json").write_text(json.dumps({"1": "leg", "2": "seat"}))
    with pytest.raises(DatasetFormatError, match=r"labels\.npy: labels must lie in \[-1, 1\]"):
        ObjaverseBench(root, "seen")[0]
    (obj / "points5000.pcd").write_text(
        "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nPOINTS 3\nDATA binary_compressed\n"
    )
    with pytest.raises(
        DatasetFormatError, match=r"points5000\.pcd: PCD DATA 'binary_compressed' is not supported"
    ):
        ObjaverseBench(root, "seen")[0]


def test_read_pcd_fields(tmp_path):
    pts = np.arange(12, dtype=np.float32).reshape(4, 3)
    for binary in (False, True):
        write_pcd(tmp_path / "a.pcd", pts, binary=binary)
        data = read_pcd(tmp_path / "a.pcd")
        assert sorted(data) == ["rgb", "x", "y", "z"] and data["y"].tolist() == [1, 4, 7, 10]
    (tmp_path / "b.pcd").write_bytes((tmp_path / "a.pcd").read_bytes()[:-8])
    with pytest.raises(DatasetFormatError, match=r"b\.pcd: binary PCD data truncated"):
        read_pcd(tmp_path / "b.pcd")
