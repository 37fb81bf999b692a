import math

import pytest
import torch

from patchalign3d.model import PatchAlign3D, PatchAlign3DConfig, patchalign3d_base, patchalign3d_tiny
from patchalign3d.model.grouping import Patches


def test_base_has_released_parameter_count_and_keys():
    model = patchalign3d_base()
    state = model.encoder.state_dict()
    params = sum(v.numel() for k, v in state.items() if "running_" not in k and "num_batches" not in k)
    assert params == 21_858_816  # REFERENCE section 3
    assert state["blocks.blocks.11.attn.qkv.weight"].shape == (1152, 384)
    assert "blocks.blocks.0.attn.qkv.bias" not in state
    assert state["encoder.second_conv.0.weight"].shape == (512, 512, 1)
    assert model.proj.weight.shape == (1280, 384)


def test_position_is_added_before_every_block():
    """Replacing every block by identity shows x_out = norm(x + depth * pos)."""
    model = patchalign3d_tiny(use_cls_token=False).eval()
    calls = []
    for blk in model.encoder.blocks.blocks:
        blk.forward = lambda x, _c=calls: (_c.append(x.clone()), x)[1]
    patches = model.group(torch.rand(1, 128, 3))
    model.encode_patches(patches)
    pos = model.encoder.pos_embed(patches.centers)
    assert torch.allclose(calls[1] - calls[0], pos, atol=1e-6)


def test_cls_token_is_dropped():
    model = patchalign3d_tiny().eval()
    tokens = model.encode_patches(model.group(torch.rand(2, 200, 3)))
    assert tokens.shape == (2, model.config.num_groups, model.config.embed_dim)


def test_patch_logits_scale_and_width_check():
    model = patchalign3d_tiny().eval()
    emb = torch.nn.functional.normalize(torch.randn(1, 4, 64), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(3, 64), dim=-1)
    logits = model.patch_logits(emb, text, temperature=0.5)
    assert torch.allclose(logits, emb @ text.T * 2.0, atol=1e-6)
    learned = model.patch_logits(emb, text, temperature=None)
    assert torch.allclose(learned, emb @ text.T / 0.07, atol=1e-4)
    with pytest.raises(ValueError, match="32-d but this model's head gives 64-d"):
        model.patch_logits(emb, torch.randn(3, 32))


def test_stage1_model_cannot_score_text():
    model = patchalign3d_tiny(text_dim=None)
    with pytest.raises(RuntimeError, match="no text head"):
        model(torch.rand(1, 64, 3))


def test_point_logits_modes_by_hand():
    centers = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]])
    points = torch.tensor([[[0.1, 0, 0], [0.8, 0, 0], [5.0, 0, 0]]])
    member_idx = torch.tensor([[[0, 1], [1, 0]]])  # point 2 belongs to no patch
    patches = Patches(torch.zeros(1, 2, 2, 3), centers, torch.tensor([[0, 1]]), member_idx)
    logits = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    near = PatchAlign3D.point_logits(points, patches, logits, "nearest")
    assert torch.equal(near[0], torch.tensor([[1.0, 0], [0, 2], [0, 2]]))
    memb = PatchAlign3D.point_logits(points, patches, logits, "membership")
    assert torch.allclose(memb[0], torch.tensor([[0.5, 1.0], [0.5, 1.0], [0.0, 2.0]]))
    # the release's rule: the same means, but the point in no patch gets all-zero logits (argmax: label 0)
    rel = PatchAlign3D.point_logits(points, patches, logits, "membership_release")
    assert torch.allclose(rel[0], torch.tensor([[0.5, 1.0], [0.5, 1.0], [0.0, 0.0]]))
    assert rel[0].argmax(-1).tolist() == [1, 1, 0]
    interp = PatchAlign3D.point_logits(points, patches, logits, "interpolate")
    w0, w1 = 1 / 0.1, 1 / 0.9  # inverse distances of point 0 to the two centres
    expect = (w0 * logits[0, 0] + w1 * logits[0, 1]) / (w0 + w1)
    assert torch.allclose(interp[0, 0], expect, atol=1e-5)
    with pytest.raises(ValueError, match="unknown assign mode"):
        PatchAlign3D.point_logits(points, patches, logits, "vote")


def test_config_round_trip_and_unknown_keys():
    cfg = PatchAlign3DConfig(depth=3, tokenizer_hidden=(8, 16, 32))
    assert PatchAlign3DConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown PatchAlign3D config keys"):
        PatchAlign3DConfig.from_dict({"depht": 3})


def test_initial_log_scale_is_release_temperature():
    assert math.isclose(patchalign3d_tiny().log_scale.exp().item(), 1 / 0.07, rel_tol=1e-6)


def test_inference_chunking_over_clouds_is_exact():
    model = patchalign3d_tiny().eval()
    patches = model.group(torch.rand(5, 100, 3))
    with torch.no_grad():
        whole = model.encode_patches(patches)
        model.encoder.inference_chunk = 2
        assert torch.allclose(model.encode_patches(patches), whole, atol=1e-6)
