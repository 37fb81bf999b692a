"""The unsupervised-keypoint metrics against values worked out by hand from their authors' code.

- DAS: eliphatfs/SkeletonMerger ``eval_keypointnet.py`` lines 42-64 (``fwd_alignment_scores``: every ordered
  pair of shapes, self-pairs included) and 67-90 (``bwd_alignment_scores``: per semantic id, then the mean);
  DAS = (forward + backward) / 2 as rhys-newbury/keypoint_diffuser ``scripts/test/get_das.py`` prints it
  (``__main__``: ``DUAL ALIGNMENT SCORE: (fwd + bwd) / 2``).
- Correlation: rhys-newbury/keypoint_diffuser ``scripts/test/get_correspondence.py`` (commit fc0b425),
  ``keypoint_label_correlation`` lines 213-289 (each keypoint first through ``project_to_surface``, lines
  186-209, called at line 254; presence within 0.05, counts over shapes, max over labels / B, mean over
  keypoints), clouds scaled by one min and max to [-1, 1] (``run_prediction``, lines 140-148: ``pcn = 2 *
  ((pc - min) / (max - min) - 0.5)``).
- Regression: ubc-vision/StableKeypoints ``unsupervised_keypoints/keypoint_regressor.py`` lines 201-226
  (``return_regressor_visible``: ``pinv(XᵀX) Xᵀ y`` per target over the shapes where it is visible, no bias)
  and ``eval.py`` lines 453-480 (prediction ``x @ W``, l2 per keypoint, ``visible``: sum / count).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from patchalign3d.keypoints.discover import metrics as M


def _ann(positions, ids):
    return M.Annotated(np.asarray(positions, dtype=float), list(ids))


GT = [[0, 0, 0], [1, 0, 0]]


def test_dual_alignment_two_shapes_by_hand():
    # shape A: slots land on p, q; shape B: both slots land on q.
    predicted = [np.array([[0.1, 0, 0], [0.9, 0, 0]]), np.array([[0.9, 0, 0], [0.8, 0, 0]])]
    annotated = [_ann(GT, "pq"), _ann(GT, "pq")]
    # forward: pairs (A,A)=1, (A,B)=1/2, (B,A)=1/2, (B,B)=1 -> 0.75
    # backward: p is nearest slot 0 on A and slot 1 on B -> [[1,0],[0,1]] mean 0.5; q: slot 1 then 0 -> 0.5
    out = M.dual_alignment(predicted, annotated)
    assert out["forward"] == pytest.approx(0.75)
    assert out["backward"] == pytest.approx(0.5)
    assert out["das"] == pytest.approx(0.625)


def test_dual_alignment_is_one_for_consistent_slots_and_ignores_the_frame():
    predicted = [np.array([[0.1, 0, 0], [0.9, 0, 0]]), np.array([[0.05, 0, 0], [1.2, 0, 0]])]
    annotated = [_ann(GT, "pq"), _ann(GT, "pq")]
    assert M.dual_alignment(predicted, annotated)["das"] == pytest.approx(1.0)
    # SkeletonMerger scales each cloud to [-1, 1] first; argmin of squared distances does not see that
    moved = [p * 7.0 + 3.0 for p in predicted]
    moved_ann = [_ann(np.asarray(GT) * 7.0 + 3.0, "pq")] * 2
    assert M.dual_alignment(moved, moved_ann) == M.dual_alignment(predicted, annotated)


def test_keypoint_correlation_by_hand():
    # points span [-1, 1] on every axis, so the frame is the identity
    pts = np.array([[-1, -1, -1], [1, 1, 1], [0, 0, 0], [0.5, 0, 0]], dtype=float)
    labels = np.array([0, 1, 2, 1])
    a = np.array([[0.01, 0, 0], [0.5, 0.03, 0]])  # slot 0 touches label 2, slot 1 label 1
    b = np.array([[0.52, 0, 0], [0.5, 0, 0.04]])  # both slots touch label 1
    # slot 0: label 2 once, label 1 once -> 1/2; slot 1: label 1 twice -> 2/2; mean 0.75
    assert M.keypoint_correlation([a, b], [pts, pts], [labels, labels]) == pytest.approx(0.75)
    # each cloud is scaled by its own min and max: scaling one shape with its keypoints changes nothing
    assert M.keypoint_correlation([a, b * 10], [pts, pts * 10], [labels, labels]) == pytest.approx(0.75)
    # a keypoint 0.2 from its nearest point (label 2) is first pulled to 0.05 of it, then touches label 2 only
    # (get_correspondence.py, project_to_surface, lines 186-209, called at line 254); without that pull the slot
    # would touch nothing on shape `off` and score 1/2
    off, on = np.array([[0.2, 0, 0]]), np.array([[0.01, 0, 0]])
    assert M.keypoint_correlation([off, on], [pts, pts], [labels, labels]) == pytest.approx(1.0)
    moved = M.project_to_surface(off, pts, 0.05)
    assert np.linalg.norm(moved[0] - pts[2]) == pytest.approx(0.05, abs=1e-8) and moved[0, 0] < 0.05
    np.testing.assert_array_equal(M.project_to_surface(on, pts, 0.05), on)  # within 0.05: stays


BOX = np.array([[-1, -1, -1], [1, 1, 1]], dtype=float)  # centre 0, diagonal 2*sqrt(3)
D = 2 * math.sqrt(3)


def _shape(kp, ann, ids="a"):
    return M.RegressionShape(np.asarray(kp, dtype=float), _ann(ann, ids), *M.box_frame(BOX))


def test_regression_error_by_hand():
    # x = kp / D; the least-squares map with no bias is diag(2, 2, 0) (z never varies in training)
    train = [_shape([[0.5, 0, 0]], [[1, 0, 0]]), _shape([[0, 0.5, 0]], [[0, 1, 0]])]
    ids, w = M.fit_regressor(train)
    assert ids == ["a"]
    np.testing.assert_allclose(w[:, 0, :], np.diag([2.0, 2.0, 0.0]), atol=1e-9)
    test = [_shape([[0.25, 0.25, 0.3]], [[0.5, 0.5, 0.9]])]
    # regressed (0.5, 0.5, 0) / D against (0.5, 0.5, 0.9) / D: error 0.9 / D of the diagonal
    assert M.regression_error(train, test) == pytest.approx(0.9 / D)


def test_regression_fits_each_target_on_the_shapes_that_have_it():
    # target "b" is annotated on the second shape only: its map comes from that shape alone
    train = [M.RegressionShape(np.array([[0.5, 0, 0]]), _ann([[1, 0, 0]], "a"), *M.box_frame(BOX)),
             M.RegressionShape(np.array([[0, 0.5, 0]]), _ann([[0, 1, 0], [0, -1, 0]], "ab"), *M.box_frame(BOX))]
    ids, w = M.fit_regressor(train)
    assert ids == ["a", "b"]
    np.testing.assert_allclose(w[:, 1, :], np.diag([0.0, -2.0, 0.0]), atol=1e-9)
    # a test shape annotated with b only is scored on b only
    test = [M.RegressionShape(np.array([[0, 0.25, 0]]), _ann([[0, -0.5, 0.3]], "b"), *M.box_frame(BOX))]
    assert M.regression_error(train, test) == pytest.approx(0.3 / D)


def test_side_ids_tell_instances_apart_by_side():
    legs = np.array([[-0.4, -0.5, -0.8], [0.4, -0.5, -0.8], [-0.4, -0.5, 0.8], [0.4, -0.5, 0.8]])
    ann = M.side_ids({"leg end": legs, "nose": np.array([[0, 0, 1.0]])}, diagonal=2.0)
    assert ann.ids == ["leg end (x-, z-)", "leg end (x+, z-)", "leg end (x-, z+)", "leg end (x+, z+)", "nose"]
    wheels = M.side_ids({"wheel centre": np.array([[0, -0.15, -0.53], [0, -0.15, 0.53]])}, diagonal=2.0)
    assert wheels.ids == ["wheel centre (z-)", "wheel centre (z+)"]
    # six legs: the middle pair sits on the centre along z (within the spread), so only x tells them apart
    six = np.concatenate([legs, [[-0.4, -0.5, 0.0], [0.4, -0.5, 0.0]]])
    assert M.side_ids({"leg end": six}, diagonal=2.0).ids[4:] == ["leg end (x-)", "leg end (x+)"]


def test_random_keypoints_are_points_of_the_shape():
    pts = np.random.default_rng(0).normal(size=(50, 3))
    kp = M.random_keypoints(pts, 10, np.random.default_rng(1))
    assert kp.shape == (10, 3)
    assert all((np.abs(pts - k).sum(1) == 0).any() for k in kp)
    assert len({tuple(k) for k in kp}) == 10  # without replacement
