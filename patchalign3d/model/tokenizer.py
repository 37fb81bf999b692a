"""Mini-PointNet patch tokenizer: one feature vector per patch of points."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _pointwise(conv: nn.Conv1d, x: Tensor) -> Tensor:
    # A kernel-1 Conv1d is a Linear over channels; running it channels-last as one GEMM is several times
    # faster on CPUs than Conv1d, and the parameters (and so the state-dict layout) stay the Conv1d's.
    return F.linear(x, conv.weight.squeeze(-1), conv.bias)


class PatchTokenizer(nn.Module):
    """Shared MLP -> max-pool -> concat(global, local) -> shared MLP -> max-pool.

    The layer names (``first_conv.{0,1,3}``, ``second_conv.{0,1,3}``) are those of the released checkpoint.
    """

    def __init__(self, out_dim: int = 256, hidden_dims: tuple[int, int, int] = (128, 256, 512)) -> None:
        super().__init__()
        h1, h2, h3 = hidden_dims
        self.out_dim = out_dim
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, h1, 1), nn.BatchNorm1d(h1), nn.ReLU(inplace=True), nn.Conv1d(h1, h2, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(2 * h2, h3, 1), nn.BatchNorm1d(h3), nn.ReLU(inplace=True), nn.Conv1d(h3, out_dim, 1)
        )

    @staticmethod
    def _mlp(seq: nn.Sequential, x: Tensor) -> Tensor:
        conv_a, norm, act, conv_b = seq
        shape = x.shape
        h = _pointwise(conv_a, x).reshape(-1, conv_a.out_channels)
        # BatchNorm over (points, channels) gives the same statistics as over (patches, channels, points).
        h = act(norm(h)).reshape(*shape[:-1], conv_a.out_channels)
        return _pointwise(conv_b, h)

    def forward(self, neighborhood: Tensor) -> Tensor:
        """``(B, G, K, 3)`` patch members relative to their centre -> ``(B, G, out_dim)``."""
        local = self._mlp(self.first_conv, neighborhood)  # (B, G, K, h2)
        pooled = local.amax(dim=2, keepdim=True)
        feats = torch.cat([pooled.expand_as(local), local], dim=-1)  # global first, as released
        return self._mlp(self.second_conv, feats).amax(dim=2)
