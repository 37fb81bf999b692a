"""Per-name probabilities and point-resolution placement, against hand computations."""

import numpy as np
import pytest
import torch

from patchalign3d.keypoints import detect_keypoints
from patchalign3d.keypoints.peaks import refine_peaks
from patchalign3d.keypoints.scores import name_probability
from tests.conftest import make_cloud
from tests.keypoints.conftest import patch_embeddings


def _grid():
    """An 11 x 11 grid of step 0.1 in the z = 0 plane; every other row and column a patch centre."""
    xy = np.stack(np.meshgrid(np.arange(11) / 10, np.arange(11) / 10, indexing="ij"), -1).reshape(-1, 2)
    points = np.c_[xy, np.zeros(len(xy))]
    centers = np.flatnonzero((np.rint(xy * 10) % 2 == 0).all(axis=1))
    return points, centers


def _at(points, x, y):
    return int(np.flatnonzero(np.isclose(points[:, 0], x) & np.isclose(points[:, 1], y))[0])


def test_refinement_follows_the_fitted_plane_to_the_edge_of_the_patch():
    points, centers = _grid()
    x, y = points[centers, 0], points[centers, 1]
    # name 0 rises towards +x+y, name 1 towards -x-y (steeper in y), name 2 is flat everywhere
    scores = np.stack([2 * x + y, -0.5 * x - y, np.full_like(x, 0.5)], axis=1)
    peaks = np.array([_at(points, 0.4, 0.4), _at(points, 0.4, 0.4), _at(points, 0.6, 0.6), _at(points, 0.5, 0.3)])
    labels = np.array([0, 1, 2, 0])
    # a patch of 9 points is the 3 x 3 block around the peak: the plane's highest member is its corner uphill
    out = refine_peaks(points, peaks, labels, centers, scores, patch_size=9)
    assert out.tolist() == [_at(points, 0.5, 0.5), _at(points, 0.3, 0.3), _at(points, 0.6, 0.6), _at(points, 0.6, 0.4)]
    # a patch of 5 points (the peak and its 4 edge neighbours): uphill along +x wins for name 0 (2 > 1)
    out = refine_peaks(points, peaks[:1], labels[:1], centers, scores, patch_size=5)
    assert out.tolist() == [_at(points, 0.5, 0.4)]
    # a curved field, the plane fitted to the 9 centres around the peak (its own and its 8 neighbours on the centre
    # grid): the curvature is symmetric about y = 0.4, so the plane is x + const and the peak moves along +x
    curved = np.stack([x - 3 * (y - 0.4) ** 2], axis=1)
    assert refine_peaks(points, peaks[:1], np.array([0]), centers, curved, patch_size=5,
                        fit_centres=9).tolist() == [_at(points, 0.5, 0.4)]
    assert refine_peaks(points, np.zeros(0, np.int64), np.zeros(0, np.int64), centers, scores, patch_size=9).size == 0


def test_detection_moves_each_peak_inside_its_patch(tiny_model, bank):
    cloud = make_cloud(600, seed=11)
    names = ["leg end", "nose"]
    opts = dict(model=tiny_model, text=bank, max_instances=3, min_probability=None)
    coarse = detect_keypoints(cloud, names, refine=False, **opts)
    fine = detect_keypoints(cloud, names, **opts)  # refine=True is zero-shot's default
    assert len(fine) == len(coarse) and coarse.info["on_patch_centres"] >= 0.5  # peaks sit on patch centres
    patches, _ = patch_embeddings(tiny_model, cloud)
    members = patches.member_idx[0].numpy()
    centres = patches.center_idx[0].numpy()
    for peak, kp in zip(coarse.indices, fine.indices):
        if peak in centres:
            assert kp in members[np.flatnonzero(centres == peak)[0]]  # moved inside its own patch only
    assert fine.info["on_patch_centres"] < coarse.info["on_patch_centres"] and fine.info["refine"] is True


def test_absent_names_follow_the_models_sigmoid(tiny_model, monkeypatch):
    cloud = make_cloud(500, seed=5)
    _, emb = patch_embeddings(tiny_model, cloud)
    here = emb[7]  # cosine 1 with patch 7
    rng = np.random.default_rng(0)
    elsewhere = rng.normal(size=emb.shape[1])
    elsewhere /= np.linalg.norm(elsewhere)
    best_elsewhere = float((emb @ elsewhere).max())
    scale = float(tiny_model.logit_scale(None).detach())
    # a bias that puts 0.5 between the two names' best logits: "here" is present, "elsewhere" absent
    monkeypatch.setattr(tiny_model, "logit_bias", -scale * (1.0 + best_elsewhere) / 2, raising=False)
    text = np.stack([here, elsewhere]).astype(np.float32)
    kps = detect_keypoints(cloud, ["here", "elsewhere"], model=tiny_model, text=text, min_probability=0.5)
    assert kps.absent == ["elsewhere"] and len(kps.of("elsewhere")) == 0 and len(kps.of("here")) >= 1
    expected = 1 / (1 + np.exp(-(scale * np.array([1.0, best_elsewhere]) + tiny_model.logit_bias)))
    np.testing.assert_allclose([kps.info["probability"][n] for n in ("here", "elsewhere")], expected, atol=1e-3)
    assert name_probability(tiny_model, np.array([0.0])) == pytest.approx(1 / (1 + np.exp(-tiny_model.logit_bias)))
    both = detect_keypoints(cloud, ["here", "elsewhere"], model=tiny_model, text=text, min_probability=None)
    assert both.absent == [] and len(both.of("elsewhere")) >= 1
    with pytest.raises(ValueError, match="min_probability"):
        detect_keypoints(cloud, ["here"], model=tiny_model, text=text[:1], min_probability=1.5)


def test_the_sigmoid_bias_travels_with_the_model(tiny_model, tmp_path):
    from patchalign3d.model.checkpoint import LIGHTNING_KEY, export_released, load_model

    ckpt = {"state_dict": {**{f"model.{k}": v for k, v in tiny_model.state_dict().items()},
                           "logit_bias": torch.tensor(-3.25)},
            LIGHTNING_KEY: {"config": tiny_model.config.to_dict(), "stage": 2}}
    torch.save(ckpt, tmp_path / "stage2.ckpt")
    from_lightning = load_model(tmp_path / "stage2.ckpt")
    assert from_lightning.logit_bias == -3.25
    exported = load_model(export_released(from_lightning, tmp_path / "m.pt"))
    assert exported.logit_bias == -3.25
    assert name_probability(exported, np.array([0.0]))[0] == pytest.approx(1 / (1 + np.exp(3.25)))
