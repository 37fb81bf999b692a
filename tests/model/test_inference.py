"""bf16 inference copies: which layers are bf16, that they agree with float32, and when they are rebuilt."""

import torch
import torch.nn.functional as F
from torch import nn

from patchalign3d.model import patchalign3d_tiny
from patchalign3d.model.inference import cached_inference_copy, inference_copy, low_precision_layers


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = patchalign3d_tiny().eval()
    tok = model.encoder.encoder
    for bn in (tok.first_conv[1], tok.second_conv[1]):  # trained-looking statistics, so folding matters
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 2.0)
    return model


def test_bf16_where_the_flops_are_float32_where_labels_are_decided():
    model = _model()
    copy = inference_copy(model, torch.bfloat16)
    low = {id(m) for m in low_precision_layers(copy)}
    assert len(low) == 3 + 4 * model.config.depth  # tokenizer conv2-4; qkv, proj, fc1, fc2 per block
    for module in copy.modules():
        for p in module.parameters(recurse=False):
            assert p.dtype == (torch.bfloat16 if id(module) in low else torch.float32)
    tok = copy.encoder.encoder
    assert tok.first_conv[0].weight.dtype == torch.float32  # the input layer on raw coordinates
    assert copy.encoder.pos_embed[0].weight.dtype == torch.float32 and copy.proj.weight.dtype == torch.float32
    assert not any(p.requires_grad for p in copy.parameters()) and not copy.training
    # the model itself is untouched: float32, its BatchNorms, its state-dict layout
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert isinstance(model.encoder.encoder.first_conv[1], nn.BatchNorm1d)


def test_copy_agrees_with_float32():
    model = _model()
    copy = inference_copy(model, torch.bfloat16)
    x = torch.randn(3, 400, 3)
    with torch.inference_mode():
        p = model.group(x)
        ref = model.embed_patches(model.encoder(p.neighborhood, p.centers))
        out = copy.embed_patches(copy.encoder(p.neighborhood, p.centers))
    assert out.dtype == torch.float32 and out.shape == ref.shape
    cos = F.cosine_similarity(out, ref, dim=-1)
    assert cos.min() > 0.99
    assert not torch.equal(out, ref)  # it did run in bf16


def test_float32_is_the_model_itself():
    model = _model()
    assert inference_copy(model, torch.float32) is model
    assert cached_inference_copy(model, torch.float32) is model


def test_cached_copy_is_reused_until_the_weights_change():
    model = _model()
    first = cached_inference_copy(model, torch.bfloat16)
    assert cached_inference_copy(model, torch.bfloat16) is first
    # the cache is neither a submodule nor part of the state dict
    assert all(not k.startswith("_inference") for k in model.state_dict())
    assert all(m is not first for m in model.modules())
    with torch.no_grad():
        model.proj.weight.mul_(2.0)  # an optimizer step, in place
    second = cached_inference_copy(model, torch.bfloat16)
    assert second is not first and torch.equal(second.proj.weight, model.proj.weight)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["encoder.norm.bias"] += 1.0
    model.load_state_dict(state)
    third = cached_inference_copy(model, torch.bfloat16)
    assert third is not second and torch.equal(third.encoder.norm.bias, model.encoder.norm.bias)
