"""The protocol every unsupervised method goes through, per category, and its random baseline.

A category comes as training shapes and test shapes. The method may look at the training shapes without
their labels (StableKeypoints optimises its embeddings on them; a diffuser trained elsewhere ignores them).
Its keypoints on the training shapes and their annotations fit the regressor (StableKeypoints' protocol);
the test shapes give DAS, keypoint correlation (when the shapes have part labels) and regression error. The
random baseline puts K keypoints on uniformly drawn points of every shape and goes through the same steps;
the control (:func:`fixed_positions_method`) knows nothing of a shape but its alignment. On aligned shapes
the control scores about as well as the methods: a figure above random is evidence of a method only where it
is also above the control. Split figures are means over categories.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from patchalign3d.keypoints.discover import metrics as M
from patchalign3d.keypoints.discover.augment import model_frame
from patchalign3d.keypoints.discover.shapes import LabelledShape
from patchalign3d.model.grouping import farthest_point_sample

#: What a split reports for a method (and, with ``_random``, for the baseline).
FIGURES = ("das", "forward", "backward", "correlation", "regression_error")

#: ``(train shapes) -> (shape -> (K, 3) keypoints)``: fit on unlabelled training shapes, then predict.
Method = Callable[[Sequence[LabelledShape]], Callable[[LabelledShape], np.ndarray]]


@dataclass
class CategoryTask:
    """Training and test shapes of one category."""

    category: str
    train: list[LabelledShape]
    test: list[LabelledShape]


def _regression_shapes(keypoints: Sequence[np.ndarray], shapes: Sequence[LabelledShape]) -> list[M.RegressionShape]:
    return [M.RegressionShape(kp, s.annotated, *M.box_frame(s.points)) for kp, s in zip(keypoints, shapes)]


def score(task: CategoryTask, train_kps: Sequence[np.ndarray], test_kps: Sequence[np.ndarray]) -> dict[str, float]:
    """Every figure of one category from keypoints on its training and test shapes."""
    annotated = [s.annotated for s in task.test]
    out = M.dual_alignment(test_kps, annotated)
    labelled = [i for i, s in enumerate(task.test) if (s.part_labels >= 0).any()]
    out["correlation"] = M.keypoint_correlation(
        [test_kps[i] for i in labelled], [task.test[i].points[task.test[i].part_labels >= 0] for i in labelled],
        [task.test[i].part_labels[task.test[i].part_labels >= 0] for i in labelled]) if labelled else float("nan")
    out["regression_error"] = M.regression_error(_regression_shapes(train_kps, task.train),
                                                 _regression_shapes(test_kps, task.test))
    return out


def score_random(task: CategoryTask, k: int, seed: int = 0) -> dict[str, float]:
    """The figures of K uniformly drawn surface points per shape (seeded by ``seed`` and the category)."""
    rng = np.random.default_rng([seed, sum(map(ord, task.category))])
    train = [M.random_keypoints(s.points, k, rng) for s in task.train]
    test = [M.random_keypoints(s.points, k, rng) for s in task.test]
    return score(task, train, test)


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return round(float(np.mean(finite)), 4) if finite else None


def _rounded(d: Mapping[str, float]) -> dict[str, float | None]:
    return {key: None if v is None or math.isnan(v) else round(float(v), 4) for key, v in d.items()}


def evaluate_method(tasks: Sequence[CategoryTask], method: Method, k: int, *, seed: int = 0,
                    keep_predictions: bool = False) -> dict[str, Any]:
    """Run ``method`` on every category; returns split figures (means over categories) beside the random
    baseline's (``<figure>_random``) and the no-model control's (``<figure>_control``), ``per_category``,
    shape counts and times.

    With ``keep_predictions`` the test keypoints come back too (``predictions``: ``{category: [(K, 3)]}``),
    for pictures.
    """
    per_category, predictions, fit_s, predict_s, shapes = {}, {}, 0.0, 0.0, 0
    for task in tasks:
        t = time.perf_counter()
        predict = method(task.train)
        fit_s += time.perf_counter() - t
        t = time.perf_counter()
        train_kps = [predict(s) for s in task.train]
        test_kps = [predict(s) for s in task.test]
        predict_s += time.perf_counter() - t
        shapes += len(task.train) + len(task.test)
        mine, rand = score(task, train_kps, test_kps), score_random(task, k, seed)
        fixed = fixed_positions_method(k)(task.train)
        control = score(task, [fixed(s) for s in task.train], [fixed(s) for s in task.test])
        per_category[task.category] = {**_rounded(mine), **{f"{f}_random": v for f, v in _rounded(rand).items()},
                                       **{f"{f}_control": v for f, v in _rounded(control).items()},
                                       "train": len(task.train), "test": len(task.test)}
        if keep_predictions:
            predictions[task.category] = test_kps
    report: dict[str, Any] = {}
    for f in FIGURES:
        report[f] = _mean([c[f] for c in per_category.values()])
        report[f"{f}_random"] = _mean([c[f"{f}_random"] for c in per_category.values()])
        report[f"{f}_control"] = _mean([c[f"{f}_control"] for c in per_category.values()])
    report.update({"k": k, "categories": sorted(per_category), "per_category": per_category,
                   "fit_seconds": round(fit_s, 2), "predict_seconds_per_shape": round(predict_s / max(shapes, 1), 4)})
    if keep_predictions:
        report["predictions"] = predictions
    return report


def embeddings_method(model: Any, k: int, **options: Any) -> Method:
    """:class:`EmbeddingKeypoints` fitted on each category's training shapes."""
    from patchalign3d.keypoints.discover.embeddings import EmbeddingKeypoints

    def fit(train: Sequence[LabelledShape]) -> Callable[[LabelledShape], np.ndarray]:
        finder = EmbeddingKeypoints(model, k, **options).fit([s.points for s in train])
        return lambda shape: finder.predict(shape.points).positions

    return fit


def diffuser_method(diffuser: Any) -> Method:
    """A trained :class:`KeyPointDiffuser`; the training shapes only fit the regressor."""
    return lambda train: (lambda shape: diffuser.predict(shape.points).positions)


def fixed_positions_method(k: int) -> Method:
    """A control that knows nothing of the shapes but their alignment: K farthest-point samples of the first
    training shape (centred on its centroid, unit max radius) are fixed positions, and a shape's keypoints are
    its points nearest to them in the same frame. What it scores is what alignment alone gives."""

    def fit(train: Sequence[LabelledShape]) -> Callable[[LabelledShape], np.ndarray]:
        ref = model_frame(train[0].points)[0]
        anchors = ref[farthest_point_sample(torch.from_numpy(ref)[None], k)[0].numpy()]

        def predict(shape: LabelledShape) -> np.ndarray:
            frame = model_frame(shape.points)[0]
            return shape.points[((frame[None] - anchors[:, None]) ** 2).sum(-1).argmin(axis=1)]

        return predict

    return fit
