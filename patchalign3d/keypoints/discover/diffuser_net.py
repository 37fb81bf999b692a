"""KeyPointDiffuser's networks: the keypoint encoder and the EDM denoiser that reconstructs a shape.

The encoder (paper, "Method summary"): K learnable queries cross-attend to per-point features; the attention
weights over the N points (softmax, averaged over the heads) make each keypoint a convex combination of the
input points, and the attended values give an auxiliary latent (mean and log-variance of ``aux_dim``
Gaussian dimensions). The paper's per-point features come from PointTransformerV3; ours are a frozen
PatchAlign3D model's tokens spread to the points, with Fourier features of the coordinates.

The decoder is an EDM denoiser (Karras et al. 2022, as KeyPointDiffuser uses it: ``EDMPrecond`` with
``sigma_data = 0.3`` in the authors' ``keypointdeformer/utils/loss.py``): per-point MLP layers modulated by
FiLM from the condition (flattened keypoints, auxiliary latent, noise level), plus a cross-attention from
every noisy point to the keypoints.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Fourier(nn.Module):
    """``(..., d)`` -> ``(..., d * 2 * bands)`` sines and cosines at frequencies ``2^0 ... 2^(bands-1)`` times π."""

    def __init__(self, bands: int = 6) -> None:
        super().__init__()
        self.register_buffer("freqs", (2.0 ** torch.arange(bands)) * math.pi, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        angles = (x.unsqueeze(-1) * self.freqs).flatten(-2)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class KeypointEncoder(nn.Module):
    """Learnable queries over per-point features -> keypoints (convex combinations) and an auxiliary code.

    Args:
        feature_dim: width of the per-point features.
        k: keypoints.
        width, heads: attention width and heads.
        aux_dim: dimensions of the auxiliary latent (the authors' ``extra_latent = 5``).
        bands: Fourier bands of the coordinates.
    """

    def __init__(self, feature_dim: int, k: int, width: int = 64, heads: int = 4, aux_dim: int = 5, bands: int = 6) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        self.k, self.heads, self.aux_dim = k, heads, aux_dim
        self.fourier = Fourier(bands)
        self.inp = nn.Sequential(nn.Linear(feature_dim + 6 * bands, width), nn.GELU(), nn.Linear(width, width))
        self.norm = nn.LayerNorm(width)
        self.queries = nn.Parameter(torch.randn(k, width) * 0.5)
        self.to_k = nn.Linear(width, width, bias=False)
        self.to_v = nn.Linear(width, width, bias=False)
        self.to_aux = nn.Linear(k * width, 2 * aux_dim)

    def forward(self, points: Tensor, features: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(B, N, 3)`` points and ``(B, N, C)`` features ->

        ``keypoints`` ``(B, K, 3)``, ``weights`` ``(B, K, N)`` (rows sum to 1), ``aux_mean`` and
        ``aux_logvar`` ``(B, aux_dim)``.
        """
        b, n, _ = points.shape
        h = self.norm(self.inp(torch.cat([features, self.fourier(points)], dim=-1)))
        dh = h.shape[-1] // self.heads
        keys = self.to_k(h).view(b, n, self.heads, dh).transpose(1, 2)  # (B, H, N, dh)
        values = self.to_v(h).view(b, n, self.heads, dh).transpose(1, 2)
        q = self.queries.view(self.k, self.heads, dh).transpose(0, 1)  # (H, K, dh)
        attn = torch.softmax(q.unsqueeze(0) @ keys.transpose(-1, -2) / math.sqrt(dh), dim=-1)  # (B, H, K, N)
        weights = attn.mean(dim=1)
        keypoints = weights @ points
        pooled = (attn @ values).transpose(1, 2).reshape(b, -1)  # (B, K * width)
        mean, logvar = self.to_aux(pooled).chunk(2, dim=-1)
        return keypoints, weights, mean, logvar.clamp(-10.0, 10.0)


class FiLMBlock(nn.Module):
    """Residual MLP on every point, scaled and shifted by the condition."""

    def __init__(self, width: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.film = nn.Linear(cond_dim, 2 * width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        gamma, beta = self.film(cond).unsqueeze(1).chunk(2, dim=-1)
        return h + self.mlp(self.norm(h) * (1 + gamma) + beta)


class Denoiser(nn.Module):
    """``F`` of EDM: ``(B, M, 3)`` scaled noisy points, ``(B,)`` noise embeddings, the condition -> ``(B, M, 3)``.

    The condition is the keypoints ``(B, K, 3)`` and the auxiliary latent ``(B, aux_dim)``.
    """

    def __init__(self, k: int, aux_dim: int, width: int = 64, depth: int = 3, heads: int = 4, bands: int = 6) -> None:
        super().__init__()
        self.fourier = Fourier(bands)
        cond_in = 3 * k + aux_dim + 2 * bands
        self.cond = nn.Sequential(nn.Linear(cond_in, width), nn.GELU(), nn.Linear(width, width))
        self.inp = nn.Linear(3 + 6 * bands, width)
        self.slots = nn.Parameter(torch.randn(k, width) * 0.02)
        self.tokens = nn.Linear(6 * bands, width)
        self.attn_norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.blocks = nn.ModuleList(FiLMBlock(width, width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 3))

    def forward(self, x: Tensor, noise: Tensor, keypoints: Tensor, aux: Tensor) -> Tensor:
        cond = self.cond(torch.cat([keypoints.flatten(1), aux, self.fourier(noise.view(-1, 1))], dim=-1))
        h = self.inp(torch.cat([x, self.fourier(x)], dim=-1))
        tokens = self.tokens(self.fourier(keypoints)) + self.slots
        q = self.attn_norm(h)
        h = h + self.attn(q, tokens, tokens, need_weights=False)[0]
        for block in self.blocks:
            h = block(h, cond)
        return self.out(h)


class EDMPrecond(nn.Module):
    """EDM's preconditioning around a :class:`Denoiser`:
    ``D(x; σ) = c_skip x + c_out F(c_in x; c_noise)`` with ``σ_data`` the data's standard deviation."""

    def __init__(self, net: Denoiser, sigma_data: float = 0.3) -> None:
        super().__init__()
        self.net, self.sigma_data = net, sigma_data

    def forward(self, x: Tensor, sigma: Tensor, keypoints: Tensor, aux: Tensor) -> Tensor:
        sd = self.sigma_data
        s = sigma.view(-1, 1, 1).to(x)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1.0 / (sd**2 + s**2).sqrt()
        return c_skip * x + c_out * self.net(c_in * x, s.log().flatten() / 4.0, keypoints, aux)

    def loss(self, target: Tensor, keypoints: Tensor, aux: Tensor, *, p_mean: float = -1.2, p_std: float = 1.2,
             generator: torch.Generator | None = None) -> Tensor:
        """EDM's training loss on ``(B, M, 3)`` clean points: noise levels drawn log-normally, the denoised
        points compared with the clean ones, weighted by ``(σ² + σ_d²) / (σ σ_d)²``."""
        sd = self.sigma_data
        rnd = torch.randn(target.shape[0], generator=generator).to(target)
        sigma = (rnd * p_std + p_mean).exp()
        noise = torch.randn(target.shape, generator=generator).to(target) * sigma.view(-1, 1, 1)
        weight = ((sigma**2 + sd**2) / (sigma * sd) ** 2).view(-1, 1, 1)
        return (weight * (self(target + noise, sigma, keypoints, aux) - target) ** 2).mean()

    @torch.no_grad()
    def sample(self, keypoints: Tensor, aux: Tensor, num_points: int, *, steps: int = 18, sigma_min: float = 0.002,
               sigma_max: float = 10.0, rho: float = 7.0, generator: torch.Generator | None = None) -> Tensor:
        """EDM's deterministic Heun sampler: ``(B, num_points, 3)`` points from noise, given the condition."""
        b = keypoints.shape[0]
        i = torch.arange(steps, dtype=torch.float64)
        t = (sigma_max ** (1 / rho) + i / max(steps - 1, 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
        t = torch.cat([t, torch.zeros(1, dtype=torch.float64)]).to(keypoints)
        x = torch.randn(b, num_points, 3, generator=generator).to(keypoints) * t[0]
        for cur, nxt in zip(t[:-1], t[1:]):
            d = (x - self(x, cur.expand(b), keypoints, aux)) / cur
            x_next = x + (nxt - cur) * d
            if nxt > 0:
                d2 = (x_next - self(x_next, nxt.expand(b), keypoints, aux)) / nxt
                x_next = x + (nxt - cur) * (d + d2) / 2
            x = x_next
        return x


def chamfer(a: Tensor, b: Tensor) -> Tensor:
    """Symmetric Chamfer distance (mean squared nearest distance both ways) of ``(B, P, 3)`` and ``(B, Q, 3)``."""
    d = torch.cdist(a, b) ** 2
    return d.min(dim=2).values.mean() + d.min(dim=1).values.mean()


def kl_to_standard(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL divergence of ``N(mean, exp(logvar))`` from ``N(0, I)``, summed over dimensions, mean over the batch."""
    return 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar).sum(dim=-1).mean()


__all__ = ["Denoiser", "EDMPrecond", "FiLMBlock", "Fourier", "KeypointEncoder", "chamfer", "kl_to_standard"]
