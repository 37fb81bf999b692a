"""ScanObjectNN's raw release with parts, read from files written in the publisher's exact layout.

The layout is the one of hkust-vgd/scanobjectnn's README ("Raw files", "Parts") as COPS reads it
(marco-garosi/COPS data/ScanObjectNN.py lines 74-100: split_new.txt, float32 .bin with a count then 11 floats a
point, _part.bin with a count then 2 floats a point); the label rules are COPS's (lines 28-44, 117-122).
"""

from __future__ import annotations

import filecmp

import numpy as np
import pytest

from patchalign3d.data import DatasetFormatError, ScanObjectNN, build_dataset
from patchalign3d.data.scanobjectnn import PACKAGED_PART_LABELS, read_part_xml, read_scanobjectnn_bin
from tests.data.bench_fixtures import write_scanobjectnn

# bin (id 1): XML ids 0 unknown, 1 container, 2 outside_frame, 3 base, 4 cover
BIN_IDS = [0, 0, 1, 1, 1, 2, 4, 4, 3, 0]
# chair (id 4): XML ids 0 unknown, 1 head, 2 back, 3 arm, 4 base, 5 seat
CHAIR_IDS = [0] * 10 + [2] * 20 + [5] * 10


@pytest.fixture
def sonn(tmp_path):
    return write_scanobjectnn(
        tmp_path / "sonn",
        [("005_00020", 1, True, BIN_IDS), ("014_00018", 4, True, CHAIR_IDS), ("025_00011", 4, False, [0, 2, 5] * 6)],
    )


def test_reads_the_raw_layout_with_cops_label_rules(sonn):
    ds = build_dataset("scanobjectnn", sonn)  # test split, background kept, COPS's dropped parts
    assert [r.uid for r in ds.records] == ["bin/005_00020", "chair/014_00018"]
    assert ds.part_labels == PACKAGED_PART_LABELS  # the copy has no training_data/: the shipped XMLs
    shape = ds[0]
    # COPS's part_id_remapping for bin: [0, 1, 2, -1, 3] (ids 0..4), background named "background"
    assert shape.part_names == ["background", "container", "outside frame", "cover"]
    assert shape.labels.tolist() == [0, 0, 1, 1, 1, 2, 3, 3, -1, 0]
    raw = np.fromfile(sonn / "object_dataset_complete_with_parts_" / "bin" / "005_00020.bin", dtype="<f4")
    assert raw[0] == 10 and np.array_equal(shape.points, raw[1:].reshape(10, 11)[:, :3])
    assert np.array_equal(shape.normals, raw[1:].reshape(10, 11)[:, 3:6])
    # chair: [0, -1, 1, 2, 3, 4] (head dropped)
    chair = ds[1]
    assert chair.part_names == ["background", "back", "arm", "base", "seat"]
    assert chair.labels.tolist() == [0] * 10 + [1] * 20 + [4] * 10
    assert ds.choices()["drop_parts"]["value"] == {"bin": ["base"], "chair": ["head"]}


def test_background_drop_parts_and_scene_are_switches(sonn):
    drop = ScanObjectNN(sonn, background="drop")
    shape = drop[0]  # the three id-0 points are removed (COPS's filter_background_by_zeros, lines 117-119)
    assert shape.part_names == ["container", "outside frame", "cover"]
    assert shape.labels.tolist() == [0, 0, 0, 1, 2, 2, -1] and len(shape.points) == 7
    full = ScanObjectNN(sonn, drop_parts="none")
    assert full[0].part_names == ["background", "container", "outside frame", "base", "cover"]
    assert full[0].labels.tolist() == BIN_IDS
    assert full[1].part_names == ["background", "head", "back", "arm", "base", "seat"]
    train = ScanObjectNN(sonn, split="train")
    assert [r.uid for r in train.records] == ["chair/025_00011"]
    assert ScanObjectNN(sonn, categories=["chair"]).categories == ["chair"]
    # scene="object": the most frequent semantic label other than 0, 1, 2 (ScanObjectNN data_utils.py:67-74)
    root = write_scanobjectnn(
        sonn.parent / "scene", [("005_00020", 1, True, BIN_IDS)],
        semantic={"005_00020": [1, 1, 1, 1, 1, 7, 7, 9, 2, 0]},  # 1 (wall) is the most frequent, 7 the object
    )
    obj = ScanObjectNN(root, scene="object")[0]
    assert obj.labels.tolist() == [2, 3]  # points 5 and 6: outside frame (id 2), cover (id 4)
    # the data folder itself is a valid root too
    assert len(ScanObjectNN(sonn / "object_dataset_complete_with_parts_")) == 2


def test_bad_files_say_what_and_where(sonn, tmp_path):
    data = sonn / "object_dataset_complete_with_parts_"
    with pytest.raises(DatasetFormatError, match="no object_dataset_complete_with_parts_/ folder"):
        ScanObjectNN(tmp_path)
    (data / "split_new.txt").rename(data / "other.txt")
    with pytest.raises(DatasetFormatError, match=r"split_new\.txt: missing split list .* split_file=PATH"):
        ScanObjectNN(sonn)
    assert len(ScanObjectNN(sonn, split_file=data / "other.txt")) == 2
    (data / "other.txt").rename(data / "split_new.txt")
    # a point count that disagrees with the file size (a truncated file)
    path = data / "bin" / "005_00020.bin"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(DatasetFormatError, match=r"005_00020\.bin: header says 10 points, so 111 float32 values"):
        ScanObjectNN(sonn)[0]
    # a part id the category's XML does not have
    np.concatenate([[np.float32(3)], np.array([[0, 1], [0, 1], [0, 9]], np.float32).reshape(-1)]).astype("<f4").tofile(
        data / "chair" / "014_00018_part.bin"
    )
    np.concatenate([[np.float32(3)], np.zeros(33, np.float32)]).astype("<f4").tofile(data / "chair" / "014_00018.bin")
    with pytest.raises(DatasetFormatError, match=r"part ids \[9\] are not in chair_meta\.xml"):
        ScanObjectNN(sonn)[1]
    (data / "chair" / "014_00018.bin").unlink()
    with pytest.raises(DatasetFormatError, match="1 of the 2 shapes it lists are absent.*missing=skip"):
        ScanObjectNN(sonn)
    kept = ScanObjectNN(sonn, missing="skip")
    assert [r.uid for r in kept.records] == ["bin/005_00020"] and kept.skipped[0][0] == "chair/014_00018"
    with pytest.raises(ValueError, match=r"drop_parts names \['lid'\] for bin"):
        ScanObjectNN(sonn, drop_parts={"bin": ["lid"]})


def test_publishers_split_list_and_part_xmls(shared_data, tmp_path):
    """The real main_split.txt and part XMLs (MIT); the scans are written in the raw layout for its test lines."""
    training = shared_data / "scanobjectnn" / "training_data"
    lines = [ln.split("\t") for ln in (training / "main_split.txt").read_text().splitlines() if ln.strip()]
    tests = [(f[: -len(".bin")], int(c)) for f, c, *t in lines if t and t[0].strip() == "t"]
    firsts = {}
    for stem, cid in tests:
        firsts.setdefault(cid, stem)
    assert sorted(firsts) == list(range(15))  # every category has test scans
    root = write_scanobjectnn(tmp_path / "real", [(firsts[4], 4, True, CHAIR_IDS), (firsts[0], 0, True, [0, 1, 3])])
    (root / "training_data").symlink_to(training, target_is_directory=True)
    data = root / "object_dataset_complete_with_parts_"
    ds = ScanObjectNN(root, split_file=training / "main_split.txt", missing="skip")
    assert ds.part_labels == root / "training_data" / "part_labels"
    assert len(ds) == 2 and len(ds.skipped) == len(tests) - 2
    assert {r.uid for r in ds.records} == {f"chair/{firsts[4]}", f"bag/{firsts[0]}"}
    bag = next(ds[i] for i in range(2) if ds[i].category == "bag")
    assert bag.part_names == ["background", "bag body", "handle", "shoulder strap"] and bag.labels.tolist() == [0, 1, 3]
    # the XMLs shipped with the package are the publisher's, byte for byte
    for xml in sorted((training / "part_labels").glob("*_meta.xml")):
        assert filecmp.cmp(xml, PACKAGED_PART_LABELS / xml.name, shallow=False), xml.name
        assert read_part_xml(xml)[0] == "unknown"
    assert len(list(PACKAGED_PART_LABELS.glob("*_meta.xml"))) == 15
    assert read_scanobjectnn_bin(data / "bag" / f"{firsts[0]}_part.bin", 2).shape == (3, 2)


def test_a_large_scan_is_subsampled_as_cops_does(tmp_path):
    """COPS tests/19_evaluate_model_various_settings.py:41,208-214: `np.random.seed(0)` before each scan, then a
    scan of more than EARLY_SUBSAMPLE points keeps `np.random.choice(indices, EARLY_SUBSAMPLE, replace=False)`."""
    ids = [0, 2, 5] * 40  # 120 points
    root = write_scanobjectnn(tmp_path / "sonn", [("014_00018", 4, True, ids)])
    whole = ScanObjectNN(root, max_scan_points="none")[0]
    assert len(whole.points) == 120 and ScanObjectNN(root)[0].points.shape == (120, 3)  # under COPS's 100,000
    np.random.seed(0)  # COPS's lines, verbatim in effect
    cops = np.random.choice(np.array(list(range(120))), 100, replace=False)
    small = ScanObjectNN(root, max_scan_points=100)
    assert np.array_equal(small[0].points, whole.points[cops]) and np.array_equal(small[0].labels, whole.labels[cops])
    assert small.choices()["max_scan_points"]["value"] == 100
    with pytest.raises(ValueError, match="max_scan_points must be a positive integer"):
        ScanObjectNN(root, max_scan_points=0)
