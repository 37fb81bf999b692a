"""Weighted HDBSCAN: density clustering of 3D candidates that carry weights.

Neither scikit-learn's ``HDBSCAN`` nor the ``hdbscan`` package takes sample weights (``fit(X)`` only). The
weights enter HDBSCAN where density does, in the core distance: a point's core distance is the radius of the
smallest ball around it holding ``min_samples`` units of weight (weights rescaled to mean 1, the point itself
included). With equal weights that is exactly HDBSCAN's k-th-neighbour distance. The mutual reachability
distances ``max(core_a, core_b, |a - b|)`` built from these core distances then go to scikit-learn's HDBSCAN
as a precomputed metric with ``min_samples=1`` (so it adds no core distance of its own), which builds the
hierarchy, condenses it with ``min_cluster_size`` (counted in points) and selects clusters by excess of mass.
"""

from __future__ import annotations

import numpy as np


def weighted_core_distances(points: np.ndarray, weights: np.ndarray, min_samples: int) -> np.ndarray:
    """``(N,)`` radius at which each point's ball holds ``min_samples`` units of (mean-1) weight."""
    d = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    order = np.argsort(d, axis=1, kind="stable")
    w = weights / weights.mean()
    cum = np.cumsum(w[order], axis=1)
    # first neighbour (self first, distance 0) at which the cumulative weight reaches min_samples
    k = np.minimum((cum < min_samples - 1e-9).sum(axis=1), len(points) - 1)
    return np.take_along_axis(d, order, axis=1)[np.arange(len(points)), k]


def mutual_reachability(points: np.ndarray, core: np.ndarray) -> np.ndarray:
    """``(N, N)`` ``max(core_a, core_b, |a - b|)`` with a zero diagonal."""
    d = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    m = np.maximum(d, np.maximum(core[:, None], core[None, :]))
    np.fill_diagonal(m, 0.0)
    return m


def weighted_hdbscan(
    points: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    min_cluster_size: int = 10,
    min_samples: int | None = None,
    allow_single_cluster: bool = True,
) -> np.ndarray:
    """Cluster labels ``(N,)`` (``-1`` noise) of ``(N, D)`` points with ``(N,)`` positive weights.

    Args:
        min_cluster_size: HDBSCAN's smallest cluster, in points (ZeroKey: 10).
        min_samples: weight a core ball must hold (default ``min_cluster_size``, as HDBSCAN's default).
        allow_single_cluster: keep one cluster when the candidates form only one (the usual case when every
            view points at the same spot); HDBSCAN's default would call them all noise.
    """
    from sklearn.cluster import HDBSCAN

    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    weights = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if weights.shape != (n,):
        raise ValueError(f"{n} points but {weights.shape[0]} weights")
    if n and not (np.isfinite(weights).all() and (weights > 0).all()):
        raise ValueError("weights must be positive and finite")
    if n < max(min_cluster_size, 2):
        return np.full(n, -1, dtype=np.int64)
    core = weighted_core_distances(points, weights, min_samples or min_cluster_size)
    model = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=1, metric="precomputed",
                    allow_single_cluster=allow_single_cluster, copy=True)
    return model.fit(mutual_reachability(points, core)).labels_.astype(np.int64)


def densest_clusters(points: np.ndarray, weights: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted centroid and total weight of each cluster, heaviest first: ``(C, D)`` and ``(C,)``."""
    ids = [c for c in np.unique(labels) if c >= 0]
    if not ids:
        return np.zeros((0, points.shape[1])), np.zeros(0)
    totals = np.array([weights[labels == c].sum() for c in ids])
    centres = np.array([np.average(points[labels == c], axis=0, weights=weights[labels == c]) for c in ids])
    order = np.argsort(-totals, kind="stable")
    return centres[order], totals[order]


def drop_hollow_clusters(points: np.ndarray, weights: np.ndarray, labels: np.ndarray, max_gap: float) -> np.ndarray:
    """``labels`` with every hollow cluster turned to noise (``-1``): one whose weighted centroid is farther than
    ``max_gap`` (in the points' units) from every member.

    That centroid would be a keypoint in mid-air: several instances merged into one cluster because none got
    ``min_cluster_size`` answers of its own (few views: HDBSCAN's single-cluster fallback then takes them all),
    or a ring. Answers around one spot, even spread over the faces of a corner, keep their centroid among them.
    """
    out = np.asarray(labels).copy()
    for c in np.unique(out[out >= 0]):
        member = out == c
        centre = np.average(points[member], axis=0, weights=weights[member])
        if np.linalg.norm(points[member] - centre, axis=1).min() > max_gap:
            out[member] = -1
    return out
