import json

import numpy as np
import pytest
import torch
import trimesh

from patchalign3d.data import DatasetFormatError, build_dataset
from patchalign3d.evaluation import evaluate


def write_shape(root, category, uid, mesh, part_names, face_labels):
    folder = root / category
    folder.mkdir(parents=True, exist_ok=True)
    mesh.export(folder / f"{uid}.ply")
    (folder / f"{uid}.parts.json").write_text(json.dumps(
        {"uid": uid, "category": category, "part_names": part_names, "face_labels": list(map(int, face_labels))}))


def two_box_mesh():
    """Two unit boxes side by side: faces 0-11 are 'left', 12-23 'right'."""
    a = trimesh.creation.box(extents=(1, 1, 1))
    b = trimesh.creation.box(extents=(1, 1, 1))
    b.apply_translation((2, 0, 0))
    return trimesh.util.concatenate([a, b])


def test_points_take_their_face_labels(tmp_path):
    write_shape(tmp_path, "pair", "p0", two_box_mesh(), ["left", "right"], [0] * 12 + [1] * 12)
    ds = build_dataset("labelled-meshes", tmp_path, num_points=500)
    shape = ds[0]
    assert shape.category == "pair" and shape.part_names == ["left", "right"]
    assert shape.points.shape == (500, 3)
    assert np.array_equal(shape.labels, (shape.points[:, 0] > 1.0).astype(np.int64))
    assert np.array_equal(ds[0].points, shape.points)  # seeded by uid


def test_bad_sidecars(tmp_path):
    write_shape(tmp_path, "pair", "p0", two_box_mesh(), ["left", "right"], [0] * 10)
    with pytest.raises(DatasetFormatError, match="10 face labels for a mesh of 24 faces"):
        build_dataset("labelled-meshes", tmp_path)[0]
    (tmp_path / "pair" / "p0.ply").unlink()
    with pytest.raises(DatasetFormatError, match="no mesh file"):
        build_dataset("labelled-meshes", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFormatError, match="no '\\*.parts.json' part sidecars"):
        build_dataset("labelled-meshes", tmp_path / "empty")


def test_evaluate_runs_on_labelled_meshes(tmp_path, tiny_model):
    write_shape(tmp_path, "pair", "p0", two_box_mesh(), ["left", "right"], [0] * 12 + [1] * 12)
    emb = {"left": torch.nn.functional.normalize(torch.randn(64), dim=0),
           "right": torch.nn.functional.normalize(torch.randn(64), dim=0)}
    report = evaluate("labelled-meshes", tmp_path, model=tiny_model, text=emb)
    assert 0.0 <= report["metric"]["miou"] <= 100.0 and report["metric"]["num_shapes"] == 1
