"""Fixtures for the discovery tests: a tiny random backbone on disk, clouds, labelled synthetic shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import make_cloud


@pytest.fixture(scope="session")
def backbone_dir(tmp_path_factory) -> Path:
    """A tiny random PatchAlign3D model saved with ``save_pretrained`` (what ``load_model`` reads)."""
    from patchalign3d.model import patchalign3d_tiny

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("backbone") / "tiny"
    patchalign3d_tiny().eval().save_pretrained(path)
    return path


@pytest.fixture
def clouds():
    return [make_cloud(384, seed=s) for s in range(4)]


@pytest.fixture(scope="session")
def bicycles(tmp_path_factory) -> Path:
    """Four procedural bicycles with sidecars (parts and two named wheel centres each)."""
    from data_engine.synthetic import write_dataset

    root = tmp_path_factory.mktemp("shapes") / "held"
    write_dataset(root, ["bicycle"], 4, seed=0)
    return root
