"""The protocol on labelled procedural shapes: an oracle that returns the annotated keypoints scores a perfect
DAS (SkeletonMerger ``eval_keypointnet.py`` lines 42-90: every slot lands on the same semantic id on every
shape, and every id on the same slot), the random baseline does not; the demo's tasks and pictures."""

from __future__ import annotations

import numpy as np
import pytest

from patchalign3d.keypoints.discover.demo import demo_tasks, demo_unsupervised_lines
from patchalign3d.keypoints.discover.evaluate import evaluate_method
from patchalign3d.keypoints.discover.pictures import consistency_png
from patchalign3d.keypoints.discover.shapes import load_category, shape_files


def test_labelled_shapes_share_labels_and_ids(bicycles):
    shapes = load_category(shape_files(bicycles)["bicycle"], num_points=512)
    assert [s.uid for s in shapes] == [f"bicycle_{i:04d}" for i in range(4)]
    for s in shapes:
        # "tire" and "wheel" are one part; labels index the category's canonical vocabulary
        assert s.part_names == ["frame", "handle", "saddle", "wheel"]
        assert s.part_labels.min() >= 0 and s.part_labels.max() <= 3 and s.points.shape == (512, 3)
        assert sorted(s.annotated.ids) == ["wheel centre (z+)", "wheel centre (z-)"]


def _oracle(train):
    def predict(shape):
        order = np.argsort(shape.annotated.ids)  # slot i = the i-th semantic id, on every shape
        return shape.annotated.positions[order]
    return predict


def test_an_oracle_is_perfect_and_random_is_not(bicycles):
    tasks = demo_tasks({"test_unseen": bicycles})["test_unseen"]
    assert [(t.category, len(t.train), len(t.test)) for t in tasks] == [("bicycle", 2, 2)]
    report = evaluate_method(tasks, _oracle, k=2, keep_predictions=True)
    assert report["das"] == pytest.approx(1.0) and report["forward"] == 1.0 and report["backward"] == 1.0
    assert report["das_random"] < 1.0
    assert report["regression_error"] < report["regression_error_random"]
    assert len(report["predictions"]["bicycle"]) == 2
    row = report["per_category"]["bicycle"]
    assert (row["train"], row["test"]) == (2, 2)


def test_picture_and_report_lines(bicycles, tmp_path):
    shapes = load_category(shape_files(bicycles)["bicycle"], num_points=256)
    png = consistency_png([(s.points, s.annotated.positions) for s in shapes[:3]], tmp_path / "p.png",
                          title="t", labels=[s.uid for s in shapes[:3]])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = {"das": 0.9, "das_random": 0.3, "regression_error": 0.05, "regression_error_random": 0.2,
           "correlation": None, "correlation_random": 0.5}
    lines = demo_unsupervised_lines({"k": 2, "smoke_run": True, "embeddings": {"test_unseen": fig},
                                     "diffuser": {}, "pictures": ["pictures/x.png"]})
    text = "\n".join(lines)
    assert "Smoke run" in text and "| embeddings | test_unseen | 0.900 | 0.300 | 0.050 | 0.200 | — | 0.500 |" in text
    assert "![x](pictures/x.png)" in text
    assert demo_unsupervised_lines({"skipped": "why"})[-1].endswith("not scored: why")
