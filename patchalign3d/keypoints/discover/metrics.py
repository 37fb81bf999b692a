"""How good keypoints nobody named are: each metric as its authors' code computes it, and a random baseline.

- **Dual alignment score** (DAS): SkeletonMerger's ``eval_keypointnet.py`` computes a forward score (each
  predicted keypoint takes the semantic id of its nearest annotated keypoint; the fraction of keypoint slots
  whose ids agree, averaged over every ordered pair of shapes, the pairs of a shape with itself included) and
  a backward score (each annotated keypoint takes the slot of its nearest prediction; per semantic id, the
  fraction of agreeing pairs over the shapes that have it, then the mean over ids). KeyPointDiffuser's code
  (``scripts/test/get_das.py``) reports their mean as DAS. Distances are squared Euclidean, so the scores do
  not depend on the frame the shapes are in, as long as predictions and annotations share it.
- **Keypoint correlation** (KeyPointDiffuser, ``scripts/test/get_correspondence.py``,
  ``keypoint_label_correlation``): each shape's points are scaled by one min and max over all their
  coordinates to ``[-1, 1]``; a keypoint farther than 0.05 from every labelled point is first pulled towards
  the nearest one until it is 0.05 away (``project_to_surface``: keypoints off the surface, such as convex
  combinations, still touch the part they hover over); keypoint ``k`` then "touches" part label ``l`` when a
  point of that label lies within 0.05 of it. Per keypoint slot, the label touched by the most shapes gives a
  fraction of shapes; the mean over slots is the correlation.
- **Regression error** (StableKeypoints, ``unsupervised_keypoints/keypoint_regressor.py`` and ``eval.py``):
  a linear map without bias from the K unsupervised keypoints to the annotated ones, fitted by least squares
  (``pinv(XᵀX) Xᵀ Y``) on training shapes in a frame centred on the frame's middle, one target keypoint at a
  time over the shapes where it is annotated (``return_regressor_visible``); on test shapes, the mean distance
  of the annotated keypoints to their regressed positions. StableKeypoints' frame is the image (coordinates
  divided by its size, minus 0.5); ours is each shape's bounding box: centred on its middle and divided by its
  diagonal, so the error is a fraction of the diagonal.

A random baseline (:func:`random_keypoints`) puts K keypoints on uniformly drawn points of each shape and goes
through the same protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: KeyPointDiffuser's radius for a keypoint to touch a labelled point, in the [-1, 1] frame.
CORRELATION_RADIUS = 0.05


@dataclass
class Annotated:
    """A shape's annotated keypoints: ``positions`` ``(M, 3)`` and one semantic id per keypoint (strings)."""

    positions: np.ndarray
    ids: list[str]

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        if len(self.ids) != len(self.positions):
            raise ValueError(f"{len(self.positions)} annotated keypoints but {len(self.ids)} semantic ids")


def side_ids(keypoints: Mapping[str, np.ndarray], diagonal: float, spread: float = 0.1) -> Annotated:
    """Semantic ids for named keypoints that come in several instances (four leg ends, two wheel centres).

    The instances of a name are told apart by the side of their common centre they lie on along each axis
    where they spread over more than ``spread`` of the shape's diagonal: a bed's leg ends become
    ``"leg end (x-, z+)"`` and so on, a bicycle's wheel centres ``"wheel centre (z-)"`` and ``"(z+)"``. On
    aligned shapes (the demo's are) the same id means the same place across a category, as KeypointNet's
    semantic ids do.
    """
    positions, ids = [], []
    for name, pts in keypoints.items():
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        if len(pts) == 1:
            positions.append(pts)
            ids.append(name)
            continue
        centre = pts.mean(axis=0)
        spread_axes = [a for a in range(3) if np.ptp(pts[:, a]) > spread * diagonal]
        for p in pts:
            sides = [f"{'xyz'[a]}{'+' if p[a] > centre[a] else '-'}" for a in spread_axes
                     if abs(p[a] - centre[a]) > spread * diagonal / 2]
            ids.append(f"{name} ({', '.join(sides)})" if sides else name)
        positions.append(pts)
    return Annotated(np.concatenate(positions) if positions else np.zeros((0, 3)), ids)


# -- dual alignment score ---------------------------------------------------------------------------------
def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` squared distances."""
    return ((np.asarray(a, np.float64)[:, None, :] - np.asarray(b, np.float64)[None, :, :]) ** 2).sum(-1)


def forward_alignment(predicted: Sequence[np.ndarray], annotated: Sequence[Annotated]) -> float:
    """SkeletonMerger ``fwd_alignment_scores``: agreement of the ids each slot lands on, over all shape pairs."""
    labels = [[ann.ids[j] for j in _nearest(kp, ann.positions).argmin(axis=1)]
              for kp, ann in zip(predicted, annotated) if len(ann.ids)]
    if not labels:
        return float("nan")
    codes = {s: i for i, s in enumerate(sorted({s for row in labels for s in row}))}
    preds = np.array([[codes[s] for s in row] for row in labels])  # (S, K)
    return float(np.mean([(pa == pb).mean() for pa in preds for pb in preds]))


def backward_alignment(predicted: Sequence[np.ndarray], annotated: Sequence[Annotated]) -> float:
    """SkeletonMerger ``bwd_alignment_scores``: per semantic id, agreement of the slot nearest to it."""
    slots: dict[str, list[int]] = {}
    for kp, ann in zip(predicted, annotated):
        if not len(ann.ids):
            continue
        for sem, j in zip(ann.ids, _nearest(kp, ann.positions).argmin(axis=0)):
            slots.setdefault(sem, []).append(int(j))
    if not slots:
        return float("nan")
    return float(np.mean([(np.array(v)[:, None] == np.array(v)[None, :]).mean() for v in slots.values()]))


def dual_alignment(predicted: Sequence[np.ndarray], annotated: Sequence[Annotated]) -> dict[str, float]:
    """``{"forward", "backward", "das"}`` over the shapes of one category (``predicted[s]``: ``(K, 3)``)."""
    fwd, bwd = forward_alignment(predicted, annotated), backward_alignment(predicted, annotated)
    return {"forward": fwd, "backward": bwd, "das": (fwd + bwd) / 2.0}


# -- keypoint correlation ---------------------------------------------------------------------------------
def unit_box_frame(points: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` over all coordinates, the scaling KeyPointDiffuser's evaluation applies to a cloud."""
    pts = np.asarray(points, dtype=np.float64)
    return float(pts.min()), float(pts.max())


def project_to_surface(keypoints: np.ndarray, points: np.ndarray, eps: float) -> np.ndarray:
    """``(K, 3)`` keypoints moved towards their nearest of ``(N, 3)`` points until at most ``eps`` from it
    (KeyPointDiffuser's ``project_to_surface``, with its ``1e-8`` added to the distance, so that a moved keypoint
    ends just inside ``eps``); keypoints already within ``eps`` stay."""
    kp = np.asarray(keypoints, dtype=np.float64)
    nearest = np.asarray(points, dtype=np.float64)[_nearest(kp, points).argmin(axis=1)]
    towards = nearest - kp
    dist = np.linalg.norm(towards, axis=1, keepdims=True) + 1e-8
    return kp + towards * np.where(dist > eps, (dist - eps) / dist, 0.0)


def keypoint_correlation(
    predicted: Sequence[np.ndarray],
    points: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    radius: float = CORRELATION_RADIUS,
) -> float:
    """KeyPointDiffuser's keypoint correlation over the shapes of one category.

    Args:
        predicted: per shape ``(K, 3)`` keypoints, same K and slot order on every shape.
        points: per shape ``(N, 3)`` labelled points, in the keypoints' frame.
        labels: per shape ``(N,)`` part labels, the same label meaning the same part across shapes.
        radius: in the frame where the shape's coordinates span ``[-1, 1]`` (one min and max over all axes).
    """
    if not predicted:
        return float("nan")
    num_labels = int(max(np.max(lab) for lab in labels)) + 1
    presence = []
    for kp, pts, lab in zip(predicted, points, labels):
        lo, hi = unit_box_frame(pts)
        scale = 2.0 / ((hi - lo) or 1.0)
        unit_pts = (np.asarray(pts, np.float64) - lo) * scale - 1.0
        d = np.sqrt(_nearest(project_to_surface((np.asarray(kp, np.float64) - lo) * scale - 1.0, unit_pts, radius),
                             unit_pts))
        present = np.zeros((len(kp), num_labels), dtype=bool)
        k_idx, p_idx = np.nonzero(d <= radius)
        present[k_idx, np.asarray(lab, dtype=np.int64)[p_idx]] = True
        presence.append(present)
    counts = np.stack(presence).sum(axis=0)  # (K, L): shapes in which slot k touches label l
    return float((counts.max(axis=1) / len(presence)).mean())


# -- regression error ------------------------------------------------------------------------------------
def box_frame(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre of the bounding box and its diagonal: the frame regression works in."""
    pts = np.asarray(points, dtype=np.float64)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return (lo + hi) / 2.0, float(np.linalg.norm(hi - lo)) or 1.0


@dataclass
class RegressionShape:
    """One shape for the regression protocol: its K keypoints and its annotations, in the shape's frame
    (``centre`` and ``diagonal`` from :func:`box_frame` of its points)."""

    keypoints: np.ndarray
    annotated: Annotated
    centre: np.ndarray
    diagonal: float

    def inputs(self) -> np.ndarray:
        return ((np.asarray(self.keypoints, np.float64) - self.centre) / self.diagonal).reshape(-1)

    def targets(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(len(ids), 3)`` normalised positions and ``(len(ids),)`` whether annotated (an id given twice
        in a shape takes its first instance)."""
        out, seen = np.zeros((len(ids), 3)), np.zeros(len(ids), dtype=bool)
        where = {}
        for j, sem in enumerate(self.annotated.ids):
            where.setdefault(sem, j)
        for i, sem in enumerate(ids):
            if sem in where:
                out[i] = (self.annotated.positions[where[sem]] - self.centre) / self.diagonal
                seen[i] = True
        return out, seen


def fit_regressor(train: Sequence[RegressionShape]) -> tuple[list[str], np.ndarray]:
    """Semantic ids and ``(3K, M, 3)`` weights: per id, least squares over the shapes that have it
    (StableKeypoints ``return_regressor_visible``: ``pinv(XᵀX) Xᵀ y``, no bias)."""
    ids = sorted({s for shape in train for s in shape.annotated.ids})
    x = np.stack([s.inputs() for s in train])  # (S, 3K)
    targets = [s.targets(ids) for s in train]
    y = np.stack([t[0] for t in targets])  # (S, M, 3)
    seen = np.stack([t[1] for t in targets])  # (S, M)
    weights = np.zeros((x.shape[1], len(ids), 3))
    for m in range(len(ids)):
        xs = x[seen[:, m]]
        weights[:, m] = np.linalg.pinv(xs.T @ xs) @ xs.T @ y[seen[:, m], m]
    return ids, weights


def regression_error(train: Sequence[RegressionShape], test: Sequence[RegressionShape]) -> float:
    """Mean over test shapes of the mean distance (fraction of the diagonal) from each annotated keypoint
    whose id the training shapes know to its regressed position (StableKeypoints ``eval.py``, the
    ``visible`` evaluation: the sum over visible keypoints divided by their number, per shape)."""
    if not train or not test:
        return float("nan")
    ids, weights = fit_regressor(train)
    per_shape = []
    for shape in test:
        target, seen = shape.targets(ids)
        if not seen.any():
            continue
        pred = np.einsum("i,imc->mc", shape.inputs(), weights)
        per_shape.append(float(np.linalg.norm(pred - target, axis=1)[seen].mean()))
    return float(np.mean(per_shape)) if per_shape else float("nan")


# -- the random baseline -----------------------------------------------------------------------------------
def random_keypoints(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``(k, 3)`` keypoints on uniformly drawn points of ``(N, 3)`` (without replacement when N >= k)."""
    pts = np.asarray(points)
    return pts[rng.choice(len(pts), size=k, replace=len(pts) < k)]
