"""Part-segmentation IoU under the three published conventions.

Per shape, with ``I_k`` / ``U_k`` the intersection / union of part ``k`` between prediction and ground
truth over the shape's ``K`` parts:

``release``   (PatchAlign3D release, PointNet++ style "present parts")
    mean of ``I_k / U_k`` over the parts present in the ground truth; a part only predicted is skipped.
``find3d``    (Find3D)
    mean over the parts present in the prediction or the ground truth (skipped only when absent from both).
``pointbert`` (Point-BERT / Point-MAE / PointNet's ``part_seg`` evaluation, also the release's FAUST score)
    mean over all ``K`` parts, a part absent from both scoring 1.
``partslip``  (PartSLIP / PartSLIP++ on PartNetE)
    the parts present in the ground truth, as ``release``, with unlabelled points counted by default; its
    headline figure averages per part first (:func:`~patchalign3d.evaluation.averaging.partslip_average`).

Unlabelled ground-truth points (label ``-1``) are either dropped (``unlabelled="ignore"``) or kept, so that
a part predicted on them counts as a false positive (``"count"``, what Find3D does on Objaverse, where it
scores every point). mIoU is the mean over shapes ("instance average"); cIoU the mean over categories of
their shapes' mean ("class average"). Figures are reported in percent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = [
    "CONVENTIONS",
    "Convention",
    "Unlabelled",
    "default_unlabelled",
    "part_counts",
    "part_ious",
    "shape_iou",
    "PartIoU",
    "IoUSummary",
]

Convention = Literal["release", "find3d", "pointbert", "partslip"]
Unlabelled = Literal["ignore", "count"]
CONVENTIONS: tuple[str, ...] = ("release", "find3d", "pointbert", "partslip")
# PartSLIP++ scores each part's mask over every point: a point of no part (-1) predicted as a part is in the
# union (eval/semantic_eval.py lines 30-31)
_DEFAULT_UNLABELLED: dict[str, str] = {
    "release": "ignore", "find3d": "count", "pointbert": "ignore", "partslip": "count",
}


def default_unlabelled(convention: str) -> str:
    """How each convention treats unlabelled ground-truth points by default."""
    _check_convention(convention)
    return _DEFAULT_UNLABELLED[convention]


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown IoU convention {convention!r}; expected one of {CONVENTIONS}")


def _as_long(x: Tensor | np.ndarray | Sequence[int], name: str) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer labels, got {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be one-dimensional (N,), got shape {tuple(t.shape)}")
    return t.long()


def part_counts(
    pred: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    num_parts: int,
    *,
    unlabelled: Unlabelled = "ignore",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-part intersection, union, ground-truth and prediction counts.

    Args:
        pred: ``(N,)`` predicted part indices in ``[-1, K)`` (``-1``: no part of this shape).
        target: ``(N,)`` ground-truth part indices in ``[-1, K)`` (``-1``: unlabelled).
        num_parts: ``K``.
        unlabelled: ``"ignore"`` drops points whose target is ``-1``; ``"count"`` keeps them, so that
            predictions there enlarge the union of the predicted part.

    Returns:
        ``(intersection, union, target_count, pred_count)``, each ``(K,)`` int64.
    """
    pred, target = _as_long(pred, "pred"), _as_long(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred has {pred.shape[0]} points but target has {target.shape[0]}")
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}")
    for name, t in (("pred", pred), ("target", target)):
        if t.numel() and (int(t.min()) < -1 or int(t.max()) >= num_parts):
            raise ValueError(
                f"{name} labels must lie in [-1, {num_parts - 1}], found [{int(t.min())}, {int(t.max())}]"
            )
    if unlabelled == "ignore":
        keep = target >= 0
        pred, target = pred[keep], target[keep]
    elif unlabelled != "count":
        raise ValueError(f"unlabelled must be 'ignore' or 'count', got {unlabelled!r}")
    n_target = torch.bincount(target[target >= 0], minlength=num_parts)
    n_pred = torch.bincount(pred[pred >= 0], minlength=num_parts)
    inter = torch.bincount(target[(pred == target) & (target >= 0)], minlength=num_parts)
    return inter, n_target + n_pred - inter, n_target, n_pred


def part_ious(
    pred: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    num_parts: int,
    convention: Convention = "release",
    *,
    unlabelled: Unlabelled | None = None,
    scored: Tensor | np.ndarray | Sequence[bool] | None = None,
) -> Tensor:
    """``(K,)`` float64 IoU of each part; ``nan`` where the convention skips the part.

    ``scored`` (``(K,)`` bool, default all): parts outside it are never scored (``nan``), while their points
    still count wherever they are predicted as another part (a part with no prompt, as in Find3D's loop over
    its prompts, ``model/evaluation/core.py`` line 83).
    """
    _check_convention(convention)
    inter, union, n_target, _ = part_counts(
        pred, target, num_parts, unlabelled=unlabelled or _DEFAULT_UNLABELLED[convention]
    )
    iou = inter.double() / union.clamp(min=1).double()
    nan = torch.full_like(iou, math.nan)
    if convention in ("release", "partslip"):
        iou = torch.where(n_target > 0, iou, nan)
    elif convention == "find3d":
        iou = torch.where(union > 0, iou, nan)
    else:
        iou = torch.where(union > 0, iou, torch.ones_like(iou))
    if scored is not None:
        keep = torch.as_tensor(np.asarray(scored, dtype=bool))
        if keep.shape != iou.shape:
            raise ValueError(f"scored must have one flag per part ({num_parts}), got shape {tuple(keep.shape)}")
        iou = torch.where(keep, iou, nan)
    return iou


def shape_iou(
    pred: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    num_parts: int,
    convention: Convention = "release",
    *,
    unlabelled: Unlabelled | None = None,
) -> float:
    """Mean of :func:`part_ious` over the parts that count (in [0, 1]); ``nan`` when none counts."""
    ious = part_ious(pred, target, num_parts, convention, unlabelled=unlabelled)
    counted = ious[~ious.isnan()]
    return float(counted.mean()) if counted.numel() else math.nan


@dataclass
class IoUSummary:
    """What :class:`PartIoU` computes. IoUs in percent; per-shape arrays sorted by shape index.

    Attributes:
        miou: mean over scored shapes (instance average).
        ciou: mean over categories of the category means (class average).
        per_category: ``{category: {"miou": %, "num_shapes": n}}`` for categories with a scored shape.
        shape_index, shape_category, shape_iou: ``(S,)`` arrays, one row per shape (iou in percent, nan =
            no part counted, e.g. a shape with no labelled point under ``release``).
        part_rows: ``(R, 3)`` float64 rows ``(shape index, part index, iou %)`` for every counted part.
        part_in_gt: ``(R,)`` bool, whether the row's part is present in the shape's ground truth (the rows
            PartSLIP's part average uses).
        part_iou_partslip: ``(R,)`` the row's IoU % as PartSLIP++ computes it whatever the run's rules: its
            points of no part (``-1``) counted (``eval/semantic_eval.py`` lines 29-31); ``nan`` off the ground truth.
    """

    convention: str
    miou: float
    ciou: float
    num_shapes: int
    num_scored: int
    per_category: dict[str, dict[str, float]] = field(default_factory=dict)
    shape_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    shape_category: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    shape_iou: np.ndarray = field(default_factory=lambda: np.zeros(0))
    part_rows: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    part_in_gt: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    part_iou_partslip: np.ndarray = field(default_factory=lambda: np.zeros(0))


class PartIoU(Metric):
    """Accumulates per-shape part IoUs and reduces them to mIoU / cIoU; syncs across processes.

    Shapes are keyed by their dataset index, so duplicates (a distributed sampler padding the last batch)
    count once.

    Args:
        categories: the category names, in a fixed order shared by every process.
        convention: ``"release"``, ``"find3d"`` or ``"pointbert"``.
        unlabelled: ``"ignore"`` / ``"count"``; ``None`` takes the convention's default.

    Example::

        metric = PartIoU(["Chair", "Table"], convention="release")
        metric.update(pred, target, num_parts=4, category="Chair", shape_index=0)
        summary = metric.compute()  # IoUSummary
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(
        self,
        categories: Sequence[str],
        convention: Convention = "release",
        unlabelled: Unlabelled | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _check_convention(convention)
        self.convention = convention
        self.unlabelled = unlabelled or _DEFAULT_UNLABELLED[convention]
        self.categories = list(categories)
        self._cat_index = {c: i for i, c in enumerate(self.categories)}
        for name in ("shape_index", "shape_category", "shape_iou", "part_shape", "part_index", "part_iou", "part_in_gt",
                     "part_iou_partslip"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        pred: Tensor | np.ndarray,
        target: Tensor | np.ndarray,
        num_parts: int,
        category: int | str,
        shape_index: int,
        scored: Tensor | np.ndarray | Sequence[bool] | None = None,
    ) -> None:
        """Score one shape: ``(N,)`` predicted and ground-truth part indices over its ``num_parts`` parts
        (``scored``: see :func:`part_ious`)."""
        cat = self._cat_index[category] if isinstance(category, str) else int(category)
        if not 0 <= cat < len(self.categories):
            raise ValueError(
                f"category {category!r} is not one of the {len(self.categories)} categories given"
            )
        ious = part_ious(pred, target, num_parts, self.convention, unlabelled=self.unlabelled, scored=scored)
        partslip = part_ious(pred, target, num_parts, "partslip", unlabelled="count", scored=scored)
        labels = _as_long(target, "target")
        in_gt = torch.bincount(labels[labels >= 0], minlength=num_parts)[:num_parts] > 0
        counted = ~ious.isnan()
        value = ious[counted].mean() if counted.any() else torch.tensor(math.nan, dtype=torch.float64)
        dev = self.device
        self.shape_index.append(torch.tensor([shape_index], dtype=torch.long, device=dev))
        self.shape_category.append(torch.tensor([cat], dtype=torch.long, device=dev))
        self.shape_iou.append(value.reshape(1).to(dev, torch.float64))
        idx = counted.nonzero().flatten()
        self.part_shape.append(torch.full((idx.numel(),), shape_index, dtype=torch.long, device=dev))
        self.part_index.append(idx.to(dev))
        self.part_iou.append(ious[idx].to(dev))
        self.part_in_gt.append(in_gt[idx].to(dev, torch.long))
        self.part_iou_partslip.append(partslip[idx].to(dev))

    def compute(self) -> IoUSummary:
        if not self.shape_index:
            return IoUSummary(self.convention, math.nan, math.nan, 0, 0)
        index = dim_zero_cat(self.shape_index).cpu().numpy()
        cats = dim_zero_cat(self.shape_category).cpu().numpy()
        ious = dim_zero_cat(self.shape_iou).cpu().double().numpy() * 100.0
        index, first = np.unique(index, return_index=True)  # sorted, duplicates dropped
        cats, ious = cats[first], ious[first]
        rows = (
            np.stack(
                [
                    dim_zero_cat(self.part_shape).cpu().double().numpy(),
                    dim_zero_cat(self.part_index).cpu().double().numpy(),
                    dim_zero_cat(self.part_iou).cpu().double().numpy() * 100.0,
                    dim_zero_cat(self.part_in_gt).cpu().double().numpy(),
                    dim_zero_cat(self.part_iou_partslip).cpu().double().numpy() * 100.0,
                ],
                axis=1,
            )
            if self.part_shape
            else np.zeros((0, 5))
        )
        if len(rows):  # drop the rows of duplicated shapes too
            _, keep = np.unique(rows[:, :2], axis=0, return_index=True)
            rows = rows[np.sort(keep)]
            rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
        rows, in_gt, partslip = rows[:, :3], rows[:, 3] > 0, rows[:, 4]
        scored = ~np.isnan(ious)
        per_cat: dict[str, dict[str, float]] = {}
        for c, name in enumerate(self.categories):
            sel = scored & (cats == c)
            if sel.any():
                per_cat[name] = {"miou": float(ious[sel].mean()), "num_shapes": int(sel.sum())}
        miou = float(ious[scored].mean()) if scored.any() else math.nan
        ciou = float(np.mean([v["miou"] for v in per_cat.values()])) if per_cat else math.nan
        return IoUSummary(
            self.convention, miou, ciou, int(len(index)), int(scored.sum()), per_cat, index, cats, ious, rows, in_gt,
            partslip,
        )
