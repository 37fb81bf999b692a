"""Geodesic distances on a point cloud, as the KeypointNet benchmark defines them, and geodesic peak picking.

The benchmark (``benchmark_scripts/utils.py::gen_geo_dists`` of the KeypointNet repository) builds the
20-nearest-neighbour graph of the 2048 stored points (edges weighted by Euclidean length, the point itself
excluded), treats it as undirected and takes shortest-path lengths (scikit-learn's ``graph_shortest_path``,
Dijkstra for a graph this sparse). That function returns 0, not infinity, between points the graph does not
connect, and the metric inherits it: a prediction on another connected component counts as *at* every
ground-truth keypoint there. :func:`geodesic_distances` reproduces this with ``unreachable=0.0``; peak
picking uses ``unreachable=inf``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

#: Neighbours per point in the benchmark's graph.
BENCHMARK_NEIGHBORS = 20


def knn_graph(points: np.ndarray, k: int = BENCHMARK_NEIGHBORS) -> csr_matrix:
    """The ``(N, N)`` sparse graph joining each point to its ``k`` nearest others, weighted by distance.

    Duplicate points are joined by explicit zero-length edges (kept, as in the benchmark).
    """
    from sklearn.neighbors import kneighbors_graph

    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {points.shape}")
    if len(points) < 2:
        raise ValueError(f"geodesics need at least 2 points, got {len(points)}")
    return kneighbors_graph(points, min(k, len(points) - 1), mode="distance", include_self=False)


def geodesic_distances(
    points: np.ndarray | None,
    sources: Sequence[int] | np.ndarray | None = None,
    *,
    graph: csr_matrix | None = None,
    k: int = BENCHMARK_NEIGHBORS,
    unreachable: float = 0.0,
    limit: float = np.inf,
) -> np.ndarray:
    """Shortest-path lengths on the undirected kNN graph.

    Args:
        points: ``(N, 3)`` (ignored when ``graph`` is given).
        sources: rows to compute (default all N: an ``(N, N)`` matrix, 32 MB at N = 2048).
        graph: a precomputed :func:`knn_graph`.
        k: neighbours per point.
        unreachable: the value between unconnected points; 0.0 is the benchmark's.
        limit: stop searching beyond this length (those entries become ``unreachable`` too).

    Returns:
        ``(S, N)`` float64, row ``i`` from ``sources[i]``.
    """
    graph = knn_graph(points, k) if graph is None else graph
    idx = np.arange(graph.shape[0]) if sources is None else np.asarray(sources, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        return np.zeros((0, graph.shape[0]))
    dist = dijkstra(graph, directed=False, indices=idx, limit=limit)
    dist[np.isinf(dist)] = unreachable
    return dist


def local_maxima(scores: np.ndarray, graph: csr_matrix) -> np.ndarray:
    """Indices of points whose score is at least every graph neighbour's (either direction), best first.

    A neighbour beats a point only by more than a millionth of the point's own score: a cosine of exactly 1
    computed as 0.9999999 must not lose to a neighbour's 1.0000001 (float32 rounding; such ties are left to
    the geodesic suppression).
    """
    sym = graph.maximum(graph.T).tocsr()
    rows = np.repeat(np.arange(sym.shape[0]), np.diff(sym.indptr))
    beaten = np.zeros(len(scores), dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    np.logical_or.at(beaten, rows, scores[sym.indices] > scores[rows] + 1e-6 * np.abs(scores[rows]))
    peaks = np.flatnonzero(~beaten)
    return peaks[np.argsort(-scores[peaks], kind="stable")]


def geodesic_nms(
    scores: np.ndarray,
    graph: csr_matrix,
    radius: float,
    *,
    min_score: float = -np.inf,
    max_peaks: int | None = None,
) -> np.ndarray:
    """Greedy non-maximum suppression of a per-point score field along the surface.

    Local maxima are taken best first; one is kept unless a kept peak lies within geodesic ``radius`` (points
    the graph does not connect never suppress each other).

    Args:
        scores: ``(N,)``.
        graph: the cloud's :func:`knn_graph`.
        radius: suppression radius, in the points' units.
        min_score: peaks below it are dropped.
        max_peaks: keep at most this many.

    Returns:
        Kept point indices, best first.
    """
    scores = np.asarray(scores, dtype=np.float64)
    kept: list[int] = []
    suppressed = np.zeros(len(scores), dtype=bool)
    for i in local_maxima(scores, graph):
        if scores[i] < min_score or (max_peaks is not None and len(kept) >= max_peaks):
            break
        if suppressed[i]:
            continue
        kept.append(int(i))
        near = dijkstra(graph, directed=False, indices=int(i), limit=radius)
        suppressed |= np.isfinite(near)
    return np.asarray(kept, dtype=np.int64)
