"""StableKeypoints transplanted to 3D: selection rules from the authors' code and the fit/predict contract.

ubc-vision/StableKeypoints: ``unsupervised_keypoints/ptp_utils.py`` lines 115-159 (``furthest_point_sampling``:
the farthest pair of candidate peaks, then the candidate farthest from those chosen), lines 472-503 (the
attention softmax runs over the tokens, ``dim=-1`` of ``q kᵀ``), ``optimize.py`` lines 182-206 (MSE to a
Gaussian at the map's maximum) and ``keypoint_regressor.py`` lines 101-106 (the ``top_k`` most frequent
choices over the training images).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from patchalign3d.keypoints.discover.embeddings import EmbeddingKeypoints, farthest_peaks

SMALL = dict(candidates=12, top=6, steps=10, batch_shapes=2, points_per_step=256, augmentations=1, tta=1)


def test_farthest_peaks_follows_the_authors_order():
    # peaks on a line at 0, 1, 2, 10: the farthest pair is (0, 10); then 2 is farthest from both (2 > 1)
    peaks = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [10.0, 0, 0]])
    assert farthest_peaks(peaks, torch.arange(4), 3).tolist() == [0, 3, 2]
    # only among the candidates given
    assert farthest_peaks(peaks, torch.tensor([0, 1, 2]), 2).tolist() == [0, 2]


def test_maps_are_a_softmax_over_the_vectors():
    finder = EmbeddingKeypoints(None, k=1, candidates=2, top=2)
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    emb = torch.tensor([[10.0, 0.0], [0.0, 0.0]])
    maps = finder.maps(feats, emb)
    # point 0: softmax(10, 0); point 1: softmax(0, 0)
    assert maps[0, 0].item() == pytest.approx(1 / (1 + math.exp(-10)))
    assert maps[1].tolist() == pytest.approx([0.5, 0.5])


def test_fit_predict_contract(tiny_model, clouds, tmp_path):
    finder = EmbeddingKeypoints(tiny_model, k=3, seed=1, **SMALL).fit(clouds[:3])
    kps = finder.predict(clouds[3])
    assert kps.names == ["kp0", "kp1", "kp2"] and kps.labels.tolist() == [0, 1, 2]
    assert kps.field.shape == (len(clouds[3]), 3) and kps.mode == "discover"
    np.testing.assert_array_equal(kps.indices, kps.field.argmax(axis=0))
    np.testing.assert_allclose(kps.positions, clouds[3][kps.indices])
    # the same settings give the same vectors and slots; a saved finder predicts the same
    again = EmbeddingKeypoints(tiny_model, k=3, seed=1, **SMALL).fit(clouds[:3])
    assert again.selected.tolist() == finder.selected.tolist()
    loaded = EmbeddingKeypoints.load(finder.save(tmp_path / "finder.pt"), tiny_model)
    np.testing.assert_array_equal(loaded.predict(clouds[3]).indices, kps.indices)


def test_optimisation_lowers_the_losses(tiny_model, clouds):
    finder = EmbeddingKeypoints(tiny_model, k=3, seed=0, **{**SMALL, "steps": 50}).fit(clouds[:3])
    first, last = np.mean(finder.history[:10]), np.mean(finder.history[-10:])
    assert last < 0.8 * first


def test_bad_use_is_refused(tiny_model, clouds):
    with pytest.raises(ValueError, match="k <= top <= candidates"):
        EmbeddingKeypoints(tiny_model, k=20, candidates=8)
    with pytest.raises(ValueError, match="non-empty list"):
        EmbeddingKeypoints(tiny_model).fit([])
    with pytest.raises(RuntimeError, match="before fit"):
        EmbeddingKeypoints(tiny_model, k=2, **SMALL).predict(clouds[0])
    with pytest.raises(ValueError, match="not an EmbeddingKeypoints file"):
        EmbeddingKeypoints.load(__file__)
