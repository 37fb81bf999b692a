"""The three IoU conventions on hand-made predictions; expected values are worked out by hand below."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from patchalign3d.evaluation.metrics import PartIoU, part_counts, part_ious, shape_iou

# 8 points, 5 parts. The last two points are unlabelled (-1).
#   part 0: in truth and prediction       part 1: in both
#   part 2: in truth, never predicted     part 3: predicted, absent from truth
#   part 4: absent from both
TARGET = [0, 0, 0, 1, 1, 2, -1, -1]
PRED = [0, 0, 1, 1, 3, 3, 0, 2]
# Unlabelled points dropped ("ignore"): the first six points.
#   part 0: I = 2, U = 3 (truth 3, pred 2)      -> 2/3
#   part 1: I = 1, U = 3 (truth 2, pred 2)      -> 1/3
#   part 2: I = 0, U = 1                        -> 0
#   part 3: I = 0, U = 2                        -> 0
#   part 4: I = 0, U = 0
# Unlabelled points kept ("count"): part 0 gains one predicted point (U = 4 -> 1/2), part 2 one (U = 2 -> 0).


def test_counts_by_hand():
    inter, union, n_t, n_p = part_counts(np.array(PRED), np.array(TARGET), 5)
    assert inter.tolist() == [2, 1, 0, 0, 0]
    assert union.tolist() == [3, 3, 1, 2, 0]
    assert n_t.tolist() == [3, 2, 1, 0, 0] and n_p.tolist() == [2, 2, 0, 2, 0]
    _, union_c, _, n_p_c = part_counts(torch.tensor(PRED), torch.tensor(TARGET), 5, unlabelled="count")
    assert union_c.tolist() == [4, 3, 2, 2, 0] and n_p_c.tolist() == [3, 2, 1, 2, 0]


def test_release_convention():
    # parts present in the truth: 0, 1, 2 -> (2/3 + 1/3 + 0) / 3
    ious = part_ious(PRED, TARGET, 5, "release")
    assert ious[:3].tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert math.isnan(ious[3]) and math.isnan(ious[4])  # only predicted; absent from both
    assert shape_iou(PRED, TARGET, 5, "release") == pytest.approx(1 / 3)


def test_find3d_convention():
    # skipped only when absent from both (part 4): (2/3 + 1/3 + 0 + 0) / 4 with unlabelled dropped
    assert shape_iou(PRED, TARGET, 5, "find3d", unlabelled="ignore") == pytest.approx(1 / 4)
    # Find3D's own handling keeps unlabelled points: (1/2 + 1/3 + 0 + 0) / 4 = 5/24
    assert shape_iou(PRED, TARGET, 5, "find3d") == pytest.approx(5 / 24)
    assert math.isnan(part_ious(PRED, TARGET, 5, "find3d")[4])


def test_pointbert_convention():
    # every part counts, part 4 (empty union) scores 1: (2/3 + 1/3 + 0 + 0 + 1) / 5
    ious = part_ious(PRED, TARGET, 5, "pointbert")
    assert ious.tolist() == pytest.approx([2 / 3, 1 / 3, 0.0, 0.0, 1.0])
    assert shape_iou(PRED, TARGET, 5, "pointbert") == pytest.approx(2 / 5)


def test_perfect_and_empty_shapes():
    t = [1, 1, 0]
    assert shape_iou(t, t, 3, "release") == 1.0 and shape_iou(t, t, 3, "pointbert") == 1.0
    # no labelled point: nothing to score under release and find3d; pointbert scores empty unions as 1
    assert math.isnan(shape_iou([0, 1], [-1, -1], 2, "release"))
    assert math.isnan(shape_iou([0, 1], [-1, -1], 2, "find3d", unlabelled="ignore"))
    assert shape_iou([0, 1], [-1, -1], 2, "pointbert") == 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"pred labels must lie in \[-1, 2\], found \[0, 3\]"):
        part_counts([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="pred has 2 points but target has 3"):
        part_counts([0, 1], [0, 1, 1], 3)
    with pytest.raises(TypeError, match="integer labels"):
        part_counts(np.array([0.0, 1.0]), [0, 1], 3)
    with pytest.raises(ValueError, match="unknown IoU convention 'pointnet'"):
        shape_iou([0], [0], 1, "pointnet")


def test_part_iou_metric_aggregation():
    # A: shape 0 (release 1/3, as above) and shape 1 (perfect, 1); B: shape 2 (all wrong, 0)
    # mIoU = (1/3 + 1 + 0) / 3 = 4/9;  cIoU = mean(A: 2/3, B: 0) = 1/3
    m = PartIoU(["A", "B", "C"], convention="release")
    m.update(np.array(PRED), np.array(TARGET), 5, "A", 0)
    m.update([0, 0, 1, 1], [0, 0, 1, 1], 2, 0, 1)
    m.update([1, 0], [0, 1], 2, "B", 2)
    m.update([0, 0, 1, 1], [0, 0, 1, 1], 2, "A", 1)  # a padded duplicate from a distributed sampler
    m.update([0, 0], [-1, -1], 2, "C", 3)  # nothing labelled: not scored
    s = m.compute()
    assert s.miou == pytest.approx(400 / 9) and s.ciou == pytest.approx(100 / 3)
    assert s.num_shapes == 4 and s.num_scored == 3
    assert s.per_category == {
        "A": {"miou": pytest.approx(200 / 3), "num_shapes": 2},
        "B": {"miou": 0.0, "num_shapes": 1},
    }
    assert s.shape_index.tolist() == [0, 1, 2, 3] and math.isnan(s.shape_iou[3])
    # counted parts: shape 0 -> parts 0,1,2; shape 1 -> 0,1; shape 2 -> 0,1 (duplicate rows dropped)
    assert s.part_rows[:, :2].tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [2, 0], [2, 1]]
    assert s.part_rows[:3, 2].tolist() == pytest.approx([200 / 3, 100 / 3, 0.0])


def test_part_iou_metric_conventions_differ():
    for conv, expected in (("release", 100 / 3), ("find3d", 25.0), ("pointbert", 40.0)):
        m = PartIoU(["A"], convention=conv, unlabelled="ignore")
        m.update(PRED, TARGET, 5, "A", 0)
        assert m.compute().miou == pytest.approx(expected)
    with pytest.warns(UserWarning, match="called before the ``update``"):
        assert math.isnan(PartIoU(["A"]).compute().miou)
