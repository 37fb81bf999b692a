"""Fixtures of the data-engine tests: tiny meshes made here, tiny configs, a small random teacher."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import trimesh

from data_engine.config import DataEngineConfig, load_config
from data_engine.teachers import Teacher, TeacherConfig

KEYPOINTNET_MESH = "keypointnet/models/03001627/88382b877be91b2a572f8e1c1caad99e/models/model_normalized.obj"


def tiny_config(**overrides: object) -> DataEngineConfig:
    """A config small enough for a CPU test: 256 points, 4 views of 64 px, ViT-S/14 at 56 px, random."""
    base = {
        "mesh.num_points": 256,
        "camera.num_views": 4,
        "camera.resolution": 64,
        "render.backend": "raycast",
        "teacher.name": "vit_small_patch14_dinov2",
        "teacher.pretrained": False,
        "teacher.img_size": 56,
        "num_workers": 1,
        "threads_per_worker": 1,
        "chunk_bytes": "4MB",
        "start_method": "fork",
    }
    base.update(overrides)
    return load_config(None, [f"{k}={v}" for k, v in base.items()])


def composed_mesh() -> trimesh.Trimesh:
    """A box, a sphere and a cylinder side by side (three parts, faces in that order)."""
    box = trimesh.creation.box((0.6, 0.4, 0.5)).apply_translation([-0.6, 0, 0])
    sphere = trimesh.creation.icosphere(2, radius=0.3)
    cyl = trimesh.creation.cylinder(radius=0.15, height=0.7, sections=16).apply_translation([0.6, 0, 0])
    return trimesh.util.concatenate([box, sphere, cyl])


def composed_face_labels() -> np.ndarray:
    """``(F,)`` part index of every face of ``composed_mesh`` (0 box, 1 sphere, 2 cylinder)."""
    box = trimesh.creation.box((0.6, 0.4, 0.5))
    sphere = trimesh.creation.icosphere(2, radius=0.3)
    cyl = trimesh.creation.cylinder(radius=0.15, height=0.7, sections=16)
    return np.repeat([0, 1, 2], [len(box.faces), len(sphere.faces), len(cyl.faces)])


def write_labelled_shape(folder: Path, uid: str, category: str = "thing") -> Path:
    """``<folder>/<category>/<uid>.ply`` with a ``.parts.json`` sidecar (names need cleaning)."""
    path = folder / category / f"{uid}.ply"
    path.parent.mkdir(parents=True, exist_ok=True)
    composed_mesh().export(path)
    sidecar = {
        "uid": uid,
        "category": category,
        "part_names": ["Box_Part", "sphere", "Cylinder!"],
        "face_labels": composed_face_labels().tolist(),
    }
    path.with_name(f"{uid}.parts.json").write_text(json.dumps(sidecar))
    return path


class OneHotTeacher:
    """A stand-in teacher whose whole feature grid for view ``v`` is the unit vector ``e_v``."""

    def __init__(self, num_views: int, grid: int = 2) -> None:
        self.num_views, self.grid = num_views, grid
        self.name, self.pretrained = "one-hot", False
        self.config = SimpleNamespace(img_size=28)

    def patch_features(self, images: np.ndarray) -> torch.Tensor:
        eye = torch.eye(self.num_views)[: len(images)]
        return eye[:, :, None, None].expand(-1, -1, self.grid, self.grid).contiguous()


@pytest.fixture(scope="session")
def small_teacher() -> Teacher:
    torch.manual_seed(0)
    return Teacher(
        TeacherConfig(name="vit_small_patch14_dinov2", pretrained=False, img_size=56), device="cpu"
    )


@pytest.fixture
def keypointnet_mesh(shared_data: Path) -> Path:
    path = shared_data / KEYPOINTNET_MESH
    assert path.is_file(), f"{path} is missing from the shared data folder"
    return path
