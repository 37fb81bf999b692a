import json

import numpy as np
import pytest
import torch

from data_engine.synthetic import write_dataset
from data_engine.synthetic_keypoints import keypoint_names
from patchalign3d.keypoints.synthetic import (
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
    return root


@pytest.fixture
def rule_bank():
    names = keypoint_names()
    g = torch.Generator().manual_seed(0)
    return TextBank(names, torch.nn.functional.normalize(torch.randn(len(names), 64, generator=g), dim=-1), {})


def test_report_structure_and_ranges(tiny_model, rule_bank, shape_folders):
    report = evaluate_synthetic_keypoints(tiny_model, {"seen": shape_folders / "seen", "unseen": shape_folders / "unseen"},
                                          text=rule_bank, shots=1, num_points=512)
    for split, n in (("seen", 4), ("unseen", 1)):  # table, car: 2 queries each (mug has no keypoints); bed: 1
        r = report[split]
        assert r["num_shapes"] == n and r["shots"] == 1
        for method in ("zero_shot", "few_shot", "chance"):
            assert set(r["iou"][method]) == {"0.05", "0.10"}
            assert 0 <= r["iou"][method]["0.05"] <= r["iou"][method]["0.10"] <= 100
            assert len(r["iou_all_thresholds"][method]) == 11
    assert set(report["seen"]["per_category"]["zero_shot"]) == {"table", "car"}
    assert report["seconds"] > 0
    lines = summary_lines(report, ["seen", "unseen"])
    assert lines[0].startswith("| split |") and len(lines) == 2 + 6


def test_categories_with_too_few_shapes_are_listed(tiny_model, rule_bank, shape_folders):
    report = evaluate_synthetic_keypoints(tiny_model, {"unseen": shape_folders / "unseen"}, text=rule_bank, shots=2,
                                          num_points=256)
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
