"""Keypoint IoU at geodesic thresholds, exactly as the KeypointNet benchmark code defines it.

``benchmark_scripts/metrics.py::eval_det_cls_iou`` of the KeypointNet repository, per category, summed over
its shapes: a predicted keypoint is a false positive when every ground-truth keypoint of its shape is farther
than the threshold (geodesically, :mod:`patchalign3d.keypoints.geodesic`); a ground-truth keypoint is a false
negative when every prediction is farther; ``IoU = (n_gt - FN) / max(n_gt + FP, eps)``. Thresholds are
``0.01 * i`` for ``i = 0..10`` (the benchmark's loop) and the comparison is strict (``> threshold``), so at
0.00 only exact hits count. Ground-truth keypoints are the distinct annotated point indices of a shape (the
benchmark goes through a binary per-point label); predictions are taken as given, so a repeated index is
counted twice, as in ``eval_det_cls_iou``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from patchalign3d.keypoints.geodesic import geodesic_distances, knn_graph

#: The benchmark's thresholds, 0.00 ... 0.10.
THRESHOLDS: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(11))


def count_errors(
    pred_to_gt: np.ndarray, gt_to_pred: np.ndarray, thresholds: Sequence[float] = THRESHOLDS
) -> tuple[np.ndarray, np.ndarray]:
    """False positives and false negatives of one shape at each threshold.

    Args:
        pred_to_gt: ``(P, G)`` geodesic distance from each prediction to each ground-truth keypoint.
        gt_to_pred: ``(G, P)`` the other way (equal to the transpose up to rounding; the benchmark reads both).

    Returns:
        ``fp`` and ``fn``, each ``(T,)`` int64.
    """
    t = np.asarray(thresholds, dtype=np.float64)[:, None, None]
    fp = np.all(pred_to_gt[None] > t, axis=-1).sum(axis=-1)
    fn = np.all(gt_to_pred[None] > t, axis=-1).sum(axis=-1)
    return fp.astype(np.int64), fn.astype(np.int64)


def iou_from_counts(num_gt: int, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """``(n_gt - FN) / max(n_gt + FP, eps)`` per threshold."""
    return (num_gt - np.asarray(fn, np.float64)) / np.maximum(num_gt + np.asarray(fp, np.float64), np.finfo(np.float64).eps)


def shape_errors(
    points: np.ndarray,
    pred: Sequence[int] | np.ndarray,
    gt: Sequence[int] | np.ndarray,
    thresholds: Sequence[float] = THRESHOLDS,
    *,
    graph=None,
) -> tuple[np.ndarray, np.ndarray]:
    """``fp``, ``fn`` per threshold for one shape: point indices ``pred`` and ``gt`` into ``points`` (N, 3)."""
    pred = np.asarray(pred, dtype=np.int64).reshape(-1)
    gt = np.asarray(gt, dtype=np.int64).reshape(-1)
    sources = np.unique(np.concatenate([pred, gt]))
    dist = geodesic_distances(points, sources, graph=graph if graph is not None else knn_graph(points))
    row = {int(s): i for i, s in enumerate(sources)}
    pred_rows = dist[[row[int(i)] for i in pred]] if len(pred) else np.zeros((0, len(points)))
    gt_rows = dist[[row[int(i)] for i in gt]] if len(gt) else np.zeros((0, len(points)))
    return count_errors(pred_rows[:, gt], gt_rows[:, pred], thresholds)


@dataclass
class KeypointIoU:
    """Accumulates the benchmark's counts per category and gives IoU per category and their mean.

    >>> metric = KeypointIoU()
    >>> metric.update("chair", points, pred_indices, gt_indices)
    >>> metric.compute()["mean"]      # (T,) over categories
    """

    thresholds: tuple[float, ...] = THRESHOLDS
    num_gt: dict[str, int] = field(default_factory=dict)
    fp: dict[str, np.ndarray] = field(default_factory=dict)
    fn: dict[str, np.ndarray] = field(default_factory=dict)
    num_shapes: dict[str, int] = field(default_factory=dict)

    def update(self, category: str, points: np.ndarray, pred, gt, *, graph=None) -> tuple[np.ndarray, np.ndarray]:
        """Add one shape; ``gt`` is deduplicated (the benchmark's binary labels), ``pred`` is not."""
        gt = np.unique(np.asarray(gt, dtype=np.int64))
        fp, fn = shape_errors(points, pred, gt, self.thresholds, graph=graph)
        zero = np.zeros(len(self.thresholds), np.int64)
        self.num_gt[category] = self.num_gt.get(category, 0) + len(gt)
        self.fp[category] = self.fp.get(category, zero) + fp
        self.fn[category] = self.fn.get(category, zero) + fn
        self.num_shapes[category] = self.num_shapes.get(category, 0) + 1
        return fp, fn

    def compute(self) -> dict:
        """``{"per_category": {cat: (T,) IoU}, "mean": (T,) mean over categories, "thresholds": (T,)}``."""
        per = {c: iou_from_counts(self.num_gt[c], self.fp[c], self.fn[c]) for c in self.num_gt}
        mean = np.mean(list(per.values()), axis=0) if per else np.full(len(self.thresholds), np.nan)
        return {"per_category": per, "mean": mean, "thresholds": np.asarray(self.thresholds)}
