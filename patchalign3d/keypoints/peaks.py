"""Keypoints from score fields: geodesic peaks of a per-point field, then placed at point resolution.

A field interpolated from patch centres peaks on the centres (a point at a centre takes that patch's score
whole), so peaks alone can only land on the ~128 centres of a 2048-point cloud. :func:`refine_peaks` fits a
plane to the name's scores at the patch centres nearest each peak and moves the peak, inside its patch, to the
member where that plane is highest: the field rises towards the keypoint (a leg end's score rises towards the
tip) and the peak follows it to the edge of its patch. A peak whose plane is flat stays where it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from patchalign3d.keypoints.geodesic import geodesic_nms

#: Patch centres whose scores a peak's plane is fitted to: the nearest ones to the peak, its own included (chosen
#: on the demo's validation shapes, BENCHMARKS.md, "Point resolution").
FIT_CENTRES = 12


def pick_peaks(
    field: np.ndarray,
    graph,
    radius: float,
    *,
    min_relative_score: float = 0.9,
    max_instances: int | Sequence[int | None] | None = None,
    present: Sequence[bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of each column of a ``(N, K)`` field: ``indices`` and ``labels`` ``(M,)``, best first per name.

    Args:
        graph: the cloud's :func:`~patchalign3d.keypoints.geodesic.knn_graph`.
        radius: geodesic suppression radius, in the points' units.
        min_relative_score: a peak must reach ``min + r * (max - min)`` of its column.
        max_instances: at most this many per name (one number, or one per column; None: no limit).
        present: ``(K,)`` False for names found absent: they get no keypoint.
    """
    if not 0.0 <= min_relative_score <= 1.0:
        raise ValueError(f"min_relative_score must lie in [0, 1], got {min_relative_score}")
    k_names = field.shape[1]
    limits = list(max_instances) if isinstance(max_instances, Sequence) else [max_instances] * k_names
    indices, labels = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for k in range(k_names):
        if present is not None and not present[k]:
            continue
        f = field[:, k]
        lo, hi = float(f.min()), float(f.max())
        peaks = geodesic_nms(f, graph, radius, min_score=lo + min_relative_score * (hi - lo), max_peaks=limits[k])
        indices.append(peaks)
        labels.append(np.full(len(peaks), k, dtype=np.int64))
    return np.concatenate(indices), np.concatenate(labels)


def refine_peaks(
    points: np.ndarray,
    indices: np.ndarray,
    labels: np.ndarray,
    centers: np.ndarray,
    centre_scores: np.ndarray,
    *,
    patch_size: int,
    fit_centres: int = FIT_CENTRES,
) -> np.ndarray:
    """``(M,)`` peaks placed at point resolution (module docstring).

    Args:
        points: ``(N, 3)`` the cloud.
        indices, labels: ``(M,)`` each peak's point and name.
        centers: ``(G,)`` the patch centres' indices in ``points``.
        centre_scores: ``(G, K)`` each name's score at each patch centre.
        patch_size: points per patch: a peak's patch is the ``patch_size`` points nearest it (the model's kNN
            grouping, exactly so for a peak on a centre).
        fit_centres: how many of the centres nearest the peak the plane is fitted to.
    """
    out = np.asarray(indices, dtype=np.int64).copy()
    if len(out) == 0:
        return out
    scores = np.asarray(centre_scores, dtype=np.float64)
    tree, centre_tree = cKDTree(points), cKDTree(points[centers])
    fit, size = min(fit_centres, len(centers)), min(patch_size, len(points))
    for m, (i, k) in enumerate(zip(out.tolist(), np.asarray(labels).tolist())):
        here = np.asarray(points[i], dtype=np.float64)
        near = np.atleast_1d(centre_tree.query(here, fit)[1])
        design = np.c_[np.ones(len(near)), points[centers[near]] - here]
        slope = np.linalg.lstsq(design, scores[near, k], rcond=None)[0][1:]
        members = np.atleast_1d(tree.query(here, size)[1])
        rise = (points[members] - here) @ slope
        best = int(np.argmax(rise))
        if rise[best] > 1e-9 * (np.abs(scores[near, k]).max() + 1e-12):  # a flat plane: stay
            out[m] = members[best]
    return out


def dedupe(indices: np.ndarray, labels: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Drop repeated ``(index, label)`` pairs (two peaks of a name refined to one point), first kept."""
    seen, keep = set(), []
    for m, pair in enumerate(zip(indices.tolist(), labels.tolist())):
        if pair not in seen:
            seen.add(pair)
            keep.append(m)
    keep = np.asarray(keep, dtype=np.int64)
    return (indices[keep], labels[keep], *(a[keep] for a in arrays))


def share_on_centers(indices: np.ndarray, centers: np.ndarray) -> float:
    """Fraction of keypoints ``(M,)`` that sit exactly on a patch centre (NaN for none)."""
    if len(indices) == 0:
        return float("nan")
    return float(np.isin(indices, centers).mean())
