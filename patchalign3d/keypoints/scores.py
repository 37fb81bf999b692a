"""How well each point of a shape answers to each keypoint name: the patch field and a calibrated "is it here"
probability per name.

:func:`zero_shot_scores`: each patch's cosine with each name's text embedding, spread to the points by
inverse-distance weights over the 3 nearest patch centres (:func:`patchalign3d.segment` with
``assign="interpolate"`` at temperature 1), and each name's best patch probability under the model's own
sigmoid, ``sigmoid(scale * cos + bias)`` (:func:`name_probability`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import expit

from patchalign3d.api import _resolve_model, segment, text_embeddings
from patchalign3d.text import TextBank, TextEncoder, get_text_encoder, spec_from_meta


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
