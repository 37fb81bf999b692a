import json

import numpy as np
import pytest

from patchalign3d.data import DatasetFormatError
from patchalign3d.keypoints.keypointnet import (
    DEFAULT_NAMES,
    KeypointNet,
    keypoint_names_for,
    read_names_table,
    resolve_categories,
)


def test_loader_lists_present_and_missing(kpnet):
    ds = KeypointNet(kpnet, "chair,table", "test")
    assert [s.key for s in ds] == ["03001627-c0", "03001627-c1", "04379243-tab0"]
    assert ds.missing == {"chair": ["03001627-c2"]}
    s = ds[0]
    assert s.points.shape == (256, 3) and s.points.dtype == np.float64
    assert len(s.gt_indices) == 4 and s.category == "chair" and s.mesh_path is None
    assert set(s.keypoints_by_semantic_id()) == {0, 1, 17, 18}
    assert len(KeypointNet(kpnet, ["chair"], "train")) == 2
    assert len(KeypointNet(kpnet, "03001627", "all")) == 5
    assert KeypointNet(kpnet, "chair", "test").present_elsewhere() == {"train": 2, "val": 1}


def test_annotation_xyz_is_the_indexed_point(kpnet):
    data = json.loads((kpnet / "annotations" / "chair.json").read_text())
    ds = KeypointNet(kpnet, "chair", "train").by_key()
    for entry in data:
        key = f"03001627-{entry['model_id']}"
        if key in ds:
            for kp in entry["keypoints"]:
                np.testing.assert_allclose(ds[key].points[kp["pcd_info"]["point_index"]], kp["xyz"], atol=1e-6)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"not": "a list"}, "expected a list of annotated models"),
        ([{"class_id": "03001627", "keypoints": []}], r"lacks \['model_id'\]"),
        ([{"class_id": "03001627", "model_id": "c0", "keypoints": [{"xyz": [0, 0, 0]}]}], "no pcd_info.point_index"),
        ([{"class_id": "03001627", "model_id": "c0", "keypoints": [{"pcd_info": {"point_index": 1.5}}]}],
         "non-negative integer"),
        ([{"class_id": "04379243", "model_id": "c0", "keypoints": []}], "not chair's 03001627"),
    ],
)
def test_wrong_annotation_layout_is_a_clear_error(kpnet, content, message):
    (kpnet / "annotations" / "chair.json").write_text(json.dumps(content))
    with pytest.raises(DatasetFormatError, match=message) as err:
        KeypointNet(kpnet, "chair", "test")
    assert "chair.json" in str(err.value)


def test_out_of_range_index_and_bad_split_lines(kpnet):
    data = json.loads((kpnet / "annotations" / "chair.json").read_text())
    data[0]["keypoints"][0]["pcd_info"]["point_index"] = 5000
    (kpnet / "annotations" / "chair.json").write_text(json.dumps(data))
    shape = KeypointNet(kpnet, "chair", "test")[0]
    with pytest.raises(DatasetFormatError, match="point_index 5000 is outside the cloud's 256 points"):
        _ = shape.points
    (kpnet / "splits" / "val.txt").write_text("oops\n")
    with pytest.raises(DatasetFormatError, match="line 1"):
        KeypointNet(kpnet, "chair", "val")


def test_bad_arguments(kpnet, tmp_path):
    with pytest.raises(ValueError, match="unknown KeypointNet category 'sofa'"):
        resolve_categories("chair,sofa")
    with pytest.raises(ValueError, match="unknown split"):
        KeypointNet(kpnet, "chair", "dev")
    with pytest.raises(FileNotFoundError, match="no annotations for airplane"):
        KeypointNet(kpnet, "airplane", "test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        KeypointNet(tmp_path / "nowhere")


def test_names_table():
    chair = keypoint_names_for("chair", [0, 17, 99])
    assert chair[0] == chair[1] and chair[17] == "end of a chair leg" and chair[99] == "keypoint 99"
    assert set(DEFAULT_NAMES) == {"airplane", "chair", "table"}


def test_names_table_file(tmp_path):
    path = tmp_path / "names.json"
    path.write_text(json.dumps({"chair": {"0": "back corner"}}))
    table = read_names_table(path)
    assert table["chair"] == {0: "back corner"} and table["table"] == DEFAULT_NAMES["table"]
    path.write_text(json.dumps({"chair": ["back corner"]}))
    with pytest.raises(ValueError, match="semantic_id"):
        read_names_table(path)


def test_real_keypointnet_files(shared_data):
    root = shared_data / "keypointnet"
    train = KeypointNet(root, "chair", "train")
    assert len(train) == 1 and train.num_missing > 600
    shape = train[0]
    assert shape.key == "03001627-88382b877be91b2a572f8e1c1caad99e"
    assert shape.points.shape == (2048, 3) and shape.mesh_path is not None
    data = json.loads((root / "annotations" / "chair.json").read_text())
    entry = next(e for e in data if e["model_id"] == shape.model_id)
    for kp in entry["keypoints"]:  # the release's own fact: xyz == pcd[point_index]
        np.testing.assert_allclose(shape.points[kp["pcd_info"]["point_index"]], kp["xyz"], atol=1e-5)
    test = KeypointNet(root, "chair", "test")
    assert len(test) == 0 and test.num_missing == 200
