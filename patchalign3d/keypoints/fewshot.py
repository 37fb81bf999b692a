"""Few-shot keypoints: features at the annotated points of k shapes, transferred to a new shape by matching.

``KeypointPrototypes.fit(shapes, annotations)`` reads the per-point features of each annotated shape
(:func:`patchalign3d.api.point_features`: encoder tokens or text-space embeddings, spread from patches to
points) at its keypoints. ``predict(shape)`` scores every point of a new shape against each name's support
features and picks peaks with geodesic non-maximum suppression, as many per name as the support shapes have
on average. Two ways of scoring:

- ``"nearest"`` (default): the best cosine with any single support keypoint (keeps instances that differ
  apart; on the demo's validation shapes IoU@0.10 60.6 against 55.7 for ``"prototype"``).
- ``"prototype"``: cosine with the mean of the name's support features.

Encoder tokens (default) did better there than the text-space embeddings (60.6 against 55.2).

The field is already at point resolution (a point's feature is interpolated from its patches', and its best
match is not linear in them): most few-shot peaks (73 % on the demo's validation shapes) lie off the patch
centres. ``refine=True`` moves each peak
further, inside its patch, up a plane fitted to the field at the nearest patch centres
(:func:`~patchalign3d.keypoints.peaks.refine_peaks`, as zero-shot does); on the demo's validation shapes that
gained at 0.01-0.02 and lost at 0.04-0.05 (BENCHMARKS.md, "Point resolution"), so it is off by default.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patchalign3d.api import _resolve_model, point_features
from patchalign3d.keypoints.geodesic import knn_graph
from patchalign3d.keypoints.peaks import dedupe, pick_peaks, refine_peaks, share_on_centers
from patchalign3d.keypoints.result import Keypoints
from patchalign3d.keypoints.shapes import as_shape, diagonal
from patchalign3d.precision import DEFAULT_DTYPE

FEATURES = ("tokens", "embeddings")
VARIANTS = ("prototype", "nearest")

Annotation = Mapping[str, Sequence[int] | np.ndarray]


def _annotated_indices(points: np.ndarray, value: Any, where: str) -> np.ndarray:
    """Point indices from a list of indices or ``(M, 3)`` positions (snapped to the nearest point)."""
    arr = np.asarray(value)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim == 2 and arr.shape[1] == 3 and np.issubdtype(arr.dtype, np.floating):
        d = ((points[None, :, :] - arr[:, None, :].astype(np.float32)) ** 2).sum(-1)
        return d.argmin(axis=1).astype(np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{where}: expected point indices or (M, 3) positions, got an array of shape {arr.shape}")
    bad = arr[(arr < 0) | (arr >= len(points))]
    if bad.size:
        raise ValueError(f"{where}: point index {int(bad[0])} is outside the shape's {len(points)} points")
    return arr.astype(np.int64)


class KeypointPrototypes:
    """Keypoints of named kinds learnt from a few annotated shapes.

    Args:
        model: a :class:`~patchalign3d.PatchAlign3D`, a checkpoint path / repo id, or None (the release).
        features: ``"tokens"`` (encoder output; works for stage-1 models too) or ``"embeddings"`` (text space).
        variant: ``"nearest"`` or ``"prototype"`` (see the module docstring).
        nms_radius: geodesic suppression radius, a fraction of the shape's bounding-box diagonal.
        min_relative_score: a peak must reach ``min + r * (max - min)`` of its name's field.
        refine: move each peak inside its patch up the field's local plane (default False: where the field peaks,
            already off the patch centres for most; see the module docstring).
        normalize, up_axis, device, dtype: as in :func:`patchalign3d.segment`.

    >>> protos = KeypointPrototypes(model).fit([cloud_a, cloud_b, cloud_c], [{"leg end": [3, 97, 410, 1020]}, ...])
    >>> kps = protos.predict(new_cloud)
    """

    def __init__(
        self,
        model: Any = None,
        *,
        features: str = "tokens",
        variant: str = "nearest",
        nms_radius: float = 0.1,
        min_relative_score: float = 0.5,
        refine: bool = False,
        normalize: bool = True,
        up_axis: str = "y",
        device: str | None = None,
        dtype: str = DEFAULT_DTYPE,
    ) -> None:
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.model = model
        self.features, self.variant = features, variant
        self.nms_radius, self.min_relative_score, self.refine = nms_radius, min_relative_score, refine
        self.options = dict(normalize=normalize, up_axis=up_axis, device=device, dtype=dtype)
        self.support: dict[str, np.ndarray] = {}  # name -> (S, C) L2-normalised support features
        self.instances: dict[str, int] = {}  # name -> keypoints per shape, rounded mean over the support
        self.num_shapes = 0

    @property
    def names(self) -> list[str]:
        return list(self.support)

    def _model(self):
        self.model = _resolve_model(self.model)
        return self.model

    def _features(self, points: np.ndarray, seed: int, pf: Any = None) -> tuple[np.ndarray, np.ndarray, Any]:
        if pf is None:
            pf = point_features(points, model=self._model(), seed=seed, outputs=(self.features,), **self.options)
        feats = pf.tokens if self.features == "tokens" else pf.embeddings
        if feats is None:
            raise ValueError("this model has no text head: use features='tokens'")
        return pf.points, feats, pf

    def fit(
        self, shapes: Sequence[Any], annotations: Sequence[Annotation], *, num_points: int = 2048, seed: int = 0
    ) -> KeypointPrototypes:
        """Learn from ``k`` shapes and their keypoints.

        Args:
            shapes: clouds, meshes or files (meshes are sampled, ``num_points``, ``seed``).
            annotations: one ``{name: point indices or (M, 3) positions}`` per shape; positions snap to the
                nearest point (for a mesh, of its samples).
        """
        if isinstance(shapes, (str, os.PathLike, np.ndarray, torch.Tensor)) or len(shapes) == 0:
            raise ValueError("fit needs a non-empty list of shapes")
        if len(shapes) != len(annotations):
            raise ValueError(f"{len(shapes)} shapes but {len(annotations)} annotations")
        support: dict[str, list[np.ndarray]] = {}
        counts: dict[str, list[int]] = {}
        for s, (shape, ann) in enumerate(zip(shapes, annotations)):
            if not isinstance(ann, Mapping):
                raise ValueError(f"annotation {s} must map keypoint names to indices or positions, got {type(ann).__name__}")
            points, feats, _ = self._features(as_shape(shape, num_points=num_points, seed=seed).points, seed)
            for name, value in ann.items():
                idx = _annotated_indices(points, value, f"annotation {s}, {name!r}")
                support.setdefault(name, []).append(feats[idx])
                counts.setdefault(name, []).append(len(idx))
        if not any(len(np.concatenate(v)) for v in support.values()):
            raise ValueError("the annotations hold no keypoints")
        self.support = {n: np.concatenate(v) for n, v in support.items() if len(np.concatenate(v))}
        # names missing from some support shapes count as 0 there: the mean is over all k shapes
        self.instances = {n: max(1, int(round(sum(counts[n]) / len(shapes)))) for n in self.support}
        self.num_shapes = len(shapes)
        return self

    def field(self, feats: np.ndarray, names: list[str]) -> np.ndarray:
        """``(N, K)`` scores of points with features ``feats`` ``(N, C)`` for ``names``."""
        # The products run in PyTorch, not NumPy: NumPy's OpenBLAS threads keep spinning after a product and
        # took the cores from the next PyTorch call (a segment() right after predict() ran 1.7x slower).
        x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
        cols = []
        for n in names:
            sup = torch.from_numpy(np.ascontiguousarray(self.support[n], dtype=np.float32))
            if self.variant == "prototype":
                proto = sup.mean(dim=0)
                cols.append(x @ (proto / (float(proto.norm()) or 1.0)))
            else:
                cols.append((x @ sup.T).amax(dim=1))
        return torch.stack(cols, dim=1).numpy()

    def predict(
        self, shape: Any, names: Sequence[str] | None = None, *, num_points: int = 2048, seed: int = 0,
        features: Any = None,
    ) -> Keypoints:
        """Keypoints of ``shape`` for ``names`` (default every name seen in ``fit``).

        ``features``: the shape's :class:`~patchalign3d.api.PointFeatures` when already computed (by the same
        model; ``shape`` is then ignored).
        """
        if not self.support:
            raise RuntimeError("KeypointPrototypes.predict before fit: call fit(shapes, annotations) first")
        names = self.names if names is None else list(names)
        unknown = [n for n in names if n not in self.support]
        if unknown:
            raise KeyError(f"no support keypoints for {unknown}; fitted names: {self.names}")
        if features is not None:
            points, feats, pf = self._features(features.points, seed, features)
        else:
            points, feats, pf = self._features(as_shape(shape, num_points=num_points, seed=seed).points, seed)
        field = self.field(feats, names)
        graph = knn_graph(points)
        radius = self.nms_radius * diagonal(points)
        indices, labels = pick_peaks(field, graph, radius, min_relative_score=self.min_relative_score,
                                     max_instances=[self.instances[n] for n in names])
        centers = np.asarray([int(np.argmin(((points - c) ** 2).sum(1))) for c in pf.patch_centers], dtype=np.int64)
        on_centres = share_on_centers(indices, centers)
        if self.refine and len(indices):
            indices = refine_peaks(points, indices, labels, centers, field[centers],
                                   patch_size=self._model().config.group_size)
            indices, labels = dedupe(indices, labels)
        return Keypoints(
            names=names, points=points, field=field.astype(np.float32), indices=indices, labels=labels,
            scores=field[indices, labels].astype(np.float32), mode="few_shot",
            info={"variant": self.variant, "features": self.features, "shots": self.num_shapes,
                  "instances": {n: self.instances[n] for n in names}, "refine": self.refine,
                  "peaks_on_patch_centres": on_centres, "on_patch_centres": share_on_centers(indices, centers)},
        )

    # -- files ----------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the support features and settings (not the model) to a ``.pt`` file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"support": {n: torch.from_numpy(v) for n, v in self.support.items()},
                    "instances": self.instances, "num_shapes": self.num_shapes, "features": self.features,
                    "variant": self.variant, "nms_radius": self.nms_radius,
                    "min_relative_score": self.min_relative_score, "refine": self.refine, "options": self.options}, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, model: Any = None) -> KeypointPrototypes:
        """Read a file written by :meth:`save`; ``model`` must be the one the support features came from."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            protos = cls(model, features=state["features"], variant=state["variant"], nms_radius=state["nms_radius"],
                         min_relative_score=state["min_relative_score"], refine=bool(state.get("refine", False)),
                         **state["options"])
            protos.support = {n: v.numpy() for n, v in state["support"].items()}
            protos.instances = {n: int(v) for n, v in state["instances"].items()}
            protos.num_shapes = int(state["num_shapes"])
        except (KeyError, TypeError, RuntimeError, pickle.UnpicklingError, EOFError) as err:
            raise ValueError(f"{path}: not a KeypointPrototypes file ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
        return protos
