import numpy as np
import pytest

from patchalign3d.keypoints.geodesic import geodesic_distances, geodesic_nms, knn_graph, local_maxima


def line(n: int, step: float) -> np.ndarray:
    return np.c_[np.arange(n) * step, np.zeros(n), np.zeros(n)]


def test_distances_along_a_bent_path_hand_computed():
    # an L: 0 -> 1 -> 2 along x, then up along y; with 1 neighbour each way the path is forced
    pts = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [2, 1.5, 0], [2, 3, 0]], float)
    d = geodesic_distances(pts, k=1)
    assert d[0, 4] == pytest.approx(1 + 1 + 1.5 + 1.5)
    assert d[4, 0] == pytest.approx(5.0)
    np.testing.assert_allclose(d, d.T)
    np.testing.assert_allclose(np.diag(d), 0)


def test_benchmark_quirk_unreachable_is_zero_and_duplicates_are_joined():
    pts = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0], [5, 0, 0], [6, 0, 0]], float)
    g = knn_graph(pts, k=1)
    d = geodesic_distances(pts, graph=g)
    assert d[0, 3] == 0.0 and d[2, 4] == 0.0  # other component: 0, as sklearn's graph_shortest_path returns
    assert d[1, 2] == pytest.approx(1.0)  # point 1 reaches 2 only through its zero-length edge to point 0
    assert np.isinf(geodesic_distances(pts, [0], graph=g, unreachable=np.inf)[0, 3])


def test_rows_for_sources_and_limit():
    pts = line(30, 0.1)
    full = geodesic_distances(pts)
    np.testing.assert_allclose(geodesic_distances(pts, [3, 7]), full[[3, 7]])
    near = geodesic_distances(pts, [0], limit=0.25, unreachable=np.inf)[0]
    assert np.isfinite(near).sum() == 3  # 0, 0.1, 0.2


def test_local_maxima_and_nms_on_a_line():
    pts = line(41, 0.05)
    x = pts[:, 0]
    scores = np.exp(-((x - 0.5) ** 2) / 0.01) + 0.8 * np.exp(-((x - 1.5) ** 2) / 0.01)
    g = knn_graph(pts, k=2)
    assert list(local_maxima(scores, g)) == [10, 30]
    assert list(geodesic_nms(scores, g, radius=0.3)) == [10, 30]
    assert list(geodesic_nms(scores, g, radius=1.2)) == [10]  # the second peak lies within 1.0
    assert list(geodesic_nms(scores, g, radius=0.3, min_score=0.9)) == [10]
    assert list(geodesic_nms(scores, g, radius=0.3, max_peaks=1)) == [10]


def test_nms_never_suppresses_across_components():
    pts = np.concatenate([line(10, 0.01), line(10, 0.01) + [0.05, 0, 0]])  # two overlapping-x, not joined
    pts[10:, 1] = 5.0
    scores = np.r_[np.linspace(0, 1, 10), np.linspace(0, 0.9, 10)]
    g = knn_graph(pts, k=2)
    assert set(geodesic_nms(scores, g, radius=100.0)) == {9, 19}


def test_bad_points():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        knn_graph(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        knn_graph(np.zeros((1, 3)))
