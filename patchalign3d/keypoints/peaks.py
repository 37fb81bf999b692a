"""Keypoints from score fields: geodesic peaks of a per-point field, then placed at point resolution.

A field interpolated from patch centres peaks on the centres (a point at a centre takes that patch's score
whole), so peaks alone can only land on the ~128 centres of a 2048-point cloud. :func:`refine_peaks` moves
each peak to the member of its patch with the highest positive saliency for the peak's name
(:func:`~patchalign3d.keypoints.scores.point_saliency`): the point whose position most makes the patch answer
to the name. A patch none of whose members has a positive saliency keeps its centre.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from patchalign3d.keypoints.geodesic import geodesic_nms
from patchalign3d.keypoints.scores import PointSaliency


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


def peak_patches(points: np.ndarray, indices: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """``(M,)`` the patch (row of ``centers``) whose centre is nearest each peak point."""
    if len(indices) == 0:
        return np.zeros(0, dtype=np.int64)
    d = ((points[indices][:, None, :] - points[centers][None, :, :]) ** 2).sum(-1)
    return d.argmin(axis=1).astype(np.int64)


def focus_on_peaks(num_patches: int, patches: np.ndarray, labels: np.ndarray, num_names: int) -> np.ndarray:
    """``(G, K)`` weights: 1 at each name's peak patches, 0 elsewhere (what :func:`point_saliency` differentiates)."""
    focus = np.zeros((num_patches, num_names), dtype=np.float32)
    focus[patches, labels] = 1.0
    return focus


def refine_peaks(indices: np.ndarray, labels: np.ndarray, patches: np.ndarray, saliency: PointSaliency) -> np.ndarray:
    """``(M,)`` refined point indices: each peak on a patch centre moves to its patch's member of highest
    positive saliency for its label (``saliency`` computed with :func:`focus_on_peaks`); without one it stays.
    A peak off the centres was already placed at point resolution by its field and stays too."""
    out = np.asarray(indices, dtype=np.int64).copy()
    for m, (g, k) in enumerate(zip(patches, labels)):
        if out[m] != saliency.centers[g]:
            continue
        s = saliency.member_saliency[g, :, k]
        best = int(np.argmax(s))
        if s[best] > 0:
            out[m] = saliency.members[g, best]
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
