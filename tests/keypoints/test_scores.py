"""Per-name probabilities and per-point saliency, against hand computations through the plain forward pass."""

import copy

import numpy as np
import pytest
import torch

from patchalign3d.keypoints import detect_keypoints, point_saliency
from patchalign3d.keypoints.peaks import focus_on_peaks, peak_patches, refine_peaks
from patchalign3d.keypoints.scores import PointSaliency, name_probability
from tests.conftest import make_cloud


def _frame(cloud, dtype=torch.float32):
    """The release's preprocessing by hand: centre, unit sphere, y/z swap (as tests/test_api.py does)."""
    x = cloud - cloud.mean(0)
    return torch.from_numpy((x / np.linalg.norm(x, axis=1).max())[:, [0, 2, 1]].astype(np.float32)).to(dtype)[None]


def _patch_cosines(model, neighborhood, centers, direction):
    with torch.no_grad():
        emb = torch.nn.functional.normalize(model.proj(model.encoder(neighborhood, centers)), dim=-1)
    return (emb[0] @ torch.as_tensor(direction, dtype=emb.dtype)).numpy()


def _embeddings(model, cloud):
    with torch.no_grad():
        p = model.group(_frame(cloud, next(model.parameters()).dtype))
        emb = torch.nn.functional.normalize(model.proj(model.encoder(p.neighborhood, p.centers)), dim=-1)
    return p, emb[0].numpy()


def test_saliency_is_the_finite_difference_of_pulling_a_member_to_its_centre(tiny_model):
    cloud = make_cloud(500, seed=3)
    tiny_model = copy.deepcopy(tiny_model).double()  # finite differences need the digits
    patches, emb = _embeddings(tiny_model, cloud)
    g = 5
    direction = emb[g] + 0.3 * emb[9]
    direction = direction / np.linalg.norm(direction)
    focus = np.zeros((len(emb), 1))
    focus[g] = 1.0
    sal = point_saliency(cloud, direction[None], model=tiny_model, focus=focus)
    base = _patch_cosines(tiny_model, patches.neighborhood, patches.centers, direction)[g]
    eps, fd = 1e-4, []
    for s in range(patches.neighborhood.shape[2]):
        moved = patches.neighborhood.clone()
        moved[0, g, s] *= 1 - eps  # member s a little closer to its centre
        fd.append((base - _patch_cosines(tiny_model, moved, patches.centers, direction)[g]) / eps)
    fd = np.asarray(fd)
    assert sal.members[g].tolist() == patches.member_idx[0, g].tolist()
    assert np.abs(fd).max() > 1e-6  # the members do move the score
    np.testing.assert_allclose(sal.member_saliency[g, :, 0], fd, atol=0.02 * np.abs(fd).max())
    assert int(np.argmax(sal.member_saliency[g, :, 0])) == int(np.argmax(fd))
    # the whole-cloud map sums every patch's member saliency per point
    assert sal.saliency.shape == (500, 1) and sal.cosines.shape == (len(emb), 1)
    assert sal.cosines[g, 0] == pytest.approx(base, abs=1e-9)


def test_refinement_moves_a_centre_peak_to_its_most_salient_member():
    members = np.array([[10, 11, 12], [20, 21, 22]])
    sal = PointSaliency(saliency=np.zeros((30, 2)), members=members, centers=np.array([10, 20]),
                        cosines=np.zeros((2, 2)),
                        member_saliency=np.array([[[0.0, 0.0], [0.2, -1.0], [0.5, -2.0]],
                                                  [[0.0, 0.0], [-0.1, 0.3], [-0.2, 0.1]]]))
    # peak 0 (name 0, patch 0) -> member 12; peak 1 (name 0, patch 1): no positive saliency, stays on its centre;
    # peak 2 (name 1, patch 1) -> member 21; peak 3 sits off the centre (already at point resolution): stays
    out = refine_peaks(np.array([10, 20, 20, 11]), np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0]), sal)
    assert out.tolist() == [12, 20, 21, 11]
    points = np.zeros((30, 3))
    points[[10, 20], 0] = [0.0, 1.0]
    points[11, 0], points[21, 0] = 0.1, 0.9
    assert peak_patches(points, np.array([11, 21, 20]), np.array([10, 20])).tolist() == [0, 1, 1]
    assert focus_on_peaks(2, np.array([1]), np.array([1]), 2).tolist() == [[0, 0], [0, 1]]


def test_detection_refines_each_peak_to_its_most_salient_patch_member(tiny_model, bank):
    cloud = make_cloud(600, seed=11)
    names = ["leg end", "nose"]
    opts = dict(model=tiny_model, text=bank, max_instances=3, min_probability=None)
    coarse = detect_keypoints(cloud, names, refine=False, **opts)
    fine = detect_keypoints(cloud, names, refine=True, **opts)
    patches, _ = _embeddings(tiny_model, cloud)
    members = patches.member_idx[0].numpy()
    centres = patches.center_idx[0].numpy()
    assert len(fine) == len(coarse) and coarse.info["on_patch_centres"] >= 0.5  # mostly on centres
    text = bank.lookup(names).numpy()
    for peak, k, kp in zip(coarse.indices, coarse.labels, fine.indices):
        if peak not in centres:  # a peak between centres is at point resolution already
            assert kp == peak
            continue
        g = int(np.flatnonzero(centres == peak)[0])
        assert kp in members[g]  # moved inside its own patch only
        # the score differentiated is the sum of the name's cosines at all its peaks' patches
        focus = np.zeros((len(centres), 1), np.float32)
        for other in coarse.indices[coarse.labels == k]:
            focus[np.argmin(((cloud[centres] - cloud[other]) ** 2).sum(1))] = 1.0
        sal = point_saliency(cloud, text[[k]], model=tiny_model, focus=focus).member_saliency[g, :, 0]
        # where it went is the member that most makes the patch answer to the name (or it stayed put)
        assert kp == (members[g][np.argmax(sal)] if sal.max() > 0 else peak)
    assert fine.info["on_patch_centres"] < coarse.info["on_patch_centres"]


def test_absent_names_follow_the_models_sigmoid(tiny_model, monkeypatch):
    cloud = make_cloud(500, seed=5)
    _, emb = _embeddings(tiny_model, cloud)
    here = emb[7]  # cosine 1 with patch 7
    rng = np.random.default_rng(0)
    elsewhere = rng.normal(size=emb.shape[1])
    elsewhere /= np.linalg.norm(elsewhere)
    best_elsewhere = float((emb @ elsewhere).max())
    scale = float(tiny_model.logit_scale(None).detach())
    # a bias that puts 0.5 between the two names' best logits: "here" is present, "elsewhere" absent
    monkeypatch.setattr(tiny_model, "logit_bias", -scale * (1.0 + best_elsewhere) / 2, raising=False)
    text = np.stack([here, elsewhere]).astype(np.float32)
    kps = detect_keypoints(cloud, ["here", "elsewhere"], model=tiny_model, text=text, min_probability=0.5)
    assert kps.absent == ["elsewhere"] and len(kps.of("elsewhere")) == 0 and len(kps.of("here")) >= 1
    expected = 1 / (1 + np.exp(-(scale * np.array([1.0, best_elsewhere]) + tiny_model.logit_bias)))
    np.testing.assert_allclose([kps.info["probability"][n] for n in ("here", "elsewhere")], expected, atol=1e-3)
    assert name_probability(tiny_model, np.array([0.0])) == pytest.approx(1 / (1 + np.exp(-tiny_model.logit_bias)))
    both = detect_keypoints(cloud, ["here", "elsewhere"], model=tiny_model, text=text, min_probability=None)
    assert both.absent == [] and len(both.of("elsewhere")) >= 1
    with pytest.raises(ValueError, match="min_probability"):
        detect_keypoints(cloud, ["here"], model=tiny_model, text=text[:1], min_probability=1.5)


def test_the_sigmoid_bias_travels_with_the_model(tiny_model, tmp_path):
    from patchalign3d.model.checkpoint import LIGHTNING_KEY, export_released, load_model

    ckpt = {"state_dict": {**{f"model.{k}": v for k, v in tiny_model.state_dict().items()},
                           "logit_bias": torch.tensor(-3.25)},
            LIGHTNING_KEY: {"config": tiny_model.config.to_dict(), "stage": 2}}
    torch.save(ckpt, tmp_path / "stage2.ckpt")
    from_lightning = load_model(tmp_path / "stage2.ckpt")
    assert from_lightning.logit_bias == -3.25
    exported = load_model(export_released(from_lightning, tmp_path / "m.pt"))
    assert exported.logit_bias == -3.25
    assert name_probability(exported, np.array([0.0]))[0] == pytest.approx(1 / (1 + np.exp(3.25)))
