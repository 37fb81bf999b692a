"""Tiny models whose predictions are known in advance, for hand-computed evaluation figures."""

from __future__ import annotations

import torch

from patchalign3d.model import patchalign3d_tiny


def onehot(i: int, dim: int = 64) -> torch.Tensor:
    v = torch.zeros(dim)
    v[i] = 1.0
    return v


def constant_model():
    """Every patch embeds to e0, so every point takes the first candidate whose text is e0 (exact ties avoided)."""
    torch.manual_seed(0)
    m = patchalign3d_tiny()
    with torch.no_grad():
        m.proj.weight.zero_()
        m.proj.bias.copy_(onehot(0))
    return m.eval()
