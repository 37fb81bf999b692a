import json
import shutil

import numpy as np
import pytest
import torch

from data_engine.synthetic import write_dataset
from data_engine.synthetic_keypoints import keypoint_names
from patchalign3d.keypoints.synthetic import (
    absent_lines,
    evaluate_synthetic_keypoints,
    read_keypoint_sidecar,
    summary_lines,
)
from patchalign3d.text import TextBank


@pytest.fixture(scope="module")
def shape_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    write_dataset(root / "seen", ["table", "car", "mug"], 3, seed=1)
    write_dataset(root / "unseen", ["bed"], 2, seed=2)
    # a category whose query is a copy of its support shape: few-shot must find exactly the annotated points
    write_dataset(root / "twins", ["chair"], 1, seed=3)
    src = next((root / "twins" / "chair").glob("*.ply"))
    for suffix in (".ply", ".parts.json"):
        shutil.copy(src.with_name(src.stem + suffix), src.with_name("zz_copy" + suffix))
    return root


@pytest.fixture
def rule_bank():
    names = keypoint_names()
    g = torch.Generator().manual_seed(0)
    return TextBank(names, torch.nn.functional.normalize(torch.randn(len(names), 64, generator=g), dim=-1), {})


def _vocabulary_counts(folder, shots):
    """By hand from the sidecars: names asked of the query shapes (every name of the category) and those absent."""
    asked = absent = 0
    for cat in sorted(p for p in folder.iterdir() if p.is_dir()):
        kps = [read_keypoint_sidecar(p)[1] for p in sorted(cat.glob("*.ply"))]
        kps = [k for k in kps if k]
        if len(kps) < shots + 1:
            continue
        vocab = {n for k in kps for n in k}
        for k in kps[shots:]:
            asked += len(vocab)
            absent += len(vocab - set(k))
    return asked, absent


def test_known_answers_every_name_absent_twins_and_the_oracle(tiny_model, rule_bank, shape_folders, monkeypatch):
    # the model says no to everything: zero-shot must find every asked name absent and predict nothing
    monkeypatch.setattr(tiny_model, "logit_bias", -1e4, raising=False)
    report = evaluate_synthetic_keypoints(
        tiny_model, {"seen": shape_folders / "seen", "unseen": shape_folders / "unseen", "twins": shape_folders / "twins"},
        text=rule_bank, shots=1, num_points=512, lift_per_category=1)
    for split, n in (("seen", 4), ("unseen", 1), ("twins", 1)):  # table, car: 2 queries each (mug has none); bed: 1
        r = report[split]
        assert r["num_shapes"] == n and r["shots"] == 1
        assert r["iou_all_thresholds"]["zero_shot"] == [0.0] * 11  # nothing predicted: every keypoint missed
        asked, absent = _vocabulary_counts(shape_folders / split, 1)
        assert r["absent"]["asked"] == asked and r["absent"]["truly_absent"] == absent
        assert r["absent"]["found_absent"] == asked and r["absent"]["found_absent_correctly"] == absent
        for method in ("zero_shot", "few_shot", "lift", "lift_oracle", "chance"):
            assert set(r["iou"][method]) == {"0.05", "0.10"}
    # the support shape's own features at its annotated points: found again exactly, at threshold 0
    assert report["twins"]["iou_all_thresholds"]["few_shot"] == [100.0] * 11
    # the perfect pointer: every leg end and seat corner of the chair, and of the tables, within 0.05
    assert report["twins"]["iou"]["lift_oracle"]["0.05"] == 100.0
    assert report["seen"]["per_category"]["lift_oracle"]["table"]["0.05"] == 100.0
    assert report["seen"]["lift_shapes"] == 2  # one table, one car
    # chance stays chance
    assert report["twins"]["iou"]["chance"]["0.05"] < 50.0
    assert report["seconds"] > 0
    lines = summary_lines(report, ["seen", "unseen"])
    assert lines[0].startswith("| split |") and len(lines) == 2 + 10
    assert "| seen | 2 | lift (oracle pointer: upper bound) |" in "\n".join(lines)
    assert f"found {report['seen']['absent']['asked']} absent" in absent_lines(report, ["seen"])[0]


def test_zero_shot_sees_every_name_when_the_model_says_yes(tiny_model, rule_bank, shape_folders, monkeypatch):
    monkeypatch.setattr(tiny_model, "logit_bias", 1e4, raising=False)
    report = evaluate_synthetic_keypoints(tiny_model, {"unseen": shape_folders / "unseen"}, text=rule_bank, shots=1,
                                          num_points=256, methods=("zero_shot",))
    a = report["unseen"]["absent"]
    assert a["found_absent"] == 0 and a["asked"] == _vocabulary_counts(shape_folders / "unseen", 1)[0] > 0
    assert set(report["unseen"]["iou"]) == {"zero_shot"}


def test_categories_with_too_few_shapes_are_listed(tiny_model, rule_bank, shape_folders):
    report = evaluate_synthetic_keypoints(tiny_model, {"unseen": shape_folders / "unseen"}, text=rule_bank, shots=2,
                                          num_points=256, methods=("zero_shot", "few_shot", "chance"))
    assert report["unseen"]["skipped"] == ["bed"] and report["unseen"]["num_shapes"] == 0
    # nothing scored: null figures (JSON-safe, equal run to run) and a table row that says so
    assert report["unseen"]["iou"]["zero_shot"] == {"0.05": None, "0.10": None}
    assert json.loads(json.dumps(report))["unseen"] == report["unseen"]
    assert "not scored" in summary_lines(report, ["unseen"])[2]


def test_sidecar_errors(tmp_path, tiny_model):
    (tmp_path / "c").mkdir()
    mesh = tmp_path / "c" / "a.ply"
    write_dataset(tmp_path / "src", ["mug"], 1)
    mesh.write_bytes(next((tmp_path / "src").glob("mug/*.ply")).read_bytes())
    side = tmp_path / "c" / "a.parts.json"
    side.write_text(json.dumps({"category": "c", "keypoints": {"tip": [[0, 0]]}}))
    with pytest.raises(ValueError, match=r"keypoints 'tip' must be a list of finite \[x, y, z\]"):
        read_keypoint_sidecar(mesh)
    side.write_text(json.dumps({"category": "c"}))
    assert read_keypoint_sidecar(mesh) == ("c", {})
    with pytest.raises(ValueError, match="carries keypoints"):
        evaluate_synthetic_keypoints(tiny_model, {"x": tmp_path}, text=np.ones((1, 64)))
    with pytest.raises(ValueError, match="shots"):
        evaluate_synthetic_keypoints(tiny_model, {"x": tmp_path}, shots=0)
    with pytest.raises(ValueError, match="unknown methods"):
        evaluate_synthetic_keypoints(tiny_model, {"x": tmp_path}, methods=("magic",))
