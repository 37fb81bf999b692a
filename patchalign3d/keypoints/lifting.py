"""ZeroKey-style lifting: ask a 2D pointer in rendered views, back-project the answers, cluster them in 3D.

For each keypoint name (ZeroKey, sections 4.2-4.3):

1. render V views of the mesh with the data engine's rig and renderer (shaded image, depth, face ids);
2. ask the pointer where the name is in each view (any number of answers per view);
3. back-project the ``h x h`` pixel patch around each answer through the depth, drop pixels off the mesh,
   and take the patch's mean 3D point; weight it by the summed Gaussian of the kept pixels' offsets from the
   answer, ``sum exp(-|p - p_ij|^2 / (2 sigma^2)) / (sigma sqrt(2 pi))`` with ``sigma = h / 3``;
4. cluster all views' points with weighted HDBSCAN (:mod:`patchalign3d.keypoints.cluster`, min cluster size
   10) and return the heaviest cluster's weighted centroid (``all_clusters=True``: every cluster, heaviest
   first, for names with several instances).

The data engine is imported here, lazily: ``patchalign3d`` does not depend on it otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from patchalign3d.keypoints.cluster import densest_clusters, weighted_hdbscan
from patchalign3d.keypoints.pointers import Pointer2D, RenderedView
from patchalign3d.keypoints.result import Keypoints

#: ZeroKey's default number of views.
ZEROKEY_VIEWS = 26


@dataclass
class LiftResult:
    """Lifted keypoints of one mesh, in the mesh's own frame.

    Attributes:
        names: the names asked for.
        keypoints: ``{name: (C, 3)}`` cluster centroids, heaviest first (one, or none, unless ``all_clusters``).
        weights: ``{name: (C,)}`` each cluster's total weight.
        candidates: ``{name: (P, 3)}`` every back-projected answer.
        candidate_weights: ``{name: (P,)}``.
        answers: ``{name: [(view, u, v), ...]}`` the pointer's raw answers.
        seconds: time spent rendering, pointing, back-projecting and clustering.
    """

    names: list[str]
    keypoints: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    candidates: dict[str, np.ndarray]
    candidate_weights: dict[str, np.ndarray]
    answers: dict[str, list[tuple[int, float, float]]]
    seconds: dict[str, float] = field(default_factory=dict)

    def keypoint(self, name: str) -> np.ndarray | None:
        """The heaviest cluster's centroid ``(3,)``, or None when no cluster formed."""
        kp = self.keypoints[name]
        return kp[0] if len(kp) else None


def backproject_answer(view: RenderedView, u: float, v: float, patch_size: int, sigma: float) -> tuple[np.ndarray, float] | None:
    """Mean 3D point and Gaussian weight of the ``patch_size``-square pixel patch around ``(u, v)``.

    Returns None when every pixel of the patch is off the mesh.
    """
    res = view.depth.shape[0]
    half = patch_size // 2
    r0, c0 = int(np.floor(v)), int(np.floor(u))
    rows, cols = np.meshgrid(np.arange(r0 - half, r0 + half + 1), np.arange(c0 - half, c0 + half + 1), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    inside = (rows >= 0) & (rows < res) & (cols >= 0) & (cols < res)
    rows, cols = rows[inside], cols[inside]
    hit = np.isfinite(view.depth[rows, cols])
    if not hit.any():
        return None
    rows, cols = rows[hit], cols[hit]
    offsets = (cols + 0.5 - u) ** 2 + (rows + 0.5 - v) ** 2
    weight = float(np.sum(np.exp(-offsets / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))))
    return view.pixel_points(rows, cols).mean(axis=0), weight


def render_views(mesh: Any, *, views: int, resolution: int, renderer: str, up_axis: str, camera: Any = None):
    """The normalised mesh, its transform, the rig and the renders (data engine)."""
    from data_engine.cameras import CameraConfig, make_rig
    from data_engine.mesh import MeshConfig, check_mesh, normalize_mesh
    from data_engine.render import RenderConfig, make_renderer

    check_mesh(mesh, "lift_keypoints")
    # the whole shape inside the orthographic view volume (half-width 1) from every direction
    normalised, transform = normalize_mesh(mesh, MeshConfig(normalize="sphere", extent=0.95, up_axis=up_axis))
    config = camera or CameraConfig(num_views=views, resolution=resolution)
    rig = make_rig(config)
    out = make_renderer(RenderConfig(backend=renderer)).render(normalised, rig)
    return normalised, transform, rig, out


def lift_keypoints(
    mesh: Any,
    names: Sequence[str],
    pointer: Pointer2D,
    *,
    views: int = ZEROKEY_VIEWS,
    resolution: int = 512,
    patch_size: int = 7,
    sigma: float | None = None,
    min_cluster_size: int = 10,
    all_clusters: bool = False,
    renderer: str = "raycast",
    up_axis: str = "y",
    camera: Any = None,
) -> LiftResult:
    """Lift a 2D pointer's answers on rendered views of ``mesh`` to 3D keypoints.

    Args:
        mesh: a ``trimesh.Trimesh`` (or a mesh file path), any scale; results come back in its frame.
        names: keypoint names.
        pointer: a :class:`~patchalign3d.keypoints.Pointer2D` (e.g. :class:`MolmoPointer`, :class:`FeaturePointer`).
        views: views on the data engine's orbit (ZeroKey: 26).
        resolution: image size in pixels.
        patch_size: ``h``, the side of the back-projected pixel patch (odd).
        sigma: Gaussian width in pixels (default ``h / 3``, ZeroKey's).
        min_cluster_size: HDBSCAN's (ZeroKey: 10).
        all_clusters: keep every cluster (several instances of a name), heaviest first.
        renderer: ``"raycast"`` (no OpenGL) or ``"pyrender"``.
        up_axis: the mesh's up axis (rotated to y for the rig).
        camera: a :class:`data_engine.cameras.CameraConfig` replacing ``views`` / ``resolution``.
    """
    from patchalign3d.keypoints.detect import validate_names

    names = validate_names(names)
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be a positive odd number of pixels, got {patch_size}")
    if not callable(getattr(pointer, "point", None)):
        raise TypeError(f"pointer must have a point(image, name) method, got {type(pointer).__name__}")
    if isinstance(mesh, str) or hasattr(mesh, "__fspath__"):
        from patchalign3d.data.io import load_mesh

        mesh = load_mesh(mesh)
    sigma = patch_size / 3.0 if sigma is None else float(sigma)
    seconds = dict.fromkeys(("render", "pointer", "backproject", "cluster"), 0.0)

    t = time.perf_counter()
    normalised, transform, rig, out = render_views(mesh, views=views, resolution=resolution, renderer=renderer,
                                                   up_axis=up_axis, camera=camera)
    seconds["render"] = time.perf_counter() - t
    to_input = np.linalg.inv(transform)
    rendered = [RenderedView(i, out.rgb[i], out.depth[i], out.face_ids[i], rig, normalised, transform)
                for i in range(rig.num_views)]

    result = LiftResult(names, {}, {}, {}, {}, {}, seconds)
    for name in names:
        pts, wts, answers = [], [], []
        for view in rendered:
            t = time.perf_counter()
            uvs = pointer.point(view.rgb, name, view=view)
            seconds["pointer"] += time.perf_counter() - t
            t = time.perf_counter()
            for u, v in uvs:
                answers.append((view.index, float(u), float(v)))
                got = backproject_answer(view, float(u), float(v), patch_size, sigma)
                if got is not None:
                    pts.append(got[0])
                    wts.append(got[1])
            seconds["backproject"] += time.perf_counter() - t
        t = time.perf_counter()
        cand = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        w = np.asarray(wts, dtype=np.float64)
        labels = weighted_hdbscan(cand, w, min_cluster_size=min_cluster_size)
        centres, totals = densest_clusters(cand, w, labels)
        if not all_clusters:
            centres, totals = centres[:1], totals[:1]
        seconds["cluster"] += time.perf_counter() - t
        back = lambda x: (x @ to_input[:3, :3].T + to_input[:3, 3]) if len(x) else x.reshape(0, 3)  # noqa: E731
        result.keypoints[name], result.weights[name] = back(centres), totals
        result.candidates[name], result.candidate_weights[name] = back(cand), w
        result.answers[name] = answers
    return result


def lift_to_keypoints(
    shape: Any,
    names: Sequence[str],
    *,
    model: Any = None,
    text: Any = None,
    pointer: Pointer2D | None = None,
    num_points: int = 2048,
    seed: int = 0,
    **options: Any,
) -> Keypoints:
    """:func:`lift_keypoints` as a :class:`Keypoints` on points sampled on the mesh (``mode="lift"``).

    Each lifted keypoint's index is its nearest sample; ``field`` is a kernel density of the weighted
    candidates at the samples (bandwidth 5 % of the shape's diagonal, scaled to a maximum of 1) and ``scores``
    the cluster's share of its name's candidate weight.
    """
    from scipy.spatial import cKDTree

    from patchalign3d.keypoints.detect import as_shape, diagonal, validate_names
    from patchalign3d.keypoints.pointers import FeaturePointer

    names = validate_names(names)
    data = as_shape(shape, num_points=num_points, seed=seed)
    if data.mesh is None:
        raise ValueError("mode='lift' renders a mesh: give a mesh (a point cloud has no surface to render)")
    pointer = pointer if pointer is not None else FeaturePointer(model, text, num_points=num_points, seed=seed)
    lifted = lift_keypoints(data.mesh, names, pointer, **options)
    tree = cKDTree(data.points)
    bandwidth = 0.05 * diagonal(data.points)
    field = np.zeros((len(data.points), len(names)), dtype=np.float32)
    idx, labels, scores, positions = [], [], [], []
    for k, name in enumerate(names):
        cand, w = lifted.candidates[name], lifted.candidate_weights[name]
        if len(cand):
            d2 = ((data.points[:, None, :] - cand[None, :, :].astype(np.float32)) ** 2).sum(-1)
            dens = (np.exp(-d2 / (2 * bandwidth**2)) * w[None, :]).sum(1)
            field[:, k] = dens / (dens.max() or 1.0)
        for centre, total in zip(lifted.keypoints[name], lifted.weights[name]):
            idx.append(int(tree.query(centre)[1]))
            labels.append(k)
            scores.append(float(total / w.sum()))
            positions.append(centre)
    return Keypoints(
        names=names, points=data.points, field=field, indices=np.asarray(idx, dtype=np.int64),
        labels=np.asarray(labels, dtype=np.int64), scores=np.asarray(scores, dtype=np.float32), mode="lift",
        positions=np.asarray(positions, dtype=np.float32).reshape(-1, 3),
        info={"seconds": lifted.seconds, "candidates": {n: int(len(lifted.candidates[n])) for n in names},
              "pointer": type(pointer).__name__},
    )
