import pytest
import torch
from torch import nn

from patchalign3d.model.tokenizer import PatchTokenizer


def reference_forward(tok: PatchTokenizer, neighborhood: torch.Tensor) -> torch.Tensor:
    """The release's formulation: Conv1d over (BG, C, K), concat [global, local] per point."""
    b, g, k, _ = neighborhood.shape
    x = neighborhood.reshape(b * g, k, 3).transpose(2, 1)
    f = tok.first_conv(x)
    pooled = f.max(dim=2, keepdim=True)[0]
    f = torch.cat([pooled.expand(-1, -1, k), f], dim=1)
    f = tok.second_conv(f)
    return f.max(dim=2)[0].reshape(b, g, -1)


@pytest.mark.parametrize("training", [False, True])
def test_matches_release_formulation(training):
    torch.manual_seed(0)
    tok = PatchTokenizer(32, (8, 16, 24))
    for bn in (tok.first_conv[1], tok.second_conv[1]):  # non-trivial statistics and affine parameters
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        nn.init.normal_(bn.weight)
        nn.init.normal_(bn.bias)
    ref = PatchTokenizer(32, (8, 16, 24))
    ref.load_state_dict(tok.state_dict())
    tok.train(training)
    ref.train(training)
    x = torch.randn(2, 5, 7, 3)
    assert torch.allclose(tok(x), reference_forward(ref, x), atol=1e-5)
    if training:  # batch statistics moved the running statistics identically
        for a, b in zip(tok.buffers(), ref.buffers()):
            assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_inference_chunks_give_the_same_tokens():
    torch.manual_seed(1)
    tok = PatchTokenizer(32, (8, 16, 24)).eval()
    x = torch.randn(3, 50, 7, 3)
    whole = tok(x)
    tok.chunk_patches = 7  # 150 patches in uneven chunks
    assert torch.allclose(tok(x), whole, atol=1e-6)
    assert tok(x).shape == (3, 50, 32)


def test_folded_batchnorm_gives_the_same_tokens():
    torch.manual_seed(2)
    tok = PatchTokenizer(32, (8, 16, 24)).eval()
    for bn in (tok.first_conv[1], tok.second_conv[1]):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        nn.init.normal_(bn.weight)
        nn.init.normal_(bn.bias)
    x = torch.randn(2, 5, 7, 3)
    before = tok(x)
    tok.fold_batchnorm_()
    assert isinstance(tok.first_conv[1], nn.Identity) and isinstance(tok.second_conv[1], nn.Identity)
    assert torch.allclose(tok(x), before, atol=1e-5)
    assert torch.allclose(tok(x), reference_forward(tok, x), atol=1e-5)  # the folded layers are plain convs
