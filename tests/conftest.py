"""Shared fixtures: tiny random models, seeded clouds, and the optional real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PATCHALIGN3D_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Text-embedding caches and the like must not leak between tests or into the user's home.
    monkeypatch.setenv("PATCHALIGN3D_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def shared_data() -> Path:
    """The real-data fixtures beside the repository; absent in a user's fresh clone."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real-data folder {SHARED_DATA} is not present")
    return SHARED_DATA


@pytest.fixture
def tiny_model():
    from patchalign3d.model import patchalign3d_tiny

    torch.manual_seed(0)
    return patchalign3d_tiny().eval()


def make_cloud(n: int = 512, seed: int = 0) -> np.ndarray:
    """A lumpy ellipsoid-ish cloud with distinct regions, float32 (N, 3)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x *= np.array([1.0, 0.6, 0.4]) * (1 + 0.2 * rng.random((n, 1)))
    return x.astype(np.float32)


@pytest.fixture
def cloud() -> np.ndarray:
    return make_cloud()
