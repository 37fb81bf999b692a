import numpy as np
import pytest
import torch

from patchalign3d.model import grouping
from patchalign3d.model.grouping import farthest_point_sample, group_points, knn, nearest_center


def brute_fps(x: np.ndarray, s: int, start: int = 0, skip_origin: bool = False) -> list[int]:
    """Textbook FPS in float64 numpy, one point at a time."""
    chosen = [start]
    dist = np.full(len(x), np.inf)
    if skip_origin:
        dist[(x**2).sum(1) <= 1e-3] = -1.0
    for _ in range(s - 1):
        d = ((x - x[chosen[-1]]) ** 2).sum(1)
        dist = np.where(dist < 0, dist, np.minimum(dist, d))
        chosen.append(int(np.argmax(dist)))
    return chosen


def test_fps_matches_brute_force_and_starts_at_zero():
    x = torch.rand(3, 300, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float()
    idx = farthest_point_sample(x, 40, backend="torch")
    assert idx.shape == (3, 40)
    for b in range(3):
        assert idx[b].tolist() == brute_fps(x[b].double().numpy(), 40)
        assert idx[b, 0] == 0
        assert len(set(idx[b].tolist())) == 40


def test_fps_release_quirk_never_picks_points_near_origin():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 400, 3, generator=g) * 2 - 1
    x[0, 5:60] *= 0.01  # a clump within sqrt(1e-3) of the origin
    idx = farthest_point_sample(x, 100, skip_near_origin=True, backend="torch")[0].tolist()
    assert not set(range(5, 60)) & set(idx[1:])
    assert idx == brute_fps(x[0].double().numpy(), 100, skip_origin=True)


def test_fps_random_start_is_seeded():
    x = torch.rand(2, 200, 3)
    a = farthest_point_sample(x, 16, random_start=True, generator=torch.Generator().manual_seed(3))
    b = farthest_point_sample(x, 16, random_start=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert (a[:, 0] != 0).any()


def test_knn_matches_brute_force():
    g = torch.Generator().manual_seed(2)
    pts, q = torch.rand(2, 500, 3, generator=g), torch.rand(2, 20, 3, generator=g)
    idx, d = knn(q, pts, 8, backend="torch")
    full = torch.cdist(q.double(), pts.double()) ** 2
    ref_d, ref_i = full.sort(-1)
    assert torch.equal(idx, ref_i[..., :8])
    assert torch.allclose(d.double(), ref_d[..., :8], atol=1e-6)


def test_knn_chunking_gives_same_answer(monkeypatch):
    g = torch.Generator().manual_seed(4)
    pts, q = torch.rand(1, 300, 3, generator=g), torch.rand(1, 50, 3, generator=g)
    whole = knn(q, pts, 5, backend="torch")
    monkeypatch.setattr(grouping, "CHUNK_ELEMENTS", 300 * 2 * 3)  # 3 query rows per chunk
    chunked = knn(q, pts, 5, backend="torch")
    assert torch.equal(whole[0], chunked[0])


def test_group_points_shapes_and_relative_coordinates():
    x = torch.rand(2, 256, 3)
    p = group_points(x, 16, 8)
    assert p.neighborhood.shape == (2, 16, 8, 3) and p.centers.shape == (2, 16, 3)
    members = torch.gather(x, 1, p.member_idx.view(2, -1, 1).expand(-1, -1, 3)).view(2, 16, 8, 3)
    assert torch.allclose(p.neighborhood + p.centers[:, :, None], members)
    # each centre is its own nearest neighbour
    assert torch.equal(p.member_idx[..., 0], p.center_idx)


def test_nearest_center_against_brute_force():
    x, c = torch.rand(1, 1000, 3), torch.rand(1, 17, 3)
    assert torch.equal(nearest_center(x, c)[0], torch.cdist(x, c)[0].argmin(-1))


@pytest.mark.parametrize("bad", [torch.rand(10, 3), torch.rand(1, 10, 2), torch.randint(0, 5, (1, 10, 3))])
def test_bad_shapes_are_named(bad):
    with pytest.raises((ValueError, TypeError), match="xyz"):
        farthest_point_sample(bad, 4)


def test_too_few_points():
    with pytest.raises(ValueError, match="at least group_size=32"):
        group_points(torch.rand(1, 20, 3), 8, 32)
    with pytest.raises(ValueError, match="cannot sample 50"):
        farthest_point_sample(torch.rand(1, 20, 3), 50)


def test_large_cloud_is_memory_bounded(monkeypatch):
    """10^5 points x 128 centres: no single allocation of a G x N float matrix."""
    seen = []
    real = grouping._pairwise_sq_dist

    def spy(a, b):
        out = real(a, b)
        seen.append(out.numel())
        return out

    monkeypatch.setattr(grouping, "_pairwise_sq_dist", spy)
    x = torch.rand(1, 100_000, 3)
    p = group_points(x, 128, 32, backend="torch")
    assert p.centers.shape == (1, 128, 3)
    assert max(seen) < 128 * 100_000
    assert max(seen) * 2 <= grouping.CHUNK_ELEMENTS


@pytest.mark.skipif(not grouping.has_torch_cluster(), reason="torch-cluster (optional extra) is not installed")
def test_torch_cluster_agrees_with_torch():
    x = torch.rand(2, 400, 3)
    assert torch.equal(farthest_point_sample(x, 32, backend="cluster"), farthest_point_sample(x, 32, backend="torch"))
    a, b = knn(x[:, :20], x, 6, backend="cluster"), knn(x[:, :20], x, 6, backend="torch")
    assert torch.equal(a[0], b[0])


@pytest.mark.parametrize("skip", [False, True])
def test_device_loop_matches_cpu_fast_path(skip):
    x = torch.rand(2, 500, 3) * 2 - 1
    start = torch.tensor([0, 7])
    loop = grouping._fps_torch(x, 64, start, skip)
    for b in range(2):
        assert loop[b].tolist() == grouping._fps_numpy(x[b].numpy(), 64, int(start[b]), skip).tolist()
