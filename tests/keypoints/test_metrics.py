import numpy as np
import pytest

from patchalign3d.keypoints.metrics import (
    THRESHOLDS,
    KeypointIoU,
    count_errors,
    iou_from_counts,
    shape_errors,
)


def reference_iou(points_by_shape, pred, gt, thresholds, k=20):
    """The benchmark's definition written out independently: brute-force kNN graph, Floyd-Warshall on the
    symmetrised graph (unconnected = 0 afterwards, as sklearn's graph_shortest_path), then eval_det_cls_iou."""
    npos = fp_sum = fn_sum = 0
    out = []
    geo = {}
    for name, p in points_by_shape.items():
        n = len(p)
        d = np.linalg.norm(p[:, None] - p[None], axis=-1)
        g = np.full((n, n), np.inf)
        for i in range(n):
            order = [j for j in np.argsort(d[i], kind="stable") if j != i][:k]
            g[i, order] = d[i, order]
        g = np.minimum(g, g.T)
        np.fill_diagonal(g, 0)
        for m in range(n):
            g = np.minimum(g, g[:, m:m + 1] + g[m:m + 1, :])
        g[np.isinf(g)] = 0
        geo[name] = g
    for t in thresholds:
        npos = fp_sum = fn_sum = 0
        for name in gt:
            gk, pk = np.array(gt[name], int), np.array(pred[name], int)
            npos += len(gk)
            fp_sum += np.count_nonzero(np.all(geo[name][pk][:, gk] > t, axis=-1))
            fn_sum += np.count_nonzero(np.all(geo[name][gk][:, pk] > t, axis=-1))
        out.append((npos - fn_sum) / max(npos + fp_sum, np.finfo(float).eps))
    return np.array(out)


def test_thresholds_are_the_benchmark_loop():
    assert THRESHOLDS == (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1)


def test_hand_computed_line():
    # points every 0.035 on a line (10 points: every pair is a graph edge, geodesic = |dx|)
    pts = np.c_[np.arange(10) * 0.035, np.zeros(10), np.zeros(10)]
    fp, fn = shape_errors(pts, pred=[1, 6], gt=[0, 9])
    # pred 1 is 0.035 from gt 0; pred 6 is 0.105 from gt 9; gt 0 <- pred 1 at 0.035; gt 9 <- pred 6 at 0.105
    np.testing.assert_array_equal(fp, [2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(fn, fp)
    iou = iou_from_counts(2, fp, fn)
    np.testing.assert_allclose(iou, [0, 0, 0, 0] + [1 / 3] * 7)


def test_exact_hits_count_at_zero_and_duplicates_are_counted_twice():
    pts = np.c_[np.arange(5) * 0.5, np.zeros(5), np.zeros(5)]
    fp, fn = shape_errors(pts, pred=[2, 2], gt=[2], thresholds=[0.0])
    assert (fp[0], fn[0]) == (0, 0)
    fp, fn = shape_errors(pts, pred=[2, 2, 4], gt=[2], thresholds=[0.0])
    assert (fp[0], fn[0]) == (1, 0)


def test_empty_predictions_and_empty_ground_truth():
    pts = np.random.default_rng(0).normal(size=(40, 3))
    fp, fn = shape_errors(pts, pred=[], gt=[1, 2, 3])
    assert (fp == 0).all() and (fn == 3).all()
    fp, fn = shape_errors(pts, pred=[4, 5], gt=[])
    assert (fp == 2).all() and (fn == 0).all()
    d = np.zeros((0, 3))
    assert count_errors(d, d.T)[0].tolist() == [0] * 11


def test_matches_an_independent_reference_with_disconnected_parts():
    rng = np.random.default_rng(3)
    shapes, preds, gts = {}, {}, {}
    for s in range(3):
        a = rng.uniform(0, 0.3, size=(30, 3))
        b = rng.uniform(0, 0.3, size=(25, 3)) + [2.0, 0, 0]  # a second component (21 + neighbours stay inside)
        shapes[f"s{s}"] = np.concatenate([a, b])
        gts[f"s{s}"] = rng.choice(55, 4, replace=False).tolist()
        preds[f"s{s}"] = rng.choice(55, 5, replace=True).tolist()
    metric = KeypointIoU()
    for name in shapes:
        metric.update("chair", shapes[name], preds[name], gts[name])
    ours = metric.compute()["per_category"]["chair"]
    np.testing.assert_allclose(ours, reference_iou(shapes, preds, gts, THRESHOLDS), atol=1e-12)


def test_per_category_sums_then_mean_over_categories():
    pts = np.c_[np.arange(10) * 0.035, np.zeros(10), np.zeros(10)]
    m = KeypointIoU(thresholds=(0.05,))
    m.update("chair", pts, [1, 6], [0, 9])  # 1 tp-pair, 1 fp, 1 fn
    m.update("chair", pts, [3], [3, 3])  # gt deduplicated: one exact hit
    m.update("table", pts, [], [5])
    r = m.compute()
    assert r["per_category"]["chair"][0] == pytest.approx((3 - 1) / (3 + 1))
    assert r["per_category"]["table"][0] == 0.0
    assert r["mean"][0] == pytest.approx(0.25)
    assert m.num_shapes == {"chair": 2, "table": 1}
