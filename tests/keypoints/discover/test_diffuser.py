"""KeyPointDiffuser's pieces against hand-worked values, and the LightningModule's contract.

EDM preconditioning and loss: rhys-newbury/keypoint_diffuser ``keypointdeformer/utils/loss.py`` (``EDMLoss``:
``sigma = exp(randn * P_std + P_mean)``, weight ``(sigma² + sigma_data²) / (sigma * sigma_data)²``, sigma_data
0.3) and Karras et al. 2022 (c_skip = sigma_data² / (sigma² + sigma_data²), c_out = sigma sigma_data /
sqrt(sigma² + sigma_data²)); keypoints as convex combinations of the input points (the paper's method).
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from patchalign3d.keypoints.discover.augment import DeformDraw, from_model_frame, model_frame
from patchalign3d.keypoints.discover.data import fit_diffuser
from patchalign3d.keypoints.discover.diffuser import KeyPointDiffuser
from patchalign3d.keypoints.discover.diffuser_net import (
    Denoiser,
    EDMPrecond,
    KeypointEncoder,
    chamfer,
    kl_to_standard,
)

SMALL = dict(width=16, heads=2, aux_dim=3, decoder_width=16, decoder_depth=1, recon_points=64)


def test_deformation_by_hand():
    pts = torch.tensor([[[1.0, 0.0, 1.0], [0.5, 0.5, 0.0]]])
    stretch = DeformDraw(torch.tensor([[[2.0, 1.0, 1.0]]]), torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), up=2)
    assert stretch(pts).tolist() == [[[2.0, 0.0, 1.0], [1.0, 0.5, 0.0]]]
    # twist 0.5 rad per unit of height, taper 0.1: the point at height 1 turns by 0.5 and grows by 1.1
    twist = DeformDraw(torch.ones(1, 1, 3), torch.full((1, 1, 1), 0.1), torch.full((1, 1, 1), 0.5), up=2)
    out = twist(pts)[0]
    assert out[0].tolist() == pytest.approx([1.1 * math.cos(0.5), 1.1 * math.sin(0.5), 1.0])
    assert out[1].tolist() == pytest.approx([0.5, 0.5, 0.0])  # height 0: neither twist nor taper


def test_chamfer_and_kl_by_hand():
    a, b = torch.tensor([[[0.0, 0, 0]]]), torch.tensor([[[1.0, 0, 0], [2.0, 0, 0]]])
    # a -> b: nearest squared distance 1; b -> a: 1 and 4, mean 2.5
    assert chamfer(a, b).item() == pytest.approx(3.5)
    # KL(N(1, 1) || N(0, 1)) = 1/2 per dimension
    assert kl_to_standard(torch.ones(2, 3), torch.zeros(2, 3)).item() == pytest.approx(1.5)


def test_edm_denoiser_is_the_identity_at_no_noise_and_samples_shapes():
    torch.manual_seed(0)
    edm = EDMPrecond(Denoiser(k=2, aux_dim=3, width=16, depth=1, heads=2), sigma_data=0.3)
    x, kp, aux = torch.randn(1, 20, 3) * 0.3, torch.randn(1, 2, 3), torch.randn(1, 3)
    # c_skip -> 1 and c_out -> 0 as sigma -> 0
    assert torch.allclose(edm(x, torch.tensor([1e-7]), kp, aux), x, atol=1e-5)
    assert edm.sample(kp, aux, 50, steps=3).shape == (1, 50, 3)
    assert torch.isfinite(edm.loss(x, kp, aux))


def test_keypoints_are_convex_combinations():
    torch.manual_seed(0)
    enc = KeypointEncoder(feature_dim=8, k=4, width=16, heads=2, aux_dim=3)
    pts, feats = torch.rand(2, 50, 3), torch.randn(2, 50, 8)
    kp, weights, mean, logvar = enc(pts, feats)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4)) and (weights >= 0).all()
    assert torch.allclose(kp, weights @ pts, atol=1e-6)
    assert mean.shape == logvar.shape == (2, 3)


def test_model_frame_round_trip(cloud):
    frame, centre, radius = model_frame(cloud, "y")
    assert np.linalg.norm(frame, axis=1).max() == pytest.approx(1.0)
    np.testing.assert_allclose(from_model_frame(frame, centre, radius, "y"), cloud, atol=1e-5)


def test_features_are_the_apis_tokens(backbone_dir, cloud):
    from patchalign3d.api import point_features

    module = KeyPointDiffuser(str(backbone_dir), k=3, **SMALL)
    frame, _, _ = model_frame(cloud)
    mine = module.point_features(torch.from_numpy(frame)[None])[0].numpy()
    api = point_features(cloud, model=module.backbone, dtype="float32").tokens
    np.testing.assert_allclose(mine, api, atol=1e-5)


def test_fit_predict_and_checkpoint(backbone_dir, clouds, tmp_path):
    backbone = tmp_path / "backbone"
    shutil.copytree(backbone_dir, backbone)
    ckpt = tmp_path / "diffuser.ckpt"
    module = fit_diffuser(str(backbone), clouds, k=3, max_steps=3, batch_size=2, num_points=256, checkpoint=ckpt, **SMALL)
    assert not any(p.requires_grad for p in module.backbone.parameters())
    terms = module.losses(torch.from_numpy(model_frame(clouds[0])[0])[None])
    hp = module.hparams
    weighted = (hp.diffusion_weight * terms["diffusion"] + hp.deform_weight * terms["deform"] + hp.fps_weight * terms["fps"]
                + hp.surface_weight * terms["surface"] + hp.kl_weight * terms["kl"])
    assert terms["loss"].item() == pytest.approx(weighted.item())
    kps = module.predict(clouds[1])
    assert kps.names == ["kp0", "kp1", "kp2"] and kps.field.shape == (len(clouds[1]), 3)
    lo, hi = clouds[1].min(0), clouds[1].max(0)
    assert ((kps.positions >= lo - 1e-5) & (kps.positions <= hi + 1e-5)).all()  # inside the input's box
    near = ((clouds[1][None] - kps.positions[:, None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(kps.indices, near)
    # the checkpoint stands alone: the backbone file may be gone
    shutil.rmtree(backbone)
    restored = KeyPointDiffuser.load_from_checkpoint(ckpt, map_location="cpu")
    np.testing.assert_allclose(restored.predict(clouds[1]).positions, kps.positions, atol=1e-6)


def test_a_module_made_by_lightning_cli_stands_alone(backbone_dir, clouds, tmp_path):
    """LightningCLI saves the arguments it was given as hyperparameters (lightning/pytorch/cli.py, the
    _given_hyperparameters_context around instantiation), where backbone_config is None: the checkpoint of
    `lightning fit -c configs/keypoints/diffuser.yaml` must still rebuild the backbone once its file is gone."""
    import lightning
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters_context

    backbone = tmp_path / "backbone"
    shutil.copytree(backbone_dir, backbone)
    given = {"backbone": str(backbone), "k": 3, **SMALL, "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    with _given_hyperparameters_context(given, "lightning.pytorch.cli.instantiate_module"):
        module = KeyPointDiffuser(str(backbone), k=3, **SMALL).eval()
    assert module.hparams["backbone_config"] is not None
    ckpt = tmp_path / "cli.ckpt"  # the keys Lightning's checkpoint connector writes for a module
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": lightning.__version__}, ckpt)
    expected = module.predict(clouds[1]).positions
    shutil.rmtree(backbone)
    restored = KeyPointDiffuser.load_from_checkpoint(ckpt, map_location="cpu")
    np.testing.assert_allclose(restored.predict(clouds[1]).positions, expected, atol=1e-6)
