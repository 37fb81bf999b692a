"""How well each point of a shape answers to each keypoint name: the patch field, a calibrated "is it here"
probability per name, and per-point saliency inside the patches.

- :func:`zero_shot_scores`: each patch's cosine with each name's text embedding, spread to the points by
  inverse-distance weights over the 3 nearest patch centres (:func:`patchalign3d.segment` with
  ``assign="interpolate"`` at temperature 1), and each name's best patch probability under the model's own
  sigmoid, ``sigmoid(scale * cos + bias)`` (:func:`name_probability`).
- :func:`point_saliency`: scores at point resolution. A patch embedding is a function of its members'
  positions (relative to the centre); the saliency of member ``j`` of patch ``g`` for a direction ``e`` (a
  name's text embedding, or a support keypoint's token) is ``x_j . d cos(z_g, e) / d x_j``, the first-order
  change of the patch's score when that member is pulled to the centre (gradient times input, as point-cloud
  saliency maps compute it). Only the points that win a channel of the tokenizer's max-pools receive a
  gradient, so the saliency says which points of a patch make it answer to the name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import expit

from patchalign3d.api import _prepare, _resolve_model, segment, text_embeddings
from patchalign3d.text import TextBank, TextEncoder, get_text_encoder, spec_from_meta

#: Saliency is computed for at most this many directions per forward pass (bounded memory on big models).
SALIENCY_CHUNK = 8


def resolve_text(text: Any, names: Sequence[str], model) -> Any:
    """A TextBank of ``names`` when ``text`` is an encoder, a spec or None (encode once, reuse for many shapes)."""
    if text is None or isinstance(text, (str, TextEncoder)):
        if text is None:
            text = spec_from_meta(getattr(model, "text_meta", None))
        return TextBank.build(list(dict.fromkeys(names)), get_text_encoder(text))
    return text


def text_matrix(text: Any, names: list[str], model) -> np.ndarray:
    """``(K, D)`` L2-normalised text embeddings of ``names``; a clear error for names that embed to nothing."""
    emb = text_embeddings(text, names, model).detach().float().cpu()
    norms = emb.norm(dim=-1)
    bad = [n for n, ok in zip(names, (torch.isfinite(emb).all(-1) & (norms > 0)).tolist()) if not ok]
    if bad:
        raise ValueError(f"the text encoder gave no usable embedding (zero, NaN or infinite) for {bad}")
    return torch.nn.functional.normalize(emb, dim=-1).numpy()


def logit_bias(model: Any) -> float:
    """The logit bias the model was trained with (SigLIP's ``b``; 0 for the release's loss, which has none)."""
    return float(getattr(model, "logit_bias", None) or 0.0)


def name_probability(model: Any, cosines: np.ndarray) -> np.ndarray:
    """``sigmoid(scale * cos + bias)`` elementwise: the model's own answer to "does this patch show the name",
    with its learned logit scale and bias (the sigmoid loss it was trained with makes this a probability)."""
    scale = float(model.logit_scale(None).detach())
    return expit(scale * np.asarray(cosines, dtype=np.float64) + logit_bias(model))


@dataclass
class ZeroShotScores:
    """Zero-shot scores of one cloud for K names.

    Attributes:
        field: ``(N, K)`` cosine of each point (interpolated from the 3 nearest patch centres) with each name.
        patch_cosines: ``(G, K)`` each patch's cosine with each name.
        centers: ``(G,)`` int64 index of each patch centre in the points.
        probability: ``(K,)`` each name's best patch probability (:func:`name_probability`).
        text: ``(K, D)`` the names' normalised text embeddings.
    """

    field: np.ndarray
    patch_cosines: np.ndarray
    centers: np.ndarray
    probability: np.ndarray
    text: np.ndarray


def zero_shot_scores(points: np.ndarray, names: list[str], model: Any, text: Any, **options: Any) -> ZeroShotScores:
    """Scores of ``(N, 3)`` points for ``names``; ``options`` go to :func:`patchalign3d.segment`."""
    model = _resolve_model(model)
    if model.proj is None:
        raise ValueError("this model has no text head (a stage-1 checkpoint?): zero-shot keypoints need a stage-2 model")
    emb = text_matrix(text, names, model)
    seg = segment(points, names, model=model, text=emb, assign="interpolate", temperature=1.0, **options)
    centers = np.asarray([int(np.argmin(((points - c) ** 2).sum(1))) for c in seg.patch_centers], dtype=np.int64)
    return ZeroShotScores(seg.point_logits, seg.patch_logits, centers,
                          name_probability(model, seg.patch_logits.max(axis=0)), emb)


def zero_shot_field(points: np.ndarray, names: list[str], model: Any, text: Any, **options: Any) -> np.ndarray:
    """``(N, K)`` the :attr:`ZeroShotScores.field` of :func:`zero_shot_scores`."""
    return zero_shot_scores(points, names, model, text, **options).field


# -- point resolution --------------------------------------------------------------------------------------------
@dataclass
class PointSaliency:
    """Per-point saliency of one cloud for K directions.

    Attributes:
        saliency: ``(N, K)`` each point's summed saliency over the patches it belongs to (0 for points in no
            patch or winning no channel).
        member_saliency: ``(G, S, K)`` the saliency of member ``s`` of patch ``g``.
        members: ``(G, S)`` int64 index of each patch member in the points, nearest the centre first.
        centers: ``(G,)`` int64 index of each patch centre in the points.
        cosines: ``(G, K)`` each patch's cosine with each direction.
    """

    saliency: np.ndarray
    member_saliency: np.ndarray
    members: np.ndarray
    centers: np.ndarray
    cosines: np.ndarray


def point_saliency(
    points: np.ndarray,
    directions: np.ndarray,
    *,
    model: Any = None,
    space: str = "embeddings",
    focus: np.ndarray | None = None,
    temperature: float = 0.05,
    normalize: bool = True,
    up_axis: str = "y",
    max_points: int | None = 2048,
    seed: int = 0,
    device: str | None = None,
) -> PointSaliency:
    """Which points of each patch make it answer to each of K directions (see the module docstring).

    Args:
        points: ``(N, 3)`` one cloud.
        directions: ``(K, D)`` in the model's text space (``space="embeddings"``: names' text embeddings) or
            ``(K, C)`` in its token space (``space="tokens"``: e.g. few-shot support features).
        model: a stage-2 :class:`~patchalign3d.PatchAlign3D` (a stage-1 one for ``space="tokens"``), a
            checkpoint path, or None (the release).
        focus: ``(G, K)`` weight of each patch's cosine in the score differentiated for each direction
            (e.g. one-hot at a detected peak's patch). Default: a softmax over the patches of the cosines at
            ``temperature`` (the best-matching patches dominate).
        normalize, up_axis, max_points, seed, device: as in :func:`patchalign3d.segment` (the same patches).

    Returns:
        :class:`PointSaliency`. Runs in the model's own precision (float32) with gradients, one backward pass
        per chunk of directions.
    """
    if space not in ("embeddings", "tokens"):
        raise ValueError(f"space must be 'embeddings' or 'tokens', got {space!r}")
    model = _resolve_model(model)
    if space == "embeddings" and model.proj is None:
        raise ValueError("this model has no text head (a stage-1 checkpoint?): use space='tokens'")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    cloud = np.asarray(points, dtype=np.float32)
    p = _prepare(cloud, normalize=normalize, up_axis=up_axis, max_points=max_points, seed=seed,
                 min_points=model.config.group_size)
    dtype = next(model.parameters()).dtype  # float32, or float64 for exact checks
    enc = torch.from_numpy(p.frame[p.encoded]).to(dev, dtype)[None]
    with torch.no_grad():
        patches = model.group(enc, num_groups=min(model.config.num_groups, len(p.encoded)))
    dirs = torch.nn.functional.normalize(torch.as_tensor(np.asarray(directions), device=dev, dtype=dtype), dim=-1)
    num_dirs, (_, g, s, _) = dirs.shape[0], patches.neighborhood.shape
    grads, cosines = [], []
    for start in range(0, num_dirs, SALIENCY_CHUNK):
        chunk = dirs[start:start + SALIENCY_CHUNK]
        b = chunk.shape[0]
        neigh = patches.neighborhood.expand(b, -1, -1, -1).clone().requires_grad_(True)
        with torch.enable_grad():
            tokens = model.encoder(neigh, patches.centers.expand(b, -1, -1))
            feats = model.embed_patches(tokens) if space == "embeddings" else torch.nn.functional.normalize(tokens, dim=-1)
            if feats.shape[-1] != chunk.shape[-1]:
                raise ValueError(f"directions are {chunk.shape[-1]}-d but the model's {space} are {feats.shape[-1]}-d")
            cos = (feats * chunk[:, None, :]).sum(-1)  # (b, G): copy i scored against direction i
            if focus is None:
                weight = torch.softmax(cos.detach() / temperature, dim=1)
            else:
                weight = torch.as_tensor(np.asarray(focus)[:, start:start + b].T, device=dev, dtype=dtype)
            (grad,) = torch.autograd.grad((cos * weight).sum(), neigh)
        grads.append((grad * neigh.detach()).sum(-1))  # (b, G, S): gradient times offset
        cosines.append(cos.detach())
    member = torch.cat(grads).permute(1, 2, 0).cpu().numpy()  # (G, S, K)
    encoded = p.encoded
    members = encoded[patches.member_idx[0].cpu().numpy()]
    centers = encoded[patches.center_idx[0].cpu().numpy()]
    total = np.zeros((len(cloud), num_dirs), dtype=np.float64)
    np.add.at(total, members.reshape(-1), member.reshape(g * s, num_dirs))
    return PointSaliency(total, member, members.astype(np.int64), centers.astype(np.int64),
                         torch.cat(cosines).T.cpu().numpy())
