"""Find3D's protocol from its published files: the rotate_pts rotation, subsets, top-k prompts, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from patchalign3d.data import PartNetE, ShapeNetPart, build_dataset
from patchalign3d.data.base import DatasetFormatError
from patchalign3d.data.shapenetpart import SHAPENETPART_PARTS
from patchalign3d.evaluation import (
    EvalDataset,
    Protocol,
    benchmark_protocol,
    evaluate_main,
    load_prompt_table,
)
from patchalign3d.evaluation.find3d import Find3DFileMissing, Find3DFiles, find3d_rotation_matrix
from tests.data.bench_fixtures import blob, write_partnete, write_shapenetpart, write_shapenetpart_h5

CATEGORY_INDEX = {"Airplane": 0, "Chair": 4, "Table": 15}
# rows 0..4 of the HDF5 test set: (category, points per part in local label order)
H5_SHAPES = [("Chair", [8, 8, 8, 8]), ("Table", [16, 8, 8]), ("Chair", [16, 16, 0, 0]), ("Airplane", [8, 8, 8, 8]),
             ("Chair", [4, 12, 8, 8])]
OFFSET = {"Airplane": 0, "Chair": 12, "Table": 47}


def write_h5_root(root, shapes=H5_SHAPES):
    rows = []
    for i, (cat, counts) in enumerate(shapes):
        pts, local = blob(counts, seed=i)
        rows.append((CATEGORY_INDEX[cat], pts, local + OFFSET[cat]))
    return write_shapenetpart_h5(root / "hdf5_data", rows)  # Find3D's loader reads <root>/hdf5_data/


def write_protocol_dir(folder, rotations, subset, benchmark="shapenetpart"):
    rot_name = "random_rotation_test.pt" if benchmark == "shapenetpart" else "rand_rotation.pt"
    (folder / benchmark).mkdir(parents=True, exist_ok=True)
    torch.save(torch.as_tensor(rotations, dtype=torch.float32), folder / benchmark / rot_name)
    (folder / benchmark / "subset_idxs.json").write_text(json.dumps(subset))
    return folder


# -- the rotation -------------------------------------------------------------------------------------------
def test_rotation_is_rz_pitch_ry_yaw_rx_roll():
    rng = np.random.default_rng(0)
    for roll, yaw, pitch in rng.uniform(0, 2 * np.pi, size=(5, 3)):
        expected = Rotation.from_euler("ZYX", [pitch, yaw, roll]).as_matrix()  # intrinsic: Rz @ Ry @ Rx
        assert np.allclose(find3d_rotation_matrix([roll, yaw, pitch]), expected, atol=1e-12)
    # by hand: a quarter roll (about x) takes y to z; a quarter pitch (about z) takes x to y
    assert np.allclose(np.array([0.0, 1.0, 0.0]) @ find3d_rotation_matrix([np.pi / 2, 0, 0]).T, [0, 0, 1])
    assert np.allclose(np.array([1.0, 0.0, 0.0]) @ find3d_rotation_matrix([0, 0, np.pi / 2]).T, [0, 1, 0])


# -- ShapeNetPart, HDF5 order ---------------------------------------------------------------------------------
def test_shapenetpart_rows_subset_and_rotation(tmp_path):
    pytest.importorskip("h5py")
    root = write_h5_root(tmp_path / "snp").parent
    angles = np.random.default_rng(1).uniform(0, 6.28, size=(5, 3))
    # per-category positions: chair 0, 1, 2 are rows 0, 2, 4; table 0 is row 1; airplane 0 is row 3
    proto_dir = write_protocol_dir(tmp_path / "f3d", angles, {"chair": ["2", "0"], "airplane": ["0"], "table": []})
    ds = build_dataset("shapenetpart", root)
    protocol = Protocol(**{**benchmark_protocol("shapenetpart", "find3d").to_dict(), "protocol_dir": str(proto_dir),
                           "subset": "find3d"})
    assert protocol.rotation == "find3d" and protocol.metric == "find3d"
    data = EvalDataset(ds, protocol)
    items = {data[i].uid: data[i] for i in range(len(data))}
    assert sorted(items) == ["ply_data_test0/0", "ply_data_test0/3", "ply_data_test0/4"]
    for row in (0, 3, 4):
        raw = ds[row].points.astype(np.float64)
        expected = raw @ Rotation.from_euler("ZYX", angles[row][::-1]).as_matrix().T
        assert np.allclose(items[f"ply_data_test0/{row}"].points, expected, atol=1e-5)
    assert data.categories == ["Airplane", "Chair"]
    assert data.find3d.to_dict()["files"]["rotation"]["path"].endswith("shapenetpart/random_rotation_test.pt")
    # a category filter keeps the global rows
    only = EvalDataset(build_dataset("shapenetpart", root, categories=["chair"]), protocol)
    assert sorted(only[i].uid for i in range(len(only))) == ["ply_data_test0/0", "ply_data_test0/4"]
    # the rotation file must have one row per shape of the whole test set
    write_protocol_dir(tmp_path / "f3d", angles[:4], {"chair": ["0"]})
    with pytest.raises(DatasetFormatError, match=r"random_rotation_test\.pt: has 4 rows, .* lists 5 shapes"):
        EvalDataset(ds, protocol)


def test_missing_files_say_which_where_and_who_ships_them(tmp_path, monkeypatch):
    pytest.importorskip("h5py")
    root = write_h5_root(tmp_path / "snp").parent
    monkeypatch.delenv("PATCHALIGN3D_FIND3D_DIR", raising=False)
    protocol = benchmark_protocol("shapenetpart", "find3d")
    with pytest.raises(Find3DFileMissing, match=r"shapenetpart/random_rotation_test\.pt\) is needed but no protocol "
                       r"folder is set: pass --protocol-dir DIR .*github\.com/ziqi-ma/Find3D, model/evaluation/"
                       r"benchmark/benchmark_reproducibility/ \(commit f0801f75"):
        EvalDataset(build_dataset("shapenetpart", root), protocol)
    monkeypatch.setenv("PATCHALIGN3D_FIND3D_DIR", str(tmp_path / "empty"))
    with pytest.raises(Find3DFileMissing, match=r"rotation file is not at .*empty/shapenetpart/random_rotation_test"):
        EvalDataset(build_dataset("shapenetpart", root), protocol)
    # the split-list layout is in another order than the one Find3D's rows index
    snp = write_shapenetpart(tmp_path / "normal", [("Table", "t1", "test", [5, 5, 0])])
    with pytest.raises(ValueError, match="index the HDF5 release's test set"):
        Find3DFiles.for_dataset(ShapeNetPart(snp), tmp_path, rotation=True, subset=False)
    with pytest.raises(ValueError, match="Find3D published no protocol for 'faust'"):
        benchmark_protocol("faust", "find3d")


def test_cli_find3d_without_protocol_dir_is_one_clear_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("h5py")
    root = write_h5_root(tmp_path / "snp").parent
    monkeypatch.delenv("PATCHALIGN3D_FIND3D_DIR", raising=False)
    assert evaluate_main(["shapenetpart", "--root", str(root), "--protocol", "find3d"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("patchalign3d evaluate: error: Find3D's shapenetpart rotation file") and "Traceback" not in err
    assert "--protocol-dir" in err and "ziqi-ma/Find3D" in err


# -- PartNetE -----------------------------------------------------------------------------------------------
def test_partnete_rows_and_subset_by_object_id(tmp_path):
    meta = {"Bottle": ["lid"], "Chair": ["arm", "back", "leg", "seat", "wheel"]}
    objects = {"Chair": {"179": [2, 30], "40067": [2, 30]}, "Bottle": {"3380": [4, 28], "100013": [4, 28]}}
    root = write_partnete(tmp_path / "pne", objects, meta)
    # rows: Bottle/100013, Bottle/3380, Chair/179, Chair/40067
    angles = np.random.default_rng(2).uniform(0, 6.28, size=(4, 3))
    proto_dir = write_protocol_dir(tmp_path / "f3d", angles, {"Bottle": ["3380"], "Chair": ["40067", "179"]},
                                   benchmark="partnete")
    protocol = Protocol(**{**benchmark_protocol("partnete", "find3d").to_dict(), "protocol_dir": str(proto_dir),
                           "subset": "find3d"})
    assert protocol.none_if_negative and protocol.prompt_template == "{part} of a {category}"
    ds = PartNetE(root)
    data = EvalDataset(ds, protocol)
    items = {data[i].uid: data[i] for i in range(len(data))}
    assert sorted(items) == ["Bottle/3380", "Chair/179", "Chair/40067"]
    raw = ds[1].points.astype(np.float64)  # Bottle/3380, row 1
    expected = raw @ Rotation.from_euler("ZYX", angles[1][::-1]).as_matrix().T
    assert np.allclose(items["Bottle/3380"].points, expected, atol=1e-5)
    assert items["Chair/179"].candidates[0] == "arm of a chair"
    # a subset object this copy lacks: an error that says how to go on
    write_protocol_dir(tmp_path / "f3d", angles, {"Bottle": ["3380", "9999"]}, benchmark="partnete")
    canonical = Protocol(subset="find3d", protocol_dir=str(proto_dir))
    with pytest.raises(DatasetFormatError, match=r"subset_idxs\.json: names 1 shapes .* \(first: Bottle/9999\)\. "
                       r"To score the 1 present ones only, pass --dataset-option missing=skip"):
        EvalDataset(PartNetE(root, categories=["Bottle"]), canonical)
    kept = EvalDataset(PartNetE(root, categories=["Bottle"], missing="skip"), canonical)
    assert len(kept) == 1 and kept.subset_absent == ["Bottle/9999"]


def test_partnete_objects_with_their_own_rotation_file_use_it(tmp_path):
    """Find3D's PartNetE loader reads <object>/rand_rotation.pt (model/data/data.py:315), so when the copy has
    them no row order is assumed and the protocol folder's rows are not needed."""
    meta = {"Bottle": ["lid"]}
    root = write_partnete(tmp_path / "pne", {"Bottle": {"3380": [4, 28], "100013": [4, 28]}}, meta)
    angles = np.random.default_rng(3).uniform(0, 6.28, size=(2, 3))
    for obj, angle in zip(("100013", "3380"), angles):
        torch.save(torch.tensor(angle, dtype=torch.float64), root / "test" / "Bottle" / obj / "rand_rotation.pt")
    protocol = Protocol(**{**benchmark_protocol("partnete", "find3d").to_dict(), "protocol_dir": str(tmp_path / "none")})
    ds = PartNetE(root)
    data = EvalDataset(ds, protocol)
    items = {data[i].uid: data[i] for i in range(len(data))}
    raw = ds[1].points.astype(np.float64)  # Bottle/3380
    expected = raw @ Rotation.from_euler("ZYX", angles[1][::-1]).as_matrix().T
    assert np.allclose(items["Bottle/3380"].points, expected, atol=1e-5)
    assert "rand_rotation.pt" in data.find3d.order and "assumed" not in data.find3d.order


# -- the publisher's files, when present ----------------------------------------------------------------------
def test_real_shapenetpart_files_match_the_test_split(shared_data, tmp_path):
    """Find3D's ShapeNetPart files against a test set with the official per-category counts (2874 shapes)."""
    pytest.importorskip("h5py")
    split = json.loads((shared_data / "shapenetpart/train_test_split/shuffled_test_file_list.json").read_text())
    synsets = dict(
        line.split()[::-1] for line in (shared_data / "shapenetpart/synsetoffset2category.txt").read_text().splitlines()
    )
    order = list(SHAPENETPART_PARTS)  # category index of the HDF5 'label' field
    cats = [order.index(synsets[e.split("/")[1]]) for e in split]
    assert len(cats) == 2874
    pts = np.random.default_rng(0).normal(size=(len(cats), 32, 3)).astype(np.float32)
    offsets = np.cumsum([0] + [len(p) for p in SHAPENETPART_PARTS.values()])[:-1]
    pid = np.repeat(offsets[cats][:, None], 32, axis=1)
    import h5py

    (tmp_path / "h5").mkdir()
    with h5py.File(tmp_path / "h5" / "ply_data_test0.h5", "w") as f:
        f["data"], f["label"], f["pid"] = pts, np.array(cats, dtype=np.uint8)[:, None], pid.astype(np.uint8)
    ds = build_dataset("shapenetpart", tmp_path / "h5")
    protocol = Protocol(**{**benchmark_protocol("shapenetpart", "find3d").to_dict(),
                           "protocol_dir": str(shared_data / "find3d"), "subset": "find3d"})
    data = EvalDataset(ds, protocol)
    assert len(data) == 160 and data.subset_absent == []  # 10 per category, every index inside its category
    assert data.find3d.rotations.shape == (2874, 3)
    item = data[0]
    row = ds.records[data.order[0]].extra["find3d"].row
    assert np.allclose(item.points, pts[row] @ find3d_rotation_matrix(data.find3d.rotations[row]).T, atol=1e-5)


def test_real_topk_prompts_and_partnete_files(shared_data, tmp_path):
    table = load_prompt_table("find3d-topk", str(shared_data / "find3d"))
    # the published file is one prompt short for Airplane: parts past the list get no prompt
    assert len(table.prompts("Airplane", ["body", "wing", "tail", "engine or frame"])) == 3
    chair = table.prompts("Chair", ["back", "seat", "leg", "arm"])
    assert len(chair) == 4 and chair[2] == "leg of a chair"
    subset = json.loads((shared_data / "find3d/partnete/subset_idxs.json").read_text())
    meta = json.loads((shared_data / "partnete/PartNetE_meta.json").read_text())
    assert sorted(subset) == sorted(meta) and all(len(v) == 5 for v in subset.values())
    rot = torch.load(shared_data / "find3d/partnete/rand_rotation.pt", weights_only=True)
    assert tuple(rot.shape) == (1906, 3)
    # a PartNetE copy with fewer objects than Find3D's 1906 rows cannot be matched row by row
    root = write_partnete(tmp_path / "pne", {"Bottle": {"3380": [2, 30]}}, {"Bottle": ["lid"]})
    protocol = Protocol(rotation="find3d", protocol_dir=str(shared_data / "find3d"))
    with pytest.raises(DatasetFormatError, match=r"rand_rotation\.pt: has 1906 rows, .* lists 1 shapes"):
        EvalDataset(PartNetE(root), protocol)
