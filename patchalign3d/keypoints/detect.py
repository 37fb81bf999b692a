"""Zero-shot keypoints from the patch features: a score field per name, peaks picked along the surface.

For a name, each patch scores the cosine between its text-space embedding and the name's text embedding, and
every point takes the inverse-distance-weighted mean of its 3 nearest patch centres' scores (this is
:func:`patchalign3d.segment` with ``assign="interpolate"`` and temperature 1, so preprocessing and model
are exactly segmentation's). Keypoints are the field's local maxima on the 20-nearest-neighbour graph whose
score reaches ``min_relative_score`` of the field's range, thinned by geodesic non-maximum suppression (a
name may have several instances: four leg ends).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from patchalign3d.keypoints.geodesic import geodesic_nms, knn_graph
from patchalign3d.keypoints.result import Keypoints
from patchalign3d.precision import DEFAULT_DTYPE

MODES = ("zero_shot", "few_shot", "lift")


@dataclass
class ShapeInput:
    """A shape as points, plus the mesh they were sampled on (None for a point cloud)."""

    points: np.ndarray
    mesh: Any = None


def as_shape(shape: Any, *, num_points: int = 2048, seed: int = 0) -> ShapeInput:
    """Points of a cloud, mesh or file; a mesh is sampled on its surface (``num_points``, seeded).

    Raises:
        ValueError: a mesh with no surface (no faces, or every face degenerate), bad coordinates.
    """
    import trimesh

    from patchalign3d.api import _as_cloud

    if isinstance(shape, (str, os.PathLike)):
        from patchalign3d.data.io import load_geometry

        shape = load_geometry(shape)
    if isinstance(shape, trimesh.PointCloud):
        shape = np.asarray(shape.vertices, dtype=np.float32)
    if isinstance(shape, trimesh.Trimesh):
        if len(shape.faces) == 0 or not shape.area > 0:
            what = "no faces" if len(shape.faces) == 0 else "only degenerate faces (total area 0)"
            raise ValueError(f"the mesh has no surface to put keypoints on: {what}")
        if not np.isfinite(shape.vertices).all():
            raise ValueError("the mesh has NaN or infinite vertex coordinates")
        samples, _ = trimesh.sample.sample_surface(shape, num_points, seed=seed)
        return ShapeInput(samples.astype(np.float32), shape)
    cloud = _as_cloud(shape)
    if len(cloud) == 0:
        raise ValueError("the point cloud is empty: there is no surface to put keypoints on")
    return ShapeInput(cloud)


def diagonal(points: np.ndarray) -> float:
    """Length of the bounding-box diagonal (the scale radii are given in)."""
    return float(np.linalg.norm(np.ptp(np.asarray(points, dtype=np.float64), axis=0))) or 1.0


def resolve_text(text: Any, names: Sequence[str], model) -> Any:
    """A TextBank of ``names`` when ``text`` is an encoder, a spec or None (encode once, reuse for many shapes)."""
    from patchalign3d.text import TextBank, TextEncoder, get_text_encoder, spec_from_meta

    if text is None or isinstance(text, (str, TextEncoder)):
        if text is None:
            text = spec_from_meta(getattr(model, "text_meta", None))
        return TextBank.build(list(dict.fromkeys(names)), get_text_encoder(text))
    return text


def text_matrix(text: Any, names: list[str], model) -> np.ndarray:
    """``(K, D)`` L2-normalised text embeddings of ``names``; a clear error for names that embed to nothing."""
    from patchalign3d.api import text_embeddings

    emb = text_embeddings(text, names, model).detach().float().cpu()
    norms = emb.norm(dim=-1)
    bad = [n for n, ok in zip(names, (torch.isfinite(emb).all(-1) & (norms > 0)).tolist()) if not ok]
    if bad:
        raise ValueError(f"the text encoder gave no usable embedding (zero, NaN or infinite) for {bad}")
    return torch.nn.functional.normalize(emb, dim=-1).numpy()


def zero_shot_field(points: np.ndarray, names: list[str], model: Any, text: Any, **options: Any) -> np.ndarray:
    """``(N, K)`` zero-shot scores: each patch's cosine with each name's text, spread to the points by
    inverse-distance weights over the 3 nearest patch centres (:func:`patchalign3d.segment` with
    ``assign="interpolate"`` at temperature 1). ``options`` go to ``segment``."""
    from patchalign3d.api import _resolve_model, segment

    model = _resolve_model(model)
    if model.proj is None:
        raise ValueError("this model has no text head (a stage-1 checkpoint?): zero-shot keypoints need a stage-2 model")
    seg = segment(points, names, model=model, text=text_matrix(text, names, model), assign="interpolate",
                  temperature=1.0, **options)
    return seg.point_logits


def pick_peaks(
    field: np.ndarray,
    graph,
    radius: float,
    *,
    min_relative_score: float = 0.9,
    max_instances: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of each column of a ``(N, K)`` field: ``indices`` and ``labels``, best first per name."""
    if not 0.0 <= min_relative_score <= 1.0:
        raise ValueError(f"min_relative_score must lie in [0, 1], got {min_relative_score}")
    indices, labels = [], []
    for k in range(field.shape[1]):
        f = field[:, k]
        lo, hi = float(f.min()), float(f.max())
        peaks = geodesic_nms(f, graph, radius, min_score=lo + min_relative_score * (hi - lo), max_peaks=max_instances)
        indices.append(peaks)
        labels.append(np.full(len(peaks), k, dtype=np.int64))
    return np.concatenate(indices), np.concatenate(labels)


def validate_names(names: Sequence[str]) -> list[str]:
    from patchalign3d.text import validate_part_names

    return validate_part_names(names)


def detect_keypoints(
    shape: Any,
    names: Sequence[str],
    *,
    model: Any = None,
    text: Any = None,
    mode: str = "zero_shot",
    prototypes: Any = None,
    pointer: Any = None,
    num_points: int = 2048,
    nms_radius: float = 0.1,
    min_relative_score: float = 0.9,
    max_instances: int | None = 8,
    normalize: bool = True,
    up_axis: str = "y",
    device: str | None = None,
    dtype: str = DEFAULT_DTYPE,
    seed: int = 0,
    **lift_options: Any,
) -> Keypoints:
    """Named keypoints of a point cloud or mesh.

    Args:
        shape: ``(N, 3)`` points (numpy or torch), a ``trimesh.Trimesh`` / ``PointCloud``, or a file path. A
            mesh is sampled on its surface (``num_points``, ``seed``) and the keypoints index those samples.
        names: keypoint names, e.g. ``["leg end", "seat corner"]``.
        model: a :class:`~patchalign3d.PatchAlign3D`, a checkpoint path / repo id, or None (the release).
        text: as in :func:`patchalign3d.segment` (a TextBank, an encoder or its spec, a ``(K, D)`` array).
        mode: ``"zero_shot"`` (text), ``"few_shot"`` (needs ``prototypes``, a fitted
            :class:`~patchalign3d.keypoints.KeypointPrototypes`) or ``"lift"`` (a mesh; renders views and asks
            ``pointer``, default the offline :class:`~patchalign3d.keypoints.FeaturePointer`, see
            :func:`~patchalign3d.keypoints.lift_keypoints`, which takes ``lift_options``).
        nms_radius: geodesic suppression radius as a fraction of the shape's bounding-box diagonal.
        min_relative_score: a peak must reach ``min + r * (max - min)`` of its name's field.
        max_instances: at most this many keypoints per name (None: no limit).
        normalize, up_axis, device, dtype, seed: as in :func:`patchalign3d.segment`.

    Returns:
        :class:`~patchalign3d.keypoints.Keypoints`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    names = validate_names(names)
    if nms_radius <= 0:
        raise ValueError(f"nms_radius must be positive, got {nms_radius}")
    if mode == "few_shot":
        if prototypes is None:
            raise ValueError("mode='few_shot' needs prototypes=KeypointPrototypes(...).fit(shapes, annotations)")
        return prototypes.predict(shape, names, num_points=num_points, seed=seed)
    if mode == "lift":
        from patchalign3d.keypoints.lifting import lift_to_keypoints

        return lift_to_keypoints(shape, names, model=model, text=text, pointer=pointer, num_points=num_points,
                                 seed=seed, **lift_options)
    if lift_options:
        raise TypeError(f"unexpected keyword arguments {sorted(lift_options)} for mode={mode!r}")

    points = as_shape(shape, num_points=num_points, seed=seed).points
    field = zero_shot_field(points, names, model, text, normalize=normalize, up_axis=up_axis, device=device,
                            dtype=dtype, seed=seed)
    indices, labels = pick_peaks(field, knn_graph(points), nms_radius * diagonal(points),
                                 min_relative_score=min_relative_score, max_instances=max_instances)
    return Keypoints(
        names=names, points=points, field=field.astype(np.float32), indices=indices, labels=labels,
        scores=field[indices, labels].astype(np.float32), mode="zero_shot",
        info={"nms_radius": nms_radius, "min_relative_score": min_relative_score, "max_instances": max_instances},
    )
