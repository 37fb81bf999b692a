"""Training targets and losses of both stages.

Stage 1 distils per-point teacher features into patch tokens (:func:`cosine_distillation_loss` against
:func:`patch_feature_targets`). Stage 2 aligns patch embeddings with part-name embeddings under fractional
labels (:func:`patch_label_fractions`), with either the paper's SigLIP loss (:func:`siglip_loss`) or the
release's weighted binary cross-entropy (:func:`release_bce_loss`).

Shapes: ``B`` shapes, ``N`` points per shape, ``G`` patches, ``M`` members per patch, ``D`` feature width,
``T`` texts (part names) of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "cosine_distillation_loss",
    "patch_accuracy",
    "patch_average",
    "patch_feature_targets",
    "patch_label_fractions",
    "release_bce_loss",
    "shapes_with_texts",
    "siglip_loss",
]


def _check_members(values: Tensor, member_idx: Tensor) -> None:
    if values.dim() != 3:
        raise ValueError(f"per-point values must have shape (B, N, C), got {tuple(values.shape)}")
    if member_idx.dim() != 3 or member_idx.shape[0] != values.shape[0]:
        raise ValueError(
            f"member_idx must have shape (B, G, M) with B={values.shape[0]}, got {tuple(member_idx.shape)}"
        )
    if member_idx.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"member_idx must hold integer indices, got {member_idx.dtype}")


def patch_average(values: Tensor, member_idx: Tensor) -> Tensor:
    """Mean of per-point values over each patch's member points, in float32.

    Args:
        values: ``(B, N, C)`` per-point values (any float or bool dtype).
        member_idx: ``(B, G, M)`` indices into ``N`` (as in :class:`~patchalign3d.model.Patches`).

    Returns:
        ``(B, G, C)`` float32 averages.
    """
    _check_members(values, member_idx)
    b, n, c = values.shape
    _, g, m = member_idx.shape
    idx = member_idx.long()
    if g * m < n:
        # Fewer member rows than points (small models): gathering them is cheaper than converting all N rows.
        rows = torch.gather(values, 1, idx.reshape(b, g * m, 1).expand(-1, -1, c))
        return rows.view(b, g, m, c).float().mean(2)
    # Otherwise a (B, G, N) membership-count matrix times the values: one batched GEMM instead of the
    # (B, G, M, C) gather, which is 400 MB for a batch of 32 with 768-d teacher features (released sizes).
    counts = values.new_zeros((b, g, n), dtype=torch.float32)
    counts.scatter_add_(2, idx, counts.new_ones(idx.shape))
    # Outside autocast: bf16 targets would be a needless loss of precision.
    with torch.autocast(device_type=values.device.type, enabled=False):
        return torch.bmm(counts, values.float()) / m


def patch_feature_targets(features: Tensor, member_idx: Tensor, eps: float = 1e-6) -> Tensor:
    """Stage-1 targets: the L2-normalised mean of each patch's member-point teacher features.

    Args:
        features: ``(B, N, D)`` per-point teacher features.
        member_idx: ``(B, G, M)`` member indices.

    Returns:
        ``(B, G, D)`` unit-norm float32 targets.
    """
    return F.normalize(patch_average(features, member_idx), dim=-1, eps=eps)


def patch_label_fractions(point_labels: Tensor, member_idx: Tensor) -> Tensor:
    """Stage-2 fractional labels ``y[b, i, j]``: the fraction of patch ``i``'s members labelled ``j``.

    Rows need not sum to one: points may carry several labels (overlapping masks) or none.

    Args:
        point_labels: ``(B, N, T)`` bool or {0, 1} per-point labels.
        member_idx: ``(B, G, M)`` member indices.

    Returns:
        ``(B, G, T)`` float32 fractions in ``[0, 1]``.
    """
    return patch_average(point_labels, member_idx)


def _masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return x.mean()
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def cosine_distillation_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mean of ``1 - cos(pred, target)`` over patches.

    Args:
        pred: ``(..., D)`` predictions (normalised here, so raw head outputs are fine).
        target: ``(..., D)`` targets, same shape.
        mask: optional ``(...)`` bool, patches that count.

    Returns:
        ``(loss, mean_cosine)``, two scalars; ``loss == 1 - mean_cosine``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} shapes differ")
    cos = F.cosine_similarity(pred.float(), target.float(), dim=-1)
    mean_cos = _masked_mean(cos, mask)
    return 1.0 - mean_cos, mean_cos.detach()


def _check_pairs(logits: Tensor, targets: Tensor, text_mask: Tensor | None) -> Tensor:
    if logits.dim() != 3 or logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must both have shape (B, G, T), got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    b, _, t = logits.shape
    if text_mask is None:
        return logits.new_ones((b, t), dtype=torch.bool)
    if text_mask.shape != (b, t):
        raise ValueError(f"text_mask must have shape (B, T) = {(b, t)}, got {tuple(text_mask.shape)}")
    return text_mask.bool()


def shapes_with_texts(text_mask: Tensor | None, logits: Tensor) -> Tensor:
    """``(B,)`` bool: the shapes that have at least one text to be scored against (the others are skipped).

    Without a mask every shape is scored against all ``T`` texts of the batch, so only ``T == 0`` leaves none.
    """
    b, _, t = logits.shape
    if text_mask is None:
        return logits.new_full((b,), t > 0, dtype=torch.bool)
    return text_mask.bool().any(-1)


def _mean_over(per_shape: Tensor, keep: Tensor, logits: Tensor) -> Tensor:
    """Mean of ``(B,)`` per-shape losses over ``keep``; zero (still in the graph) when none is kept."""
    if not keep.any():
        return logits.sum() * 0.0  # gradients of zero reach every parameter: DDP ranks stay in step
    return per_shape[keep].mean()


def siglip_loss(
    logits: Tensor, targets: Tensor, text_mask: Tensor | None = None
) -> Tensor:
    """Sigmoid (SigLIP) loss with fractional labels, as the paper states it.

    Each (patch, text) pair is an independent binary problem with soft target ``y``:
    ``l = -[y log σ(s) + (1 - y) log(1 - σ(s))]``, where ``s = <z, t> / τ + b`` (scale and bias are applied by
    the caller). As in SigLIP, the pair losses are summed over texts and averaged over the "images" (here
    patches) of the shapes that have texts; shapes without any are skipped.

    Args:
        logits: ``(B, G, T)`` pair logits ``s``.
        targets: ``(B, G, T)`` fractional labels in ``[0, 1]``.
        text_mask: optional ``(B, T)`` bool, the texts each shape is scored against (default: all).

    Returns:
        Scalar loss.
    """
    mask = _check_pairs(logits, targets, text_mask)
    pair = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    per_shape = (pair * mask.unsqueeze(1)).sum(-1).mean(-1)  # (B,): sum over texts, mean over patches
    return _mean_over(per_shape, shapes_with_texts(text_mask, logits), logits)


def release_bce_loss(logits: Tensor, targets: Tensor, text_mask: Tensor | None = None) -> Tensor:
    """The release's loss: BCE with logits and ``pos_weight = max(1, K - 1)``, per shape, batch-averaged.

    ``K`` is the number of texts shape ``b`` is scored against (the release: its own part names); the weight
    balances the one positive name of a patch against its ``K - 1`` negatives. Each shape's loss is the mean
    over its ``G x K`` pairs; shapes with no text are skipped (as released).

    Args:
        logits: ``(B, G, T)`` pair logits (scale applied by the caller; the release has no bias).
        targets: ``(B, G, T)`` fractional labels in ``[0, 1]``.
        text_mask: optional ``(B, T)`` bool, the texts of each shape (default: all ``T``).

    Returns:
        Scalar loss.
    """
    mask = _check_pairs(logits, targets, text_mask)
    num_texts = mask.sum(-1).float()  # (B,)
    pos_weight = (num_texts - 1).clamp(min=1.0)[:, None, None]
    s, y = logits.float(), targets.float()
    # -[w y log σ(s) + (1 - y) log(1 - σ(s))], with log σ(s) = -softplus(-s), log(1 - σ(s)) = -softplus(s).
    pair = pos_weight * y * F.softplus(-s) + (1.0 - y) * F.softplus(s)
    m = mask.unsqueeze(1).to(pair.dtype)
    per_shape = (pair * m).sum((1, 2)) / (m.sum((1, 2)) * logits.shape[1]).clamp(min=1.0)
    return _mean_over(per_shape, shapes_with_texts(text_mask, logits), logits)


def patch_accuracy(logits: Tensor, targets: Tensor, text_mask: Tensor | None = None) -> Tensor:
    """Per-patch correctness: the top-scoring text (among the shape's texts) is a majority label of the patch.

    Patches without any label are left out.

    Args:
        logits: ``(B, G, T)``.
        targets: ``(B, G, T)`` fractional labels.
        text_mask: optional ``(B, T)`` bool.

    Returns:
        ``(P,)`` float tensor of 0/1 over the ``P`` labelled patches (feed it to a mean metric).
    """
    mask = _check_pairs(logits, targets, text_mask).unsqueeze(1)
    if logits.shape[-1] == 0:  # no texts at all: no patch can be scored
        return logits.new_zeros(0)
    y = targets.float().masked_fill(~mask, 0.0)
    pred = logits.float().masked_fill(~mask, float("-inf")).argmax(-1, keepdim=True)
    best = y.amax(-1)
    hit = y.gather(-1, pred).squeeze(-1) >= best
    labelled = best > 0
    return hit[labelled].float()
