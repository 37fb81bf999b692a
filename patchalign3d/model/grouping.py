"""Point grouping: farthest point sampling, k nearest neighbours and patches.

Pure PyTorch by default; ``torch_cluster`` (the ``patchalign3d[cluster]`` extra) is used when it is
importable and the request is one it computes identically. Every distance matrix is built in chunks of
at most ``CHUNK_ELEMENTS`` floats, so a cloud of 10^6 points never allocates an N x N or G x N matrix.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

try:  # optional compiled extension; never required
    import torch_cluster
except ImportError:  # pragma: no cover - depends on the environment
    torch_cluster = None

Backend = Literal["auto", "torch", "cluster"]

#: Largest number of distance entries materialised at once (64 MiB of float32).
CHUNK_ELEMENTS = 1 << 24

#: The CUDA FPS kernel of the public release (pointnet2_ops) never picks a point with |p|^2 <= this.
RELEASE_FPS_ORIGIN_EPS = 1e-3


def has_torch_cluster() -> bool:
    """Whether the optional ``torch_cluster`` extension is importable."""
    return torch_cluster is not None


class Patches(NamedTuple):
    """The patches of a batch of clouds.

    Attributes:
        neighborhood: ``(B, G, K, 3)`` member coordinates relative to their centre.
        centers: ``(B, G, 3)`` patch centres.
        center_idx: ``(B, G)`` index of each centre in its cloud.
        member_idx: ``(B, G, K)`` index of each member point in its cloud, nearest first.
    """

    neighborhood: Tensor
    centers: Tensor
    center_idx: Tensor
    member_idx: Tensor


def _check_cloud(xyz: Tensor, name: str = "xyz") -> None:
    if not isinstance(xyz, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(xyz).__name__}")
    if xyz.dim() != 3 or xyz.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (B, N, 3), got {tuple(xyz.shape)}")
    if not xyz.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {xyz.dtype}")


def _resolve_backend(backend: Backend, exact_release: bool = False) -> str:
    if backend == "cluster":
        if torch_cluster is None:
            raise ImportError("backend='cluster' needs torch-cluster: pip install 'patchalign3d[cluster]'")
        if exact_release:
            raise ValueError("torch-cluster cannot reproduce the release's FPS (skip_near_origin=True)")
        return "cluster"
    if backend == "torch":
        return "torch"
    if backend != "auto":
        raise ValueError(f"unknown grouping backend {backend!r}; expected 'auto', 'torch' or 'cluster'")
    return "cluster" if torch_cluster is not None and not exact_release else "torch"


def farthest_point_sample(
    xyz: Tensor,
    num_samples: int,
    *,
    random_start: bool = False,
    skip_near_origin: bool = False,
    generator: torch.Generator | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Farthest point sampling.

    Args:
        xyz: ``(B, N, 3)`` points.
        num_samples: number of points S to pick per cloud (``S <= N``).
        random_start: start from a random point instead of point 0 (training-time augmentation).
        skip_near_origin: reproduce the release's CUDA kernel, which never selects a point with
            ``|p|^2 <= 1e-3`` after the first one.
        generator: random generator for ``random_start``.
        backend: ``"auto"`` (torch-cluster when installed and equivalent), ``"torch"`` or ``"cluster"``.

    Returns:
        ``(B, S)`` int64 indices; the first is 0 unless ``random_start``.
    """
    _check_cloud(xyz)
    batch, num_points, _ = xyz.shape
    if not 1 <= num_samples <= num_points:
        raise ValueError(f"cannot sample {num_samples} centres from a cloud of {num_points} points")
    if random_start:
        start = torch.randint(num_points, (batch,), generator=generator, device="cpu").to(xyz.device)
    else:
        start = torch.zeros(batch, dtype=torch.long, device=xyz.device)

    if _resolve_backend(backend, exact_release=skip_near_origin) == "cluster":
        return _fps_cluster(xyz, num_samples, start)

    if xyz.device.type == "cpu":
        return torch.from_numpy(np.stack([
            _fps_numpy(cloud, num_samples, int(s), skip_near_origin)
            for cloud, s in zip(xyz.detach().float().numpy(), start.tolist())
        ]))
    return _fps_torch(xyz, num_samples, start, skip_near_origin)


def _fps_torch(xyz: Tensor, num_samples: int, start: Tensor, skip_near_origin: bool) -> Tensor:
    """FPS over a batch on any device (the GPU path)."""
    batch, num_points, _ = xyz.shape
    pts = xyz.float()
    # Running squared distance to the chosen set. Points the release kernel skips sit at -1 forever,
    # so they can only win the argmax when nothing else is left.
    dist = pts.new_full((batch, num_points), 1e10)
    if skip_near_origin:
        dist.masked_fill_(pts.square().sum(-1) <= RELEASE_FPS_ORIGIN_EPS, -1.0)
    rows = torch.arange(batch, device=xyz.device)
    out = torch.empty(batch, num_samples, dtype=torch.long, device=xyz.device)
    farthest = start
    for i in range(num_samples):
        out[:, i] = farthest
        center = pts[rows, farthest].unsqueeze(1)  # (B, 1, 3)
        torch.minimum(dist, (pts - center).square().sum(-1), out=dist)
        farthest = dist.argmax(-1)
    return out


def _fps_numpy(cloud: np.ndarray, num_samples: int, start: int, skip_near_origin: bool) -> np.ndarray:
    """The same algorithm on one ``(N, 3)`` CPU cloud. NumPy's per-call overhead is a fraction of
    PyTorch's, which matters in this loop of S tiny steps (5x faster at 2048 points)."""
    xs, ys, zs = (np.ascontiguousarray(cloud[:, i]) for i in range(3))
    dist = np.full(len(cloud), 1e10, dtype=np.float32)
    if skip_near_origin:
        dist[xs * xs + ys * ys + zs * zs <= RELEASE_FPS_ORIGIN_EPS] = -1.0
    out = np.empty(num_samples, dtype=np.int64)
    d = np.empty_like(dist)
    tmp = np.empty_like(dist)
    far = start
    for i in range(num_samples):
        out[i] = far
        np.subtract(xs, xs[far], out=d)
        np.multiply(d, d, out=d)
        np.subtract(ys, ys[far], out=tmp)
        d += tmp * tmp
        np.subtract(zs, zs[far], out=tmp)
        d += tmp * tmp
        np.minimum(dist, d, out=dist)
        far = int(dist.argmax())
    return out


def _fps_cluster(xyz: Tensor, num_samples: int, start: Tensor) -> Tensor:
    batch, num_points, _ = xyz.shape
    # torch_cluster always starts at the first point of each cloud: rotate each cloud so `start` is first.
    order = (torch.arange(num_points, device=xyz.device)[None] + start[:, None]) % num_points
    rolled = torch.gather(xyz, 1, order[..., None].expand(-1, -1, 3))
    batch_vec = torch.arange(batch, device=xyz.device).repeat_interleave(num_points)
    # ceil(ratio * N) samples are returned; (S - 0.5) / N makes that exactly S.
    ratio = (num_samples - 0.5) / num_points
    flat = torch_cluster.fps(rolled.reshape(-1, 3).float(), batch_vec, ratio=ratio, random_start=False)
    local = flat.view(batch, num_samples) - (torch.arange(batch, device=xyz.device) * num_points)[:, None]
    return torch.gather(order, 1, local)


def _chunk_rows(num_cols: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, num_cols))


def _pairwise_sq_dist(a: Tensor, b: Tensor) -> Tensor:
    """Exact squared distances ``(B, M, N)``, one coordinate at a time.

    No matmul shortcut (|a|^2 - 2ab + |b|^2 loses precision and reorders ties), and no (B, M, N, 3)
    temporary: summing contiguous (B, M, N) planes is 2-4x faster than reducing a trailing axis of 3.
    """
    d = (a[..., 0, None] - b[..., 0].unsqueeze(1)).square_()
    d += (a[..., 1, None] - b[..., 1].unsqueeze(1)).square_()
    d += (a[..., 2, None] - b[..., 2].unsqueeze(1)).square_()
    return d


def knn(
    query: Tensor, points: Tensor, k: int, *, backend: Backend = "auto"
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest points of each query, nearest first.

    Args:
        query: ``(B, M, 3)`` query positions.
        points: ``(B, N, 3)`` points searched.
        k: neighbours per query (``k <= N``).

    Returns:
        ``(indices, sq_dists)``, both ``(B, M, k)``; indices are int64 into ``points``.
    """
    _check_cloud(query, "query")
    _check_cloud(points, "points")
    if query.shape[0] != points.shape[0]:
        raise ValueError(f"batch sizes differ: query {query.shape[0]}, points {points.shape[0]}")
    batch, num_query, _ = query.shape
    num_points = points.shape[1]
    if not 1 <= k <= num_points:
        raise ValueError(f"cannot take {k} neighbours from a cloud of {num_points} points")
    if _resolve_backend(backend) == "cluster":
        return _knn_cluster(query, points, k)

    q, p = query.float(), points.float()
    rows = max(1, _chunk_rows(num_points * 2) // batch)  # the result and one temporary per chunk
    idx_chunks, dist_chunks = [], []
    for s in range(0, num_query, rows):
        d = _pairwise_sq_dist(q[:, s : s + rows], p)
        dist, idx = d.topk(k, dim=-1, largest=False, sorted=True)
        idx_chunks.append(idx)
        dist_chunks.append(dist)
    return torch.cat(idx_chunks, 1), torch.cat(dist_chunks, 1)


def _knn_cluster(query: Tensor, points: Tensor, k: int) -> tuple[Tensor, Tensor]:
    batch, num_query, _ = query.shape
    num_points = points.shape[1]
    dev = query.device
    batch_p = torch.arange(batch, device=dev).repeat_interleave(num_points)
    batch_q = torch.arange(batch, device=dev).repeat_interleave(num_query)
    row, col = torch_cluster.knn(points.reshape(-1, 3).float(), query.reshape(-1, 3).float(), k, batch_p, batch_q)
    order = torch.argsort(row, stable=True)
    col = col[order].view(batch, num_query, k) - (torch.arange(batch, device=dev) * num_points)[:, None, None]
    # torch_cluster does not promise an order within a row: sort by distance (ties by index).
    members = torch.gather(points.float(), 1, col.reshape(batch, -1, 1).expand(-1, -1, 3)).view(batch, num_query, k, 3)
    dist = (members - query.float().unsqueeze(2)).square().sum(-1)
    sorted_dist, perm = torch.sort(dist, dim=-1, stable=True)
    col = torch.gather(col, -1, perm)
    return col, sorted_dist


def nearest_center(points: Tensor, centers: Tensor) -> Tensor:
    """Index of the nearest centre of every point.

    Args:
        points: ``(B, N, 3)``.
        centers: ``(B, G, 3)``.

    Returns:
        ``(B, N)`` int64 indices into ``centers``.
    """
    _check_cloud(points, "points")
    _check_cloud(centers, "centers")
    p, c = points.float(), centers.float()
    rows = max(1, _chunk_rows(c.shape[1] * 2) // p.shape[0])
    return torch.cat([_pairwise_sq_dist(p[:, s : s + rows], c).argmin(-1) for s in range(0, p.shape[1], rows)], 1)


def group_points(
    xyz: Tensor,
    num_groups: int,
    group_size: int,
    *,
    random_start: bool = False,
    skip_near_origin: bool = False,
    generator: torch.Generator | None = None,
    backend: Backend = "auto",
) -> Patches:
    """Split each cloud into ``num_groups`` patches of its ``group_size`` nearest points.

    Args:
        xyz: ``(B, N, 3)`` points, ``N >= max(num_groups, group_size)``.

    Returns:
        :class:`Patches` with ``(B, G, K, 3)`` neighbourhoods relative to their ``(B, G, 3)`` centres.
    """
    _check_cloud(xyz)
    num_points = xyz.shape[1]
    if num_points < group_size:
        raise ValueError(f"a cloud needs at least group_size={group_size} points, got {num_points}")
    center_idx = farthest_point_sample(
        xyz, num_groups, random_start=random_start, skip_near_origin=skip_near_origin,
        generator=generator, backend=backend,
    )
    centers = torch.gather(xyz, 1, center_idx[..., None].expand(-1, -1, 3))
    member_idx, _ = knn(centers, xyz, group_size, backend=backend)
    batch, groups, k = member_idx.shape
    members = torch.gather(xyz, 1, member_idx.reshape(batch, -1, 1).expand(-1, -1, 3)).view(batch, groups, k, 3)
    return Patches(members - centers.unsqueeze(2), centers, center_idx, member_idx)
