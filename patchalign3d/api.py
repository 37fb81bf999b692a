"""``segment()`` and ``segment_mesh()``: preprocessing, batching and label assignment (no model code).

The defaults reproduce the released inference pipeline: centroid + unit-sphere normalisation, y/z swap for
y-up input, FPS from point 0 (with the release kernel's quirk), 128 patches of 32 points, each point takes
the logits of its nearest patch centre, temperature 0.07.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from patchalign3d.model.checkpoint import load_model
from patchalign3d.model.grouping import Patches, nearest_center
from patchalign3d.model.inference import cached_inference_copy
from patchalign3d.model.patchalign3d import ASSIGN_MODES, RELEASE_TEMPERATURE, AssignMode, PatchAlign3D
from patchalign3d.precision import DEFAULT_DTYPE, dtype_name, resolve_dtype
from patchalign3d.results import MeshSegmentation, Segmentation
from patchalign3d.text import TextBank, TextEncoder, get_text_encoder, spec_from_meta, validate_part_names

PointsLike = np.ndarray | Tensor | str | os.PathLike
UP_AXES = ("y", "z")


# -- inputs ---------------------------------------------------------------------------------------------
def _as_cloud(points: PointsLike, index: int | None = None) -> np.ndarray:
    where = "points" if index is None else f"points[{index}]"
    if isinstance(points, (str, os.PathLike)):
        from patchalign3d.data.io import load_points  # trimesh (a second to import) only for files

        return load_points(points)
    if isinstance(points, Tensor):
        arr = points.detach().cpu()
        if arr.is_floating_point() and arr.dtype == torch.bfloat16:
            arr = arr.float()
        arr = arr.numpy()
    elif isinstance(points, np.ndarray):
        arr = points
    else:
        raise TypeError(f"{where} must be a numpy array, a torch tensor or a file path, got {type(points).__name__}")
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{where} must have shape (N, 3), got {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{where} must hold floating point coordinates, got dtype {arr.dtype}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        first = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(f"{where} has {int(bad.sum())} points with NaN or infinite coordinates (first at rows {first})")
    return arr


def _as_clouds(points: PointsLike | Sequence[PointsLike]) -> tuple[list[np.ndarray], bool]:
    """Clouds as a list, and whether the caller passed one cloud."""
    if isinstance(points, (list, tuple)):
        if not points:
            raise ValueError("points is an empty list: nothing to segment")
        return [_as_cloud(p, i) for i, p in enumerate(points)], False
    if isinstance(points, (np.ndarray, Tensor)) and points.ndim == 3:
        return [_as_cloud(p, i) for i, p in enumerate(points)], False
    return [_as_cloud(points)], True


@lru_cache(maxsize=2)
def _cached_model(source: str | None) -> PatchAlign3D:
    return load_model(source)


def _resolve_model(model: PatchAlign3D | str | os.PathLike | None) -> PatchAlign3D:
    if isinstance(model, PatchAlign3D):
        return model
    if model is None or isinstance(model, (str, os.PathLike)):
        return _cached_model(None if model is None else str(model))
    raise TypeError(f"model must be a PatchAlign3D, a checkpoint path or repo id, or None; got {type(model).__name__}")


def text_embeddings(text: Any, part_names: list[str], model: PatchAlign3D | None = None) -> Tensor:
    """``(K, D)`` embeddings of ``part_names`` from a TextBank, an encoder, a spec string, an array or None.

    ``None`` uses the text encoder the model was trained with when its checkpoint says so, else the
    release's OpenCLIP ViT-bigG-14. Encoders named by a spec are built once per process and reused.
    """
    if isinstance(text, TextBank):
        return text.lookup(part_names)
    if isinstance(text, (Tensor, np.ndarray)):
        emb = torch.as_tensor(np.asarray(text) if isinstance(text, np.ndarray) else text).float()
        if emb.dim() != 2 or emb.shape[0] != len(part_names):
            raise ValueError(f"text embeddings must be (K={len(part_names)}, D), got {tuple(emb.shape)}")
        return emb
    if text is None and model is not None:
        text = spec_from_meta(model.text_meta)
    if text is None or isinstance(text, str):
        text = get_text_encoder(text)
    if isinstance(text, TextEncoder):
        return TextBank.build(part_names, text).lookup(part_names)
    raise TypeError(f"text must be a TextBank, a TextEncoder, an encoder spec, a (K, D) array or None; got {type(text).__name__}")


def _validate_names(part_names: Sequence[str]) -> list[str]:
    return validate_part_names(part_names)


# -- preprocessing ----------------------------------------------------------------------------------------
@dataclass
class _Prepared:
    frame: np.ndarray  # (N, 3) all points, normalised and axis-swapped: the model's frame
    encoded: np.ndarray  # indices of the points the model sees
    centre: np.ndarray  # (3,) subtracted, then divided by radius (0 and 1 without normalisation)
    radius: float
    up_axis: str

    def to_frame(self, q: np.ndarray) -> np.ndarray:
        """Other points of the same shape (mesh vertices, face centres) in the model's frame."""
        x = (q.astype(np.float32) - self.centre) / self.radius
        return np.ascontiguousarray(x[:, [0, 2, 1]] if self.up_axis == "y" else x)


def _prepare(cloud: np.ndarray, *, normalize: bool, up_axis: str, max_points: int | None, seed: int, min_points: int) -> _Prepared:
    n = len(cloud)
    if n < min_points:
        raise ValueError(f"a cloud needs at least {min_points} points (the patch size), got {n}")
    x = cloud.astype(np.float32)
    centre, radius = np.zeros(3, np.float32), 1.0
    if normalize:
        centre = x.mean(axis=0)
        radius = float(np.sqrt(((x - centre) ** 2).sum(axis=1)).max())
        if radius == 0.0:
            raise ValueError("all points coincide: the cloud cannot be normalised")
    if max_points is not None and n > max_points:
        encoded = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    else:
        encoded = np.arange(n)
    # the released model was trained on y-up data with y and z swapped: to_frame applies the same swap
    prepared = _Prepared(np.empty(0), encoded, centre, radius, up_axis)
    prepared.frame = prepared.to_frame(cloud)
    return prepared


@dataclass
class _Grouped:
    """One cloud prepared and grouped: what labels (``segment``) and features (``point_features``) spread from."""

    prepared: _Prepared
    patches: Patches  # member and centre indices into the encoded subset: what the network reads
    full: Patches  # the same patches with indices into the whole cloud: what points are spread from


def _ready(model: PatchAlign3D, device: str | torch.device | None) -> tuple[PatchAlign3D, torch.device]:
    """``model`` in eval mode on ``device`` (default: where it is already), and that device."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    if model.training:
        model.eval()
    if next(model.parameters()).device != dev:
        model = model.to(dev)
    return model, dev


def _prepare_and_group(
    clouds: list[np.ndarray],
    model: PatchAlign3D,
    dev: torch.device,
    *,
    normalize: bool,
    up_axis: str,
    max_points: int | None,
    num_groups: int | None,
    seed: int,
) -> list[_Grouped]:
    """Normalise and axis-swap each cloud, pick the encoded subset, group it on ``dev`` (one cloud at a
    time: sizes differ; a cloud with fewer points than ``num_groups`` gets one patch per point)."""
    if up_axis not in UP_AXES:
        raise ValueError(f"up_axis must be one of {UP_AXES}, got {up_axis!r}")
    cfg = model.config
    groups_wanted = num_groups or cfg.num_groups
    grouped = []
    for cloud in clouds:
        p = _prepare(cloud, normalize=normalize, up_axis=up_axis, max_points=max_points, seed=seed,
                     min_points=cfg.group_size)
        enc = torch.from_numpy(p.frame[p.encoded]).to(dev)[None]
        patches = model.group(enc, num_groups=min(groups_wanted, len(p.encoded)))
        encoded = torch.from_numpy(p.encoded).to(dev)
        full = Patches(patches.neighborhood, patches.centers, encoded[patches.center_idx], encoded[patches.member_idx])
        grouped.append(_Grouped(p, patches, full))
    return grouped


# -- the pipeline -----------------------------------------------------------------------------------------
@torch.inference_mode()
def _segment_clouds(
    clouds: list[np.ndarray],
    names: list[str],
    *,
    model: PatchAlign3D,
    text: Any,
    normalize: bool,
    up_axis: str,
    assign: AssignMode,
    temperature: float | None,
    max_points: int | None,
    num_groups: int | None,
    device: str | torch.device | None,
    dtype: str | torch.dtype,
    compile: bool,
    batch_size: int,
    seed: int,
    queries: list[list[np.ndarray]] | None = None,
) -> tuple[list[Segmentation], list[list[np.ndarray]]]:
    if assign not in ASSIGN_MODES:
        raise ValueError(f"assign must be one of {ASSIGN_MODES}, got {assign!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model, dev = _ready(model, device)
    grouped = _prepare_and_group(clouds, model, dev, normalize=normalize, up_axis=up_axis, max_points=max_points,
                                 num_groups=num_groups, seed=seed)
    run_dtype = resolve_dtype(dtype, dev)
    # bf16: a cached copy with bf16 matmul weights and float32 wherever labels are decided (the model itself
    # for float32 without compile, which therefore stays exact).
    net = cached_inference_copy(model, run_dtype, compile=compile)
    text_emb = text_embeddings(text, names, model).to(dev)

    # The network runs on batches of clouds with equal numbers of patches.
    logits: list[Tensor | None] = [None] * len(clouds)
    by_size: dict[int, list[int]] = {}
    for i, g in enumerate(grouped):
        by_size.setdefault(g.patches.centers.shape[1], []).append(i)
    for members in by_size.values():
        for s in range(0, len(members), batch_size):
            chunk = members[s : s + batch_size]
            neigh = torch.cat([grouped[i].patches.neighborhood for i in chunk])
            centers = torch.cat([grouped[i].patches.centers for i in chunk])
            emb = net.embed_patches(net.encoder(neigh, centers))
            batch_logits = model.patch_logits(emb, text_emb, temperature)
            for j, i in enumerate(chunk):
                logits[i] = batch_logits[j : j + 1]

    results, query_logits = [], []
    for i, (cloud, g) in enumerate(zip(clouds, grouped)):
        p, full = g.prepared, g.full
        frame = torch.from_numpy(p.frame).to(dev)[None]
        pl = model.point_logits(frame, full, logits[i], assign)[0]
        centers_in = cloud[full.center_idx[0].cpu().numpy()]
        results.append(Segmentation(
            points=cloud, labels=pl.argmax(-1).cpu().numpy().astype(np.int64), point_logits=pl.cpu().numpy(),
            part_names=list(names), patch_centers=np.asarray(centers_in, dtype=np.float32),
            patch_logits=logits[i][0].cpu().numpy(), dtype=dtype_name(run_dtype),
        ))
        extra = []
        for q in (queries[i] if queries else []):
            qf = torch.from_numpy(p.to_frame(q)).to(dev)[None]
            if assign in ("membership", "membership_release"):
                # Patch membership is known for the cloud's points only: a query takes its nearest point's logits.
                extra.append(pl[nearest_center(qf, frame)[0]].cpu().numpy())
            else:
                extra.append(model.point_logits(qf, full, logits[i], assign)[0].cpu().numpy())
        query_logits.append(extra)
    return results, query_logits


def segment(
    points: PointsLike | Sequence[PointsLike],
    part_names: Sequence[str],
    *,
    model: PatchAlign3D | str | os.PathLike | None = None,
    text: Any = None,
    normalize: bool = True,
    up_axis: str = "y",
    assign: AssignMode = "nearest",
    temperature: float | None = RELEASE_TEMPERATURE,
    max_points: int | None = 2048,
    num_groups: int | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = DEFAULT_DTYPE,
    compile: bool = False,
    batch_size: int = 16,
    seed: int = 0,
) -> Segmentation | list[Segmentation]:
    """Label every point with one of ``part_names``, in one feed-forward pass.

    Args:
        points: one cloud ``(N, 3)`` (numpy, torch or a file path), a ``(B, N, 3)`` array, or a list of clouds
            of different sizes.
        part_names: the K candidate names (non-empty, distinct after cleaning).
        model: a :class:`PatchAlign3D`, a checkpoint path or Hub repo id, or None for the default release.
        text: a :class:`~patchalign3d.text.TextBank` (names looked up as given), a text encoder or its spec
            string (``"minilm"``, ``"openclip:ViT-bigG-14/laion2b_s39b_b160k"``), a ``(K, D)`` array, or None.
        normalize: centre on the centroid and scale to the unit sphere (as released).
        up_axis: ``"y"`` for y-up input (swapped to the model's z-up, as released) or ``"z"``.
        assign: ``"nearest"`` (released), ``"membership"``, ``"membership_release"`` or ``"interpolate"``
            (:meth:`PatchAlign3D.point_logits`). Under ``"membership_release"`` a point in no patch gets all-zero
            logits and so label 0, as the release: this includes every point outside the encoded subset of a cloud
            larger than ``max_points`` (the release only ever encodes and scores its 2048 drawn points, and
            :func:`patchalign3d.evaluation.evaluate` likewise scores only the encoded points under this rule).
        temperature: logit temperature (0.07 as released); None uses the model's learned scale.
        max_points: clouds larger than this are encoded on a seeded random subset of this many points (the
            model was trained on 2048); every point is still labelled. None encodes all points.
        num_groups: patches per cloud (default the model's, 128). Clouds with fewer points than that get one
            patch per point; clouds with fewer points than the patch size (32) are an error.
        device: where to run (default: where the model is).
        dtype: ``"auto"`` (bfloat16 where the hardware runs it natively: CUDA from Ampere on, CPUs with AMX or
            AVX-512-BF16; else float32), ``"float32"`` (exact) or ``"bfloat16"``. bf16 runs a cached copy of
            the model whose matmul layers hold bf16 weights; normalisation, grouping, positions, norms, the
            text head, logits and assignment stay float32. The result's ``dtype`` says what ran.
        compile: run the network through ``torch.compile`` (cached with the model; the first call of each
            batch shape compiles for about a minute, later ones are faster: worth it for many clouds only).
        batch_size: clouds per forward pass.
        seed: for the subset drawn when ``max_points`` applies.

    Returns:
        A :class:`Segmentation` for one cloud, a list of them for several.
    """
    names = _validate_names(part_names)
    clouds, single = _as_clouds(points)
    results, _ = _segment_clouds(
        clouds, names, model=_resolve_model(model), text=text, normalize=normalize, up_axis=up_axis,
        assign=assign, temperature=temperature, max_points=max_points, num_groups=num_groups, device=device,
        dtype=dtype, compile=compile, batch_size=batch_size, seed=seed,
    )
    return results[0] if single else results


def segment_mesh(
    mesh_or_path: Any,
    part_names: Sequence[str],
    *,
    num_points: int = 2048,
    seed: int = 0,
    **kwargs: Any,
) -> MeshSegmentation | list[MeshSegmentation]:
    """Segment a mesh: sample ``num_points`` on its surface, then label its vertices and faces.

    ``mesh_or_path`` is a ``trimesh.Trimesh``, a ``trimesh.Scene``, a mesh file path, or a list of these
    (segmented in batches; a list of results comes back). Takes the keyword arguments of :func:`segment`.
    Vertex and face labels come from the same patch logits and assignment mode as the sampled points (faces
    use their centroids); under the membership modes, whose patches hold sampled points only, each takes its
    nearest sampled point's logits. A scene's geometries are kept as ``pieces`` so that writers keep their materials.
    """
    import trimesh

    single = not isinstance(mesh_or_path, (list, tuple))
    inputs = [mesh_or_path] if single else list(mesh_or_path)
    if not inputs:
        raise ValueError("mesh_or_path is an empty list: nothing to segment")
    names = _validate_names(part_names)
    model = _resolve_model(kwargs.pop("model", None))
    defaults = dict(text=None, normalize=True, up_axis="y", assign="nearest", temperature=RELEASE_TEMPERATURE,
                    max_points=None, num_groups=None, device=None, dtype=DEFAULT_DTYPE, compile=False,
                    batch_size=16)
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise TypeError(f"segment_mesh got unexpected keyword arguments {sorted(unknown)}")
    opts = {**defaults, **kwargs}
    meshes = [_as_mesh(m, None if single else i) for i, m in enumerate(inputs)]
    samples = [trimesh.sample.sample_surface(mesh, num_points, seed=seed)[0].astype(np.float32) for mesh, _ in meshes]
    queries = [[np.asarray(mesh.vertices, np.float32), np.asarray(mesh.triangles_center, np.float32)] for mesh, _ in meshes]
    segs, query_logits = _segment_clouds(samples, names, model=model, seed=seed, queries=queries, **opts)
    results = [
        MeshSegmentation(**vars(seg), mesh=mesh, pieces=pieces, vertex_labels=vlog.argmax(-1).astype(np.int64),
                         face_labels=flog.argmax(-1).astype(np.int64))
        for seg, (mesh, pieces), (vlog, flog) in zip(segs, meshes, query_logits)
    ]
    return results[0] if single else results


def _as_mesh(obj: Any, index: int | None) -> tuple[Any, list[Any]]:
    """``(mesh, pieces)``: one ``Trimesh`` and the input's geometries it concatenates, face for face."""
    import trimesh

    from patchalign3d.data.io import load_mesh_pieces

    where = "mesh_or_path" if index is None else f"mesh_or_path[{index}]"
    if isinstance(obj, (str, os.PathLike)):
        pieces = load_mesh_pieces(obj)
        where = str(obj)
    elif isinstance(obj, trimesh.Scene):
        pieces = [g for g in obj.dump(concatenate=False) if isinstance(g, trimesh.Trimesh)]
    elif isinstance(obj, trimesh.Trimesh):
        pieces = [obj]
    else:
        raise TypeError(f"{where} must be a trimesh.Trimesh, a trimesh.Scene or a mesh file path, got {type(obj).__name__}")
    if not pieces or not sum(len(p.faces) for p in pieces):
        raise ValueError(f"{where}: has no faces (a point cloud?); a mesh is needed here")
    mesh = pieces[0] if len(pieces) == 1 else trimesh.util.concatenate(pieces)
    if not np.isfinite(mesh.vertices).all():
        raise ValueError(f"{where}: the mesh has NaN or infinite vertex coordinates")
    return mesh, pieces


# -- per-point features (keypoints, matching) -------------------------------------------------------------
@dataclass
class PointFeatures:
    """Per-point features of one cloud, spread from its patches by inverse-distance weights over the 3
    nearest patch centres (``assign="interpolate"``) and L2-normalised. Arrays are numpy, in input order.

    Attributes:
        points: ``(N, 3)`` the input points.
        embeddings: ``(N, D)`` text-space embeddings (cosine with a text embedding scores a name), or None
            for a model without a text head (stage 1).
        tokens: ``(N, C)`` encoder tokens before the text head.
        patch_centers: ``(G, 3)`` in the input frame.
        query_embeddings, query_tokens: the same at the extra ``queries`` points (empty when none).
    """

    points: np.ndarray
    embeddings: np.ndarray | None
    tokens: np.ndarray
    patch_centers: np.ndarray
    query_embeddings: np.ndarray | None = None
    query_tokens: np.ndarray | None = None


@torch.inference_mode()
def point_features(
    points: PointsLike,
    *,
    model: PatchAlign3D | str | os.PathLike | None = None,
    normalize: bool = True,
    up_axis: str = "y",
    max_points: int | None = 2048,
    num_groups: int | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = DEFAULT_DTYPE,
    seed: int = 0,
    queries: np.ndarray | None = None,
    outputs: Sequence[str] = ("tokens", "embeddings"),
) -> PointFeatures:
    """Patch tokens and text-space embeddings of one cloud, interpolated to every point.

    Same preprocessing and options as :func:`segment` (normalisation, y/z swap, FPS grouping, the encoded
    subset for large clouds). ``queries`` ``(M, 3)`` are other points of the same shape (e.g. a mesh's face
    centres) that get features too. ``outputs`` names what to spread (the others come back None).
    """
    if not set(outputs) <= {"tokens", "embeddings"}:
        raise ValueError(f"outputs must name 'tokens' and/or 'embeddings', got {list(outputs)}")
    model, dev = _ready(_resolve_model(model), device)
    cloud = _as_cloud(points)
    (grouped,) = _prepare_and_group([cloud], model, dev, normalize=normalize, up_axis=up_axis,
                                    max_points=max_points, num_groups=num_groups, seed=seed)
    p, pt, full = grouped.prepared, grouped.patches, grouped.full
    net = cached_inference_copy(model, resolve_dtype(dtype, dev))
    tokens = net.encoder(pt.neighborhood, pt.centers).float()
    emb = net.embed_patches(tokens) if model.proj is not None and "embeddings" in outputs else None
    tokens = tokens if "tokens" in outputs else None

    def spread(where: np.ndarray, values: Tensor | None) -> np.ndarray | None:
        if values is None:
            return None
        x = torch.from_numpy(where).to(dev)[None]
        out = model.point_logits(x, full, values, "interpolate")[0]
        return torch.nn.functional.normalize(out, dim=-1).cpu().numpy()

    q = p.to_frame(np.asarray(queries, dtype=np.float32).reshape(-1, 3)) if queries is not None else None
    return PointFeatures(
        points=cloud, embeddings=spread(p.frame, emb), tokens=spread(p.frame, tokens),
        patch_centers=np.asarray(cloud[full.center_idx[0].cpu().numpy()], dtype=np.float32),
        query_embeddings=spread(q, emb) if q is not None else None,
        query_tokens=spread(q, tokens) if q is not None else None,
    )
