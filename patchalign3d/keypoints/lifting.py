"""ZeroKey-style lifting: ask a 2D pointer in rendered views, back-project the answers, cluster them in 3D.

For each keypoint name (ZeroKey, sections 4.2-4.3):

1. render V views of the mesh (shaded image, depth, face ids) with the data engine's renderer, on its
   orthographic orbit (Find3D's rig, ``rig="orthographic"``) or on a pinhole orbit with top and bottom views
   (``rig="pinhole"``, :func:`data_engine.cameras.pinhole_orbit_rig`; ZeroKey's rig is a pinhole one);
2. ask the pointer where the name is in each view (any number of answers per view);
3. back-project the ``h x h`` pixel patch around each answer through the depth, drop pixels off the mesh,
   and take the patch's mean 3D point; weight it by equation 3's soft vote (``weighting``, below);
4. cluster all views' points with weighted HDBSCAN (:mod:`patchalign3d.keypoints.cluster`, min cluster size
   10) and keep every cluster holding at least ``min_cluster_share`` of the name's weight, heaviest first
   (a name may have several instances: ZeroKey's figure 3 finds every corner of a table for one prompt);
   ``all_clusters=False`` keeps only the heaviest. A cluster whose centroid is more than ``HOLLOW_GAP`` from
   every one of its points is dropped: with few views, instances that each got fewer than 10 answers merge
   into one cluster centred in mid-air (HDBSCAN's single-cluster fallback).

Equation 3 sums a Gaussian ``exp(-|p - p_mn|^2 / (2 sigma^2)) / (sigma sqrt(2 pi))``, ``sigma = h / 3``, over
a set ``N_ij`` of answers whose patch contains the answer ``p_ij``. Two readings (``weighting``):

- ``"coverage"``: the sum runs over the pixels of the answer's own patch that hit the mesh; the weight is how
  much of the patch lies on the surface, near the answer.
- ``"votes"``: the sum runs over the answers for the same name in every view whose patch contains the
  answer's 3D point, projected there (where that view sees it); an answer confirmed by many views weighs more.
  The paper's "sum over views" and its finding that constant weights hurt badly fit this reading. The
  default: on the demo's validation shapes it placed the oracle's and the feature pointer's keypoints best.
- ``"constant"``: every answer weighs 1 (the paper's "binary back-projection" ablation).

The data engine (rig and renderer) is imported lazily: ``patchalign3d`` does not depend on it otherwise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from patchalign3d.data.io import load_mesh
from patchalign3d.keypoints.cluster import densest_clusters, drop_hollow_clusters, weighted_hdbscan
from patchalign3d.keypoints.pointers import FeaturePointer, Pointer2D, RenderedView, visible
from patchalign3d.keypoints.result import Keypoints
from patchalign3d.keypoints.shapes import as_shape, diagonal, validate_names

#: ZeroKey's default number of views.
ZEROKEY_VIEWS = 26
WEIGHTINGS = ("coverage", "votes", "constant")
#: Equation 3's reading used by default, chosen on the demo's validation shapes with the oracle and the feature
#: pointers (BENCHMARKS.md, "Lifting").
DEFAULT_WEIGHTING = "votes"
RIGS = ("orthographic", "pinhole")
#: Default share of a name's candidate weight a cluster must hold to be a keypoint, chosen with the perfect
#: pointer on the demo's validation shapes (BENCHMARKS.md, "Lifting").
DEFAULT_MIN_CLUSTER_SHARE = 0.05
#: Largest gap between a cluster's centroid and its nearest point, in the normalised frame (mesh in a sphere of
#: radius 0.95): 5 % of its diameter.
HOLLOW_GAP = 0.095
#: Depth agreement (normalised units) for a projected point to count as seen by a view when voting.
VOTE_TOLERANCE = 0.02


@dataclass
class LiftResult:
    """Lifted keypoints of one mesh, in the mesh's own frame.

    Attributes:
        names: the names asked for.
        keypoints: ``{name: (C, 3)}`` cluster centroids, heaviest first (every cluster over the weight share, or
            the heaviest only with ``all_clusters=False``; none when no cluster formed).
        weights: ``{name: (C,)}`` each cluster's total weight.
        shares: ``{name: (C,)}`` each cluster's share of the name's candidate weight.
        candidates: ``{name: (P, 3)}`` every back-projected answer.
        candidate_weights: ``{name: (P,)}``.
        answers: ``{name: [(view, u, v), ...]}`` the pointer's raw answers.
        seconds: time spent rendering, pointing, back-projecting and clustering.
    """

    names: list[str]
    keypoints: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    shares: dict[str, np.ndarray]
    candidates: dict[str, np.ndarray]
    candidate_weights: dict[str, np.ndarray]
    answers: dict[str, list[tuple[int, float, float]]]
    seconds: dict[str, float] = field(default_factory=dict)

    def keypoint(self, name: str) -> np.ndarray | None:
        """The heaviest cluster's centroid ``(3,)``, or None when no cluster formed."""
        kp = self.keypoints[name]
        return kp[0] if len(kp) else None


def gaussian(offset_sq: np.ndarray, sigma: float) -> np.ndarray:
    """Equation 3's kernel ``exp(-d^2 / (2 sigma^2)) / (sigma sqrt(2 pi))`` of squared pixel offsets."""
    return np.exp(-np.asarray(offset_sq) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))


def backproject_answer(view: RenderedView, u: float, v: float, patch_size: int, sigma: float) -> tuple[np.ndarray, float] | None:
    """Mean 3D point and coverage weight (equation 3 over the patch's pixels on the mesh) of the
    ``patch_size``-square pixel patch around ``(u, v)``. None when every pixel of the patch is off the mesh."""
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
    weight = float(gaussian((cols + 0.5 - u) ** 2 + (rows + 0.5 - v) ** 2, sigma).sum())
    return view.pixel_points(rows, cols).mean(axis=0), weight


def vote_weights(points: np.ndarray, answers: Sequence[tuple[int, float, float]], views: Sequence[RenderedView],
                 patch_size: int, sigma: float) -> np.ndarray:
    """``(P,)`` equation 3 read as votes across views (module docstring).

    Args:
        points: ``(P, 3)`` back-projected answers, in the rendered (normalised) frame.
        answers: ``(view, u, v)`` of each, same order.
        views: every rendered view.
    """
    if not len(points):
        return np.zeros(0)
    rig = views[0].rig
    uv, depth = rig.project(points)  # (V, P, 2), (V, P)
    by_view: dict[int, np.ndarray] = {}
    for view, u, v in answers:
        by_view.setdefault(view, []).append((u, v))
    half = patch_size / 2
    weights = np.zeros(len(points))
    for view_index, pixels in by_view.items():
        pix = np.asarray(pixels, dtype=np.float64)  # (A, 2) this view's answers
        depth_image = views[view_index].depth
        for p, (own_view, u, v) in enumerate(answers):
            if own_view == view_index:  # in its own view an answer is where it was given (it votes for itself)
                q = np.array([u, v])
            else:
                q = uv[view_index, p]
                if not visible(depth_image, q[0], q[1], depth[view_index, p], VOTE_TOLERANCE):
                    continue
            inside = np.abs(pix - q).max(axis=1) <= half  # answers whose h x h patch holds the answer
            weights[p] += gaussian(((pix[inside] - q) ** 2).sum(1), sigma).sum()
    return weights


def make_rig(rig: str, views: int, resolution: int):
    """The rig of ``lift_keypoints``: the data engine's orthographic orbit, or its pinhole orbit with poles."""
    from data_engine.cameras import CameraConfig, pinhole_orbit_rig
    from data_engine.cameras import make_rig as orbit_rig

    if rig not in RIGS:
        raise ValueError(f"rig must be one of {RIGS}, got {rig!r}")
    if rig == "orthographic":
        return orbit_rig(CameraConfig(num_views=views, resolution=resolution))
    poles = 2
    if (views - poles) % 3 or views < 3 + poles:
        raise ValueError(f"the pinhole rig has 3 rings of equal size plus 2 pole views: views must be 3 n + 2 "
                         f"(ZeroKey: {ZEROKEY_VIEWS}), got {views}")
    return pinhole_orbit_rig(azimuths_per_ring=(views - poles) // 3, resolution=resolution)


@dataclass
class Renders:
    """A mesh rendered for lifting: every view, in the normalised frame, and the way back to the mesh's frame.

    Attributes:
        views: one :class:`RenderedView` per camera.
        transform: ``(4, 4)`` from the input mesh's frame to the normalised one.
        seconds: rendering time.
    """

    views: list[RenderedView]
    transform: np.ndarray
    seconds: float


def render_views(mesh: Any, *, views: int = ZEROKEY_VIEWS, resolution: int = 512, renderer: str = "raycast",
                 up_axis: str = "y", rig: str = "orthographic", camera: Any = None) -> Renders:
    """Render ``mesh`` (a ``trimesh.Trimesh`` or a mesh file) once for any number of lifts (data engine);
    the arguments are :func:`lift_keypoints`'."""
    from data_engine.cameras import make_rig as orbit_rig
    from data_engine.mesh import MeshConfig, check_mesh, normalize_mesh
    from data_engine.render import RenderConfig, make_renderer

    t = time.perf_counter()
    if isinstance(mesh, (str, os.PathLike)):
        mesh = load_mesh(mesh)
    check_mesh(mesh, "lift_keypoints")
    # the whole shape inside the orthographic view volume (half-width 1) from every direction
    normalised, transform = normalize_mesh(mesh, MeshConfig(normalize="sphere", extent=0.95, up_axis=up_axis))
    cameras = orbit_rig(camera) if camera is not None else make_rig(rig, views, resolution)
    out = make_renderer(RenderConfig(backend=renderer)).render(normalised, cameras)
    rendered = [RenderedView(i, out.rgb[i], out.depth[i], out.face_ids[i], cameras, normalised, transform)
                for i in range(cameras.num_views)]
    return Renders(rendered, transform, time.perf_counter() - t)


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
    all_clusters: bool = True,
    min_cluster_share: float = DEFAULT_MIN_CLUSTER_SHARE,
    weighting: str = DEFAULT_WEIGHTING,
    rig: str = "orthographic",
    renderer: str = "raycast",
    up_axis: str = "y",
    camera: Any = None,
    renders: Renders | None = None,
) -> LiftResult:
    """Lift a 2D pointer's answers on rendered views of ``mesh`` to 3D keypoints.

    Args:
        mesh: a ``trimesh.Trimesh`` (or a mesh file path), any scale; results come back in its frame.
        names: keypoint names.
        pointer: a :class:`~patchalign3d.keypoints.Pointer2D` (e.g. :class:`MolmoPointer`, :class:`FeaturePointer`,
            :class:`OraclePointer`).
        views: number of views (ZeroKey: 26; the pinhole rig needs ``3 n + 2``).
        resolution: image size in pixels.
        patch_size: ``h``, the side of the back-projected pixel patch (odd).
        sigma: Gaussian width in pixels (default ``h / 3``, ZeroKey's).
        min_cluster_size: HDBSCAN's (ZeroKey: 10).
        all_clusters: keep every cluster holding at least ``min_cluster_share`` of the name's candidate weight
            (every instance of the name), heaviest first; False keeps the heaviest only.
        min_cluster_share: see ``all_clusters``.
        weighting: ``"coverage"``, ``"votes"`` or ``"constant"`` (the module docstring).
        rig: ``"orthographic"`` (the data engine's Find3D orbit) or ``"pinhole"`` (rings and poles, ZeroKey's).
        renderer: ``"raycast"`` (no OpenGL) or ``"pyrender"``.
        up_axis: the mesh's up axis (rotated to y for the rig).
        camera: a :class:`data_engine.cameras.CameraConfig` replacing ``views`` / ``resolution`` / ``rig``.
        renders: the mesh already rendered by :func:`render_views` (then ``mesh`` and the rendering arguments
            are not used; ``seconds["render"]`` is 0).
    """
    names = validate_names(names)
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be a positive odd number of pixels, got {patch_size}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if not 0.0 <= min_cluster_share <= 1.0:
        raise ValueError(f"min_cluster_share must lie in [0, 1], got {min_cluster_share}")
    if not callable(getattr(pointer, "point", None)):
        raise TypeError(f"pointer must have a point(image, name) method, got {type(pointer).__name__}")
    sigma = patch_size / 3.0 if sigma is None else float(sigma)
    seconds = dict.fromkeys(("render", "pointer", "backproject", "cluster"), 0.0)

    if renders is None:
        renders = render_views(mesh, views=views, resolution=resolution, renderer=renderer, up_axis=up_axis, rig=rig,
                               camera=camera)
        seconds["render"] = renders.seconds
    to_input = np.linalg.inv(renders.transform)
    rendered = renders.views

    result = LiftResult(names, {}, {}, {}, {}, {}, {}, seconds)
    for name in names:
        pts, wts, answers, kept = [], [], [], []
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
                    kept.append(answers[-1])
            seconds["backproject"] += time.perf_counter() - t
        t = time.perf_counter()
        cand = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        w = np.asarray(wts, dtype=np.float64)
        if weighting == "votes":
            w = vote_weights(cand, kept, rendered, patch_size, sigma)
        elif weighting == "constant":
            w = np.ones(len(cand))
        seconds["backproject"] += time.perf_counter() - t
        t = time.perf_counter()
        labels = weighted_hdbscan(cand, w, min_cluster_size=min_cluster_size)
        labels = drop_hollow_clusters(cand, w, labels, max_gap=HOLLOW_GAP)
        centres, totals = densest_clusters(cand, w, labels)
        shares = totals / w.sum() if len(totals) else totals
        keep = shares >= min_cluster_share if all_clusters else np.arange(len(totals)) < 1
        seconds["cluster"] += time.perf_counter() - t
        result.keypoints[name] = trimesh.transform_points(centres[keep], to_input) if keep.any() else np.zeros((0, 3))
        result.weights[name], result.shares[name] = totals[keep], shares[keep]
        result.candidates[name] = trimesh.transform_points(cand, to_input) if len(cand) else cand
        result.candidate_weights[name] = w
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
    the cluster's share of its name's candidate weight. Names the pointer never answered are ``absent``.
    """
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
        for centre, share in zip(lifted.keypoints[name], lifted.shares[name]):
            idx.append(int(tree.query(centre)[1]))
            labels.append(k)
            scores.append(float(share))
            positions.append(centre)
    return Keypoints(
        names=names, points=data.points, field=field, indices=np.asarray(idx, dtype=np.int64),
        labels=np.asarray(labels, dtype=np.int64), scores=np.asarray(scores, dtype=np.float32), mode="lift",
        positions=np.asarray(positions, dtype=np.float32).reshape(-1, 3),
        absent=[n for n in names if not lifted.answers[n]],
        info={"seconds": lifted.seconds, "candidates": {n: int(len(lifted.candidates[n])) for n in names},
              "pointer": type(pointer).__name__, "input": data.source},
    )
