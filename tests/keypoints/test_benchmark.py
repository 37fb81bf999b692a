import json

import numpy as np
import pytest

from patchalign3d.keypoints.benchmark import PUBLISHED, PredictionsError, evaluate_keypointnet
from patchalign3d.keypoints.keypointnet import KeypointNet


def gt_predictions(root, split="test", categories="chair,table"):
    return {s.key: s.gt_indices.tolist() for s in KeypointNet(root, categories, split)}


def test_ground_truth_scores_100_and_the_report_is_complete_json(kpnet, tmp_path):
    report = evaluate_keypointnet(kpnet, categories="chair,table", predictions=gt_predictions(kpnet),
                                  json_path=tmp_path / "r.json", markdown_path=tmp_path / "r.md", progress=False)
    assert report["mean"] == {f"{0.01 * i:.2f}": 100.0 for i in range(11)}
    assert report["per_category"]["chair"]["num_shapes"] == 2 and report["num_missing"] == 1
    assert not report["complete"]
    saved = json.loads((tmp_path / "r.json").read_text())
    assert list(saved["mean"]) == ["0.00", "0.01", "0.02", "0.03", "0.04", "0.05", "0.06", "0.07", "0.08", "0.09", "0.10"]
    assert saved["missing"] == {"chair": ["03001627-c2"]}
    md = (tmp_path / "r.md").read_text()
    assert "Partial: 1 shape(s) of the split have no point cloud here" in md
    assert "published: ZeroKey (zero-shot, Molmo)" in md and "| 79.43 |" in md
    assert "published: PatchAlign3D paper, few-shot" in md and "64.07" in md


def test_predictions_file_against_hand_counts(kpnet, tmp_path):
    preds = gt_predictions(kpnet)
    first = sorted(preds)[0]
    preds[first] = preds[first][:2]  # drop two ground-truth keypoints: 2 FN at every threshold
    path = tmp_path / "p.json"
    path.write_text(json.dumps(preds))
    report = evaluate_keypointnet(kpnet, categories="chair", predictions=path, progress=False)
    # chair: 2 shapes x 4 keypoints; predictions for tab0 are of another category and ignored
    assert report["per_category"]["chair"]["iou"]["0.00"] == pytest.approx(100 * 6 / 8)
    assert report["ignored"]["other_category"] == 1


def test_other_splits_and_absent_clouds_are_ignored_not_errors(kpnet):
    preds = {**gt_predictions(kpnet), **gt_predictions(kpnet, "train"), "03001627-c2": [0]}
    report = evaluate_keypointnet(kpnet, categories="chair,table", predictions=preds, progress=False)
    assert report["ignored"] == {"other_category": 0, "other_split": 2, "no_point_cloud": 1}


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p.update({"99999999-x": [1]}), "unknown shape"),
        (lambda p: p.update({"03001627-nope": [1]}), r"unknown shape.*03001627-nope"),
        (lambda p: p.pop("03001627-c1"), r"no prediction for 1 shape.*03001627-c1"),
        (lambda p: p.update({"03001627-c0": [3, 256]}), r"03001627-c0: point index 256 is out of range \[0, 256\)"),
        (lambda p: p.update({"03001627-c0": [-1]}), "out of range"),
    ],
)
def test_bad_predictions_are_clear_errors(kpnet, edit, message):
    preds = gt_predictions(kpnet)
    edit(preds)
    with pytest.raises(PredictionsError, match=message):
        evaluate_keypointnet(kpnet, categories="chair,table", predictions=preds, progress=False)


def test_bad_predictions_file(kpnet, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(PredictionsError, match="expected an object"):
        evaluate_keypointnet(kpnet, predictions=path, categories="chair", progress=False)
    path.write_text(json.dumps({"03001627-c0": [1.5]}))
    with pytest.raises(PredictionsError, match="list of integer point indices"):
        evaluate_keypointnet(kpnet, predictions=path, categories="chair", progress=False)


def test_no_present_shape_says_where_they_are(kpnet):
    for p in (kpnet / "pcds" / "03001627").glob("c*.pcd"):
        p.unlink()
    with pytest.raises(FileNotFoundError, match=r"none of the 3 annotated chair shapes of the test split.*--split train"):
        evaluate_keypointnet(kpnet, categories="chair", predictions={}, progress=False)


def test_zero_shot_detector_finds_the_keypoints_its_names_were_made_from(known, tiny_model):
    root, bank = known
    report = evaluate_keypointnet(root, categories="chair", model=tiny_model, text=bank, progress=False,
                                  detector_options={"max_instances": 1, "refine": False})
    assert report["method"] == "patchalign3d zero_shot"
    assert report["mean"]["0.00"] == 100.0 and report["per_shape"]["03001627-k0"]["num_pred"] == 2


def test_few_shot_detector_uses_train_support(known, kpnet, tiny_model):
    root, _ = known
    report = evaluate_keypointnet(root, categories="chair", model=tiny_model, detector="few_shot", shots=2,
                                  progress=False)
    assert report["support"] == ["03001627-s0", "03001627-s1"]
    assert report["mean"]["0.00"] == 100.0  # the support shapes are the test shape: found exactly
    with pytest.raises(FileNotFoundError, match="few-shot needs 3 annotated chair shapes"):
        evaluate_keypointnet(kpnet, categories="chair", model=tiny_model, detector="few_shot", shots=3, progress=False)


def test_lift_detector_needs_meshes(kpnet):
    with pytest.raises(FileNotFoundError, match="lifting renders meshes"):
        evaluate_keypointnet(kpnet, categories="chair", detector="lift", pointer="oracle", progress=False)


def test_limit_is_reported(kpnet):
    report = evaluate_keypointnet(kpnet, categories="chair,table", predictions=gt_predictions(kpnet), limit=1,
                                  progress=False)
    assert report["num_scored"] == 2 and "at most 1 shapes per category" in report["markdown"]


def test_published_rows_are_zerokeys_table():
    assert PUBLISHED["ZeroKey (zero-shot, Molmo)"][0.10] == 79.43
    assert PUBLISHED["ZeroKey (zero-shot, Molmo)"][0.01] == 13.16
    assert PUBLISHED["B2-3D (few-shot)"][0.05] == 57.72
    assert PUBLISHED["UKPGAN (supervised)"][0.10] == 46.49


def test_real_keypointnet_train_chair(shared_data):
    root = shared_data / "keypointnet"
    with pytest.raises(FileNotFoundError, match="--split train"):
        evaluate_keypointnet(root, categories="chair", predictions={}, progress=False)
    preds = {s.key: s.gt_indices.tolist() for s in KeypointNet(root, "chair", "train")}
    report = evaluate_keypointnet(root, categories="chair", split="train", predictions=preds, progress=False)
    assert report["num_scored"] == 1 and report["mean"]["0.00"] == 100.0 and report["num_missing"] > 600
    # a prediction 1 point off: its geodesic offset decides at which threshold it starts to count
    shape = KeypointNet(root, "chair", "train")[0]
    off = {shape.key: [int(np.argsort(np.linalg.norm(shape.points - shape.points[i], axis=1))[1]) for i in shape.gt_indices]}
    r = evaluate_keypointnet(root, categories="chair", split="train", predictions=off, progress=False)
    assert r["mean"]["0.00"] == 0.0 and r["mean"]["0.10"] == 100.0
