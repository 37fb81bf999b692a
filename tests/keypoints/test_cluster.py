import numpy as np
import pytest
from sklearn.cluster import HDBSCAN

from patchalign3d.keypoints.cluster import densest_clusters, weighted_core_distances, weighted_hdbscan


def blobs(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 0.05, (30, 3)), rng.normal(1, 0.08, (20, 3)), rng.uniform(-1, 2, (10, 3))])


@pytest.mark.parametrize("min_samples", [3, 5, 10])
def test_equal_weights_are_plain_hdbscan(min_samples):
    for seed in range(3):
        x = blobs(seed)
        ours = weighted_hdbscan(x, np.full(len(x), 2.5), min_cluster_size=10, min_samples=min_samples)
        ref = HDBSCAN(min_cluster_size=10, min_samples=min_samples, allow_single_cluster=True, copy=True).fit(x).labels_
        np.testing.assert_array_equal(ours, ref)


def test_weighted_core_distance_by_hand():
    x = np.array([[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [6, 0, 0]])
    # mean weight 1: weights 0.5, 0.5, 2, 1
    core = weighted_core_distances(x, np.array([0.5, 0.5, 2.0, 1.0]), min_samples=2)
    # point 0: self 0.5, +point1 (d 1) 1.0, +point2 (d 3) 3.0 >= 2 -> 3
    # point 2: self 2.0 >= 2 -> 0;  point 3: self 1, +point 2 (d 3) -> 3;  point 1: 0.5, +0 (1) 1.0, +2 (2) -> 2
    np.testing.assert_allclose(core, [3.0, 2.0, 0.0, 3.0])


def test_weights_decide_which_cluster_is_densest():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 0.02, (40, 3)), rng.normal(1, 0.02, (15, 3))  # many light answers, fewer heavy ones
    x = np.concatenate([a, b])
    w = np.r_[np.full(40, 1.0), np.full(15, 4.0)]
    labels = weighted_hdbscan(x, w, min_cluster_size=10)
    centres, totals = densest_clusters(x, w, labels)
    assert len(centres) == 2
    np.testing.assert_allclose(totals, [60.0, 40.0])
    np.testing.assert_allclose(centres[0], b.mean(0), atol=1e-9)
    plain = densest_clusters(x, np.ones(len(x)), weighted_hdbscan(x, None, min_cluster_size=10))
    np.testing.assert_allclose(plain[0][0], a.mean(0), atol=1e-9)  # unweighted, the larger group wins
    light = np.r_[np.full(40, 1.0), np.full(15, 0.05)]  # light points need a wider ball: b turns to noise
    assert (weighted_hdbscan(x, light, min_cluster_size=10)[40:] == -1).all()


def test_weighted_centroid():
    x = np.array([[0.0, 0, 0], [1, 0, 0]])
    centres, totals = densest_clusters(x, np.array([1.0, 3.0]), np.array([0, 0]))
    np.testing.assert_allclose(centres, [[0.75, 0, 0]])
    assert densest_clusters(x, np.ones(2), np.array([-1, -1]))[0].shape == (0, 3)


def test_too_few_points_and_bad_weights():
    assert (weighted_hdbscan(np.zeros((5, 3)), None, min_cluster_size=10) == -1).all()
    assert weighted_hdbscan(np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="positive and finite"):
        weighted_hdbscan(blobs(0), -np.ones(60))
    with pytest.raises(ValueError, match="60 points but 3 weights"):
        weighted_hdbscan(blobs(0), np.ones(3))


def test_instances_merged_for_want_of_answers_give_no_keypoint_in_mid_air():
    """Four leg ends with 6 answers each (fewer than min_cluster_size 10, as with few views): HDBSCAN's
    single-cluster fallback merges answers of several ends, whose centroid lies in mid-air. That cluster
    is dropped; one leg end with 40 answers is kept."""
    from patchalign3d.keypoints.cluster import drop_hollow_clusters

    rng = np.random.default_rng(1)
    ends = np.array([[0.5, 0, 0], [-0.5, 0, 0], [0, 0, 0.5], [0, 0, -0.5]])
    x = np.concatenate([e + rng.normal(0, 0.01, (6, 3)) for e in ends])
    labels = weighted_hdbscan(x, None, min_cluster_size=10)
    assert set(labels.tolist()) == {-1, 0} and len({i // 6 for i in np.flatnonzero(labels == 0)}) > 1  # ends merged
    assert (drop_hollow_clusters(x, np.ones(len(x)), labels, max_gap=0.1) == -1).all()
    blob = ends[0] + rng.normal(0, 0.01, (40, 3))
    kept = weighted_hdbscan(blob, None, min_cluster_size=10)
    assert (kept == 0).any() and np.array_equal(drop_hollow_clusters(blob, np.ones(40), kept, max_gap=0.1), kept)
