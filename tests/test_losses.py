"""Losses and targets against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from patchalign3d.losses import (
    cosine_distillation_loss,
    patch_accuracy,
    patch_average,
    patch_feature_targets,
    patch_label_fractions,
    release_bce_loss,
    siglip_loss,
)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_patch_average_and_targets_by_hand():
    # 1 shape, 4 points with 2-d features; patch 0 = points {0, 1}, patch 1 = points {1, 3}.
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [0.0, 3.0]]])
    members = torch.tensor([[[0, 1], [1, 3]]])
    avg = patch_average(feats, members)
    assert torch.allclose(avg, torch.tensor([[[0.5, 0.5], [0.0, 2.0]]]))
    tgt = patch_feature_targets(feats.half(), members)
    s = 1 / math.sqrt(2)
    assert tgt.dtype == torch.float32
    assert torch.allclose(tgt, torch.tensor([[[s, s], [0.0, 1.0]]]), atol=1e-6)


def test_patch_average_paths_agree():
    # Few members (gather path) and many members (matrix path) give the same means as a plain loop.
    gen = torch.Generator().manual_seed(0)
    for g, m, n in ((2, 3, 10), (6, 4, 10)):
        values = torch.randn(2, n, 5, generator=gen).half()
        members = torch.stack([torch.stack([torch.randperm(n, generator=gen)[:m] for _ in range(g)]) for _ in range(2)])
        want = torch.stack([torch.stack([values[b, members[b, i]].float().mean(0) for i in range(g)]) for b in range(2)])
        assert torch.allclose(patch_average(values, members), want, atol=1e-6)


def test_patch_label_fractions_by_hand():
    # 5 points, 2 texts; point 4 unlabelled, point 2 carries both labels.
    labels = torch.tensor([[[1, 0], [1, 0], [1, 1], [0, 1], [0, 0]]], dtype=torch.bool)
    members = torch.tensor([[[0, 1, 2], [2, 3, 4]]])
    y = patch_label_fractions(labels, members)
    assert torch.allclose(y, torch.tensor([[[1.0, 1 / 3], [1 / 3, 2 / 3]]]))


def test_cosine_loss_by_hand():
    pred = torch.tensor([[[2.0, 0.0], [1.0, 1.0], [0.0, -3.0]]])
    target = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    cos = [1.0, 1 / math.sqrt(2), -1.0]
    loss, mean_cos = cosine_distillation_loss(pred, target)
    assert loss.item() == pytest.approx(sum(1 - c for c in cos) / 3, abs=1e-6)
    assert mean_cos.item() == pytest.approx(sum(cos) / 3, abs=1e-6)
    masked, _ = cosine_distillation_loss(pred, target, mask=torch.tensor([[True, True, False]]))
    assert masked.item() == pytest.approx((0 + 1 - 1 / math.sqrt(2)) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        cosine_distillation_loss(pred, target[..., :1])


LOGITS = [[[2.0, -1.0, 0.5], [-0.5, 1.5, 0.0]], [[0.3, -2.0, 1.0], [1.0, 0.2, -0.7]]]  # (B=2, G=2, T=3)
TARGETS = [[[1.0, 0.0, 0.25], [0.0, 0.5, 0.0]], [[0.0, 0.0, 1.0], [0.75, 0.0, 0.0]]]
MASK = [[True, True, False], [True, False, True]]


def _bce(s: float, y: float, w: float = 1.0) -> float:
    return -(w * y * math.log(_sig(s)) + (1 - y) * math.log(1 - _sig(s)))


def test_siglip_loss_by_hand():
    logits, targets = torch.tensor(LOGITS), torch.tensor(TARGETS)
    # Sum over texts, mean over the B*G = 4 patches.
    full = sum(_bce(LOGITS[b][g][t], TARGETS[b][g][t]) for b in range(2) for g in range(2) for t in range(3)) / 4
    assert siglip_loss(logits, targets).item() == pytest.approx(full, rel=1e-6)
    masked = sum(_bce(LOGITS[b][g][t], TARGETS[b][g][t])
                 for b in range(2) for g in range(2) for t in range(3) if MASK[b][t]) / 4
    assert siglip_loss(logits, targets, torch.tensor(MASK)).item() == pytest.approx(masked, rel=1e-6)


def test_release_bce_loss_by_hand():
    logits, targets = torch.tensor(LOGITS), torch.tensor(TARGETS)
    # Unmasked: K = 3 texts per shape -> pos_weight 2; mean over G*K = 6 pairs, then over the 2 shapes.
    per_shape = [sum(_bce(LOGITS[b][g][t], TARGETS[b][g][t], w=2.0) for g in range(2) for t in range(3)) / 6
                 for b in range(2)]
    assert release_bce_loss(logits, targets).item() == pytest.approx(sum(per_shape) / 2, rel=1e-6)
    # Masked: K = 2 per shape -> pos_weight max(1, 1) = 1; mean over 4 pairs per shape.
    per_shape = [sum(_bce(LOGITS[b][g][t], TARGETS[b][g][t], w=1.0) for g in range(2) for t in range(3) if MASK[b][t]) / 4
                 for b in range(2)]
    got = release_bce_loss(logits, targets, torch.tensor(MASK)).item()
    assert got == pytest.approx(sum(per_shape) / 2, rel=1e-6)


@pytest.mark.parametrize("loss_fn", [siglip_loss, release_bce_loss])
def test_shapes_without_texts_are_skipped(loss_fn):
    """A shape with no part names is left out of the mean (as released), never an error; none left: zero."""
    logits, targets = torch.tensor(LOGITS, requires_grad=True), torch.tensor(TARGETS)
    only_first = torch.tensor([[True, True, False], [False, False, False]])
    # Shape 1 has no texts: the loss is shape 0's alone over its texts t0, t1 (release: K = 2 -> weight 1,
    # mean over 4 pairs; siglip: sum over the 2 texts, mean over the 2 patches).
    pairs = sum(_bce(LOGITS[0][g][t], TARGETS[0][g][t]) for g in range(2) for t in range(2))
    expected = pairs / 4 if loss_fn is release_bce_loss else pairs / 2
    assert loss_fn(logits, targets, only_first).item() == pytest.approx(expected, rel=1e-6)
    none = loss_fn(logits, targets, torch.zeros(2, 3, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))
    empty = loss_fn(logits[..., :0], targets[..., :0])  # a batch without a single part name
    assert empty.item() == 0.0 and empty.requires_grad


def test_patch_accuracy_by_hand():
    logits, targets = torch.tensor(LOGITS), torch.tensor(TARGETS)
    # Restricted to each shape's texts: shape 0 picks t0, t1 (labels: t0 majority ok, t1 majority ok);
    # shape 1 picks t2 (label t2: ok) and t0 (label t0: ok) -> all 4 correct.
    assert patch_accuracy(logits, targets, torch.tensor(MASK)).tolist() == [1.0, 1.0, 1.0, 1.0]
    # Unrestricted: shape 1 patch 0 still t2; flip a logit so shape 0 patch 1 picks t2 (label 0) -> wrong.
    logits[0, 1, 2] = 5.0
    assert patch_accuracy(logits, targets).tolist() == [1.0, 0.0, 1.0, 1.0]
    # Unlabelled patches are left out.
    targets[1, 1] = 0.0
    assert patch_accuracy(logits, targets).numel() == 3
    assert patch_accuracy(logits[..., :0], targets[..., :0]).numel() == 0


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(B, G, T\)"):
        siglip_loss(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="text_mask"):
        siglip_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, G, M\)"):
        patch_average(torch.zeros(1, 4, 2), torch.zeros(2, 1, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        patch_average(torch.zeros(1, 4, 2), torch.zeros(1, 1, 2))
