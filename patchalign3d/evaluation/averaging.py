"""How per-part and per-shape IoUs become one figure, where publishers differ.

* mIoU / cIoU (:class:`~patchalign3d.evaluation.metrics.PartIoU`): per shape first, then over shapes (mIoU) or
  over categories of their shapes' mean (cIoU), as the release, COPS and the paper report.
* :func:`partslip_average`: PartSLIP++'s PartNetE figure (``zyc00/PartSLIP2``, ``eval/semantic_eval.py`` lines
  26-39): per part, the mean IoU over the shapes whose ground truth has that part; then the mean over the
  category's parts; then over categories.
* :func:`release_batch_ciou`: the released script's ShapeNetPart cIoU (``src/inference/eval.py`` lines 288-296
  of the release): each batch's per-category mean is appended to its category's list, and a category scores
  the mean of its batch means, so a category split across batches weights a batch holding one of its shapes as
  much as one holding fifteen. It therefore depends on the batch size and the loader's order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from patchalign3d.evaluation.metrics import IoUSummary

__all__ = ["PartSlipAverage", "partslip_average", "release_batch_ciou"]


@dataclass
class PartSlipAverage:
    """PartSLIP's averaging (percent): ``miou`` over categories; ``per_category`` the mean over each category's
    parts; ``per_part`` ``{category: {part: mean over the shapes holding it}}``."""

    miou: float
    per_category: dict[str, float] = field(default_factory=dict)
    per_part: dict[str, dict[str, float]] = field(default_factory=dict)


def partslip_average(summary: IoUSummary, shape_info: Callable[[int], tuple[str, Sequence[str]]]) -> PartSlipAverage:
    """PartSLIP++'s part-first average of an evaluation's part IoUs.

    Args:
        summary: the per-part rows of :class:`~patchalign3d.evaluation.metrics.PartIoU`; the rows whose part is
            present in the shape's ground truth are used (PartSLIP++ skips the others, ``semantic_eval.py``
            line 27), with their IoU as PartSLIP++ computes it (points of no part counted, lines 29-31),
            whatever the run's IoU convention and unlabelled rule.
        shape_info: shape index -> ``(category, part names)``: parts are matched by name within a category.

    A part that no evaluated shape of its category holds has no mean; it is left out of its category's average
    (PartSLIP++'s code would divide by zero there, which only a partial set of shapes can cause).
    """
    sums: dict[str, dict[str, list[float]]] = {}
    for (shape, part, _), present, iou in zip(summary.part_rows, summary.part_in_gt, summary.part_iou_partslip):
        if not present:
            continue
        category, names = shape_info(int(shape))
        sums.setdefault(category, {}).setdefault(names[int(part)], []).append(float(iou))
    per_part = {c: {p: float(np.mean(v)) for p, v in parts.items()} for c, parts in sums.items()}
    per_category = {c: float(np.mean(list(parts.values()))) for c, parts in per_part.items()}
    miou = float(np.mean(list(per_category.values()))) if per_category else math.nan
    return PartSlipAverage(miou, per_category, per_part)


def release_batch_ciou(
    categories: Sequence[int], ious: Sequence[float], positions: Sequence[int], batch_size: int
) -> float:
    """The release's cIoU: the mean over categories of the mean of each batch's category mean.

    Args:
        categories, ious: per shape, its category id and IoU (``nan``: not scored, as the release leaves a shape
            with no ground-truth part out of its batch's lists).
        positions: per shape, its position in the release's loader order (batch = position // batch_size).
        batch_size: the release's ``--batch_size`` (16 by default).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches: dict[tuple[int, int], list[float]] = {}
    for cat, iou, pos in zip(categories, ious, positions):
        if not math.isnan(iou):
            batches.setdefault((int(cat), int(pos) // batch_size), []).append(float(iou))
    per_cat: dict[int, list[float]] = {}
    for (cat, _), values in sorted(batches.items()):
        per_cat.setdefault(cat, []).append(float(np.mean(values)))
    return float(np.mean([np.mean(v) for v in per_cat.values()])) if per_cat else math.nan
