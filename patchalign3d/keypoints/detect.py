"""Zero-shot keypoints from the patch features: a score field per name, peaks picked along the surface, then
placed at point resolution; names the model says are not there get none.

For a name, each patch scores the cosine between its text-space embedding and the name's text embedding, and
every point takes the inverse-distance-weighted mean of its 3 nearest patch centres' scores (this is
:func:`patchalign3d.segment` with ``assign="interpolate"`` and temperature 1, so preprocessing and model
are exactly segmentation's). Then, per name:

1. **absence**: when the name's best patch probability under the model's own sigmoid
   (``sigmoid(scale * cos + bias)``, :func:`~patchalign3d.keypoints.scores.name_probability`) stays under
   ``min_probability``, the name is absent and gets no keypoint (the KeypointNet protocol asks every name of
   a category on every shape: an armless chair has no armrest end);
2. **peaks**: the field's local maxima on the 20-nearest-neighbour graph whose score reaches
   ``min_relative_score`` of the field's range, thinned by geodesic non-maximum suppression (a name may have
   several instances: four leg ends);
3. **point resolution** (``refine=True``): each peak, a patch centre, moves inside its patch to where a plane
   fitted to the name's scores at the nearest patch centres is highest
   (:func:`~patchalign3d.keypoints.peaks.refine_peaks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from patchalign3d.api import _resolve_model
from patchalign3d.keypoints.geodesic import knn_graph
from patchalign3d.keypoints.lifting import lift_to_keypoints
from patchalign3d.keypoints.peaks import dedupe, pick_peaks, refine_peaks, share_on_centers
from patchalign3d.keypoints.result import Keypoints
from patchalign3d.keypoints.scores import zero_shot_scores
from patchalign3d.keypoints.shapes import as_shape, diagonal, validate_names
from patchalign3d.precision import DEFAULT_DTYPE

MODES = ("zero_shot", "few_shot", "lift")
#: Default absence threshold on a name's best patch probability, chosen on the demo's validation shapes
#: (BENCHMARKS.md, "Absent names").
DEFAULT_MIN_PROBABILITY = 0.1


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
    min_probability: float | None = DEFAULT_MIN_PROBABILITY,
    refine: bool = True,
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
        min_probability: a name whose best patch probability stays under this is absent (no keypoint; listed in
            ``info["absent"]``); None asks for every name regardless.
        refine: place keypoints at point resolution inside their patch (False: on the patch centres).
        normalize, up_axis, device, dtype, seed: as in :func:`patchalign3d.segment`.

    Returns:
        :class:`~patchalign3d.keypoints.Keypoints`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    names = validate_names(names)
    if nms_radius <= 0:
        raise ValueError(f"nms_radius must be positive, got {nms_radius}")
    if min_probability is not None and not 0.0 <= min_probability <= 1.0:
        raise ValueError(f"min_probability must lie in [0, 1] (or be None), got {min_probability}")
    if mode == "few_shot":
        if prototypes is None:
            raise ValueError("mode='few_shot' needs prototypes=KeypointPrototypes(...).fit(shapes, annotations)")
        return prototypes.predict(shape, names, num_points=num_points, seed=seed)
    if mode == "lift":
        return lift_to_keypoints(shape, names, model=model, text=text, pointer=pointer, num_points=num_points,
                                 seed=seed, up_axis=up_axis, **lift_options)
    if lift_options:
        raise TypeError(f"unexpected keyword arguments {sorted(lift_options)} for mode={mode!r}")

    data = as_shape(shape, num_points=num_points, seed=seed)
    points, model = data.points, _resolve_model(model)
    options = dict(normalize=normalize, up_axis=up_axis, device=device, seed=seed)
    scores = zero_shot_scores(points, names, model, text, dtype=dtype, **options)
    present = scores.probability >= (min_probability if min_probability is not None else -1.0)
    indices, labels = pick_peaks(scores.field, knn_graph(points), nms_radius * diagonal(points),
                                 min_relative_score=min_relative_score, max_instances=max_instances, present=present)
    on_centres = share_on_centers(indices, scores.centers)
    if refine and len(indices):
        indices = refine_peaks(points, indices, labels, scores.centers, scores.patch_cosines,
                               patch_size=model.config.group_size)
        indices, labels = dedupe(indices, labels)
    return Keypoints(
        names=names, points=points, field=scores.field.astype(np.float32), indices=indices, labels=labels,
        scores=scores.field[indices, labels].astype(np.float32), mode="zero_shot",
        absent=[n for n, ok in zip(names, present) if not ok],
        info={"nms_radius": nms_radius, "min_relative_score": min_relative_score, "max_instances": max_instances,
              "min_probability": min_probability, "refine": refine, "input": data.source,
              "probability": {n: round(float(p), 4) for n, p in zip(names, scores.probability)},
              "peaks_on_patch_centres": on_centres,
              "on_patch_centres": share_on_centers(indices, scores.centers)},
    )
