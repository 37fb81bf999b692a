"""Training-point sampling (random, the release's mask-aware FPS) and the release's augmentation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from patchalign3d.lit.transforms import ShapeTransform, mask_aware_indices

from .conftest import FEATURE_DIM, NUM_POINTS, make_item


def _cloud_with_a_small_part(n: int = 5000, small: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points in a box with three labels: a big part, a tiny part of ``small`` points, and the rest none."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    masks = np.zeros((3, n), dtype=bool)
    masks[0, : n // 2] = True
    masks[1, n // 2 : n // 2 + small] = True
    masks[2, n // 2 : n // 2 + small // 2] = True  # overlaps the tiny part (labels may overlap)
    return points, masks


def test_mask_aware_keeps_every_label():
    points, masks = _cloud_with_a_small_part()
    idx = mask_aware_indices(points, masks, total=2048, min_per_label=32, seed=7)
    assert len(idx) == 2048 and len(np.unique(idx)) == 2048 and (np.diff(idx) > 0).all()
    assert masks[1, idx].sum() >= 32 and masks[2, idx].sum() == 20  # all 20 points of the label of 20
    # A uniform draw of 2048 of 5000 keeps about 16 of the 40 tiny-part points.
    assert np.mean([masks[1, np.random.default_rng(s).choice(5000, 2048, replace=False)].sum()
                    for s in range(20)]) < 20  # fmt: skip
    # One subset per seed: the same every epoch, another for another seed.
    assert np.array_equal(idx, mask_aware_indices(points, masks, 2048, 32, seed=7))
    assert not np.array_equal(idx, mask_aware_indices(points, masks, 2048, 32, seed=8))


def test_mask_aware_spreads_the_rest_by_fps():
    """The fill-up is farthest point sampling: no two of the chosen points are much closer than a grid's spacing."""
    grid = np.stack(np.meshgrid(*[np.arange(10.0)] * 3, indexing="ij"), -1).reshape(-1, 3)  # 1000 points, spacing 1
    dense = grid + 0.01  # a second copy of every grid point, 0.017 away
    points = np.concatenate([grid, dense]).astype(np.float32)
    idx = mask_aware_indices(points, np.zeros((0, 2000), bool), total=1000, min_per_label=32, seed=0)
    chosen = points[idx]
    d = np.linalg.norm(chosen[:, None] - chosen[None], axis=-1) + np.eye(1000) * 9
    assert d.min() > 0.5  # FPS took one of each pair; a random 1000 of 2000 would hold ~250 close pairs


def test_mask_aware_edge_cases():
    points, masks = _cloud_with_a_small_part(n=100, small=10)
    assert len(mask_aware_indices(points, masks, total=500, min_per_label=32, seed=0)) == 100  # all there are
    many = np.eye(100, dtype=bool)  # 100 labels of one point each: more than 64 points wanted
    assert len(mask_aware_indices(points, many, total=64, min_per_label=32, seed=0)) == 64


def _item(n: int = 3000) -> dict:
    points, masks = _cloud_with_a_small_part(n=n, small=40)
    return {"uid": "u1", "category": "thing", "points": points,
            "features": np.ones((n, 4), np.float16), "part_names": json.dumps(["big", "tiny", "tip"]),
            "part_masks": masks.astype(np.uint8)}  # fmt: skip


def test_shape_transform_mask_aware_is_one_subset_per_shape():
    t = ShapeTransform(num_points=1024, train=True, sampling="mask_aware", normalize=False, swap_yz=False)
    a, b = t(_item()), t(_item())
    assert torch.equal(a["points"], b["points"])  # the same subset every epoch, as released
    assert a["part_masks"][1].sum() >= 32
    more = ShapeTransform(num_points=4000, train=True, sampling="mask_aware")(_item())  # fewer points than asked
    assert more["points"].shape == (4000, 3)
    with pytest.raises(ValueError, match="unknown sampling 'fps'"):
        ShapeTransform(sampling="fps")


def _rotation_of(before: torch.Tensor, after: torch.Tensor) -> np.ndarray:
    """Best rotation taking centred ``before`` to centred ``after`` (Kabsch)."""
    x, y = (before - before.mean(0)).double().numpy(), (after - after.mean(0)).double().numpy()
    u, _, vt = np.linalg.svd(x.T @ y)
    d = np.sign(np.linalg.det(u @ vt))
    return (u @ np.diag([1, 1, d]) @ vt).T


def test_release_augmentation():
    torch.manual_seed(0)
    item = _item(200)
    # mask_aware with all 200 points: the same points in the same order every call, so only augmentation differs
    plain = ShapeTransform(num_points=200, train=False, normalize=False, swap_yz=False,
                           sampling="mask_aware")(item)["points"]  # fmt: skip
    t = ShapeTransform(num_points=200, train=True, normalize=False, swap_yz=False, augment="release",
                       sampling="mask_aware")  # fmt: skip
    outs = [t(item)["points"] for _ in range(200)]
    unchanged = sum(torch.equal(o, plain) for o in outs)
    assert 6 <= unchanged <= 40  # about 10 % (probability 0.9 of augmenting)
    tilts, spins = [], []
    for o in outs:
        if torch.equal(o, plain):
            continue
        rot = _rotation_of(plain, o)
        tilts.append(math.degrees(math.acos(min(1.0, rot[2, 2]))))  # how far z moved: rotations about x and y
        spins.append(math.degrees(math.atan2(rot[1, 0], rot[0, 0])))
        ratio = (o - o.mean(0)).norm(dim=1).mean() / (plain - plain.mean(0)).norm(dim=1).mean()
        assert 0.88 < ratio < 1.12  # scale 0.9-1.1 (and jitter)
    # Rotations about every axis, each within 20 degrees: z tilts by up to ~28 degrees, never more.
    assert max(tilts) > 15 and max(tilts) < 29
    assert max(np.abs(spins)) > 10
    with pytest.raises(ValueError, match="augment='release' sets rotation"):
        ShapeTransform(augment="release", rotate_deg=10.0)


@pytest.mark.parametrize("augment", [None, "release"])
def test_training_draws_are_a_function_of_seed_epoch_and_uid(augment):
    """What a resumed run needs: a shape's points and augmentation in an epoch do not depend on the random
    stream (what ran before, which worker) but only on the seed, the epoch and the shape."""
    knobs = {} if augment else {"rotate_deg": 30.0, "scale_range": (0.9, 1.1), "translate": 0.05, "jitter_sigma": 0.01}
    transform = ShapeTransform(num_points=64, train=True, seed=3, augment=augment, **knobs)
    item = make_item(5, "train", NUM_POINTS, FEATURE_DIM)
    torch.manual_seed(0)
    first = transform(item, epoch=2)["points"]
    torch.manual_seed(99)
    torch.rand(1000)  # whatever else consumed random numbers in between
    assert torch.equal(transform(item, epoch=2)["points"], first)
    assert not torch.equal(transform(item, epoch=3)["points"], first)  # a new draw every epoch
    other_seed = ShapeTransform(num_points=64, train=True, seed=4, augment=augment, **knobs)
    assert not torch.equal(other_seed(item, epoch=2)["points"], first)
    other_shape = dict(make_item(5, "train", NUM_POINTS, FEATURE_DIM), uid="train-0099")
    assert not torch.equal(transform(other_shape, epoch=2)["points"], first)
