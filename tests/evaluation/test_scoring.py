"""The rules predict_batch applies to point logits (the release's zero-logit rule, Find3D's "no label"
column), and PartNetE scored end to end with its unlabelled points counted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchalign3d.data import build_dataset
from patchalign3d.evaluation import EvalDataset, PromptEmbedder, Protocol, evaluate, predict_batch
from tests.data.bench_fixtures import blob, write_partnete, write_shapenetpart_h5
from tests.evaluation.tiny_models import constant_model, onehot


def model_frame(points: np.ndarray) -> torch.Tensor:
    """What segment() feeds the model: centred, max radius 1, y and z swapped."""
    x = points - points.mean(0)
    x = x / np.linalg.norm(x, axis=1).max()
    return torch.from_numpy(np.ascontiguousarray(x[:, [0, 2, 1]], dtype=np.float32))[None]


def test_membership_release_gives_points_in_no_patch_the_releases_label(tmp_path):
    """The release scores ShapeNetPart against 50 global parts: an all-zero row's argmax is global part 0,
    Airplane's body. So a point in no patch is 'body' on an airplane and a foreign part on a table."""
    pytest.importorskip("h5py")
    plane, plane_l = blob([40, 30, 20, 10], seed=1)
    table, table_l = blob([50, 30, 20], seed=2)
    root = write_shapenetpart_h5(tmp_path / "h5", [(0, plane, plane_l), (15, table, table_l + 47)])
    model = constant_model()
    texts = {p: onehot(0) if p in ("body", "desktop") else onehot(i + 1)
             for i, p in enumerate(["body", "wing", "tail", "engine or frame", "desktop", "leg or support", "drawer"])}
    protocol = Protocol(assign="membership_release", num_groups=2, max_points=None)
    data = EvalDataset(build_dataset("shapenetpart", root), protocol)
    items = sorted((data[i] for i in range(len(data))), key=lambda it: it.uid)
    preds = predict_batch(model, items, PromptEmbedder(texts, model), protocol)
    for it, pred, pts in zip(items, preds, (plane, table)):
        patches = model.group(model_frame(pts), num_groups=2)  # 2 patches of 16: most points in none
        covered = np.zeros(len(pts), bool)
        covered[patches.member_idx.reshape(-1).numpy()] = True
        assert 0 < covered.sum() < len(pts)
        assert (pred[covered] == 0).all()  # the patches all say body / desktop
        assert (pred[~covered] == (0 if it.category == "Airplane" else -1)).all()
    # plain membership gives those points their nearest centre instead
    nearest = predict_batch(model, items, PromptEmbedder(texts, model), Protocol(assign="membership", num_groups=2,
                                                                               max_points=None))
    assert all((p == 0).all() for p in nearest)
    # under the release preset, "membership" is the release's rule
    assert Protocol(preset="release", assign="membership").assign == "membership_release"


def test_none_if_negative(tmp_path):
    root = write_partnete(tmp_path / "pne", {"Bottle": {"1": [0, 64]}}, {"Bottle": ["lid"]})
    model = constant_model()
    away = {"lid": -onehot(0)}  # every logit negative
    data = EvalDataset(build_dataset("partnete", root), Protocol())
    items = [data[0]]
    assert (predict_batch(model, items, PromptEmbedder(away, model), Protocol())[0] == 0).all()
    none = Protocol(none_if_negative=True)
    assert (predict_batch(model, items, PromptEmbedder(away, model), none)[0] == -1).all()
    assert (predict_batch(model, items, PromptEmbedder({"lid": onehot(0)}, model), none)[0] == 0).all()


def test_partnete_paper_protocol_counts_points_of_no_part(tmp_path):
    # blobs: 5 points of no part (-1), 10 arm, 0 back, 3 leg, 12 seat, 0 wheel; every point predicted "arm".
    # release convention (parts present in the ground truth: arm, leg, seat), unlabelled points counted:
    #   arm 10 / (10 + 5 + 3 + 12) = 1/3, leg 0, seat 0  ->  1/9 = 11.1111 %
    meta = {"Chair": ["arm", "back", "leg", "seat", "wheel"]}
    root = write_partnete(tmp_path / "pne", {"Chair": {"179": [5, 10, 0, 3, 12, 0]}}, meta)
    texts = {p: onehot(0) if p == "arm" else onehot(i + 1) for i, p in enumerate(meta["Chair"])}
    r = evaluate("partnete", root, model=constant_model(), text=texts)
    assert r["protocol"]["unlabelled"] == "count" and r["protocol"]["unlabelled_effective"] == "count"
    assert r["protocol"]["preset"] == "paper" and r["metric"]["convention"] == "release"
    assert r["metric"]["miou"] == pytest.approx(100 / 9, abs=1e-3)
    assert r["per_category"][0]["parts"] == {"arm": pytest.approx(100 / 3, abs=1e-3), "leg": 0.0, "seat": 0.0}
    ignored = evaluate("partnete", root, model=constant_model(), text=texts, protocol=Protocol(unlabelled="ignore"))
    assert ignored["metric"]["miou"] == pytest.approx(100 * (10 / 25) / 3, abs=1e-3)
