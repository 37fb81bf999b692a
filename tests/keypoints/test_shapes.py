"""Reading shapes for keypoints: a mesh whose faces cannot be read is an error, not a silent point cloud."""

import numpy as np
import pytest

from patchalign3d.cli import main
from patchalign3d.keypoints.shapes import as_shape, declared_faces, diagonal, read_shape_file


def test_a_mesh_file_whose_faces_cannot_be_read_is_refused(tmp_path):
    # tab-separated face records are valid OBJ, but trimesh drops them and returns the bare vertices
    path = tmp_path / "tabs.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf\t1\t2\t3\nf\t1\t3\t4\n")
    assert declared_faces(path) == 2
    with pytest.raises(ValueError, match=r"declares 2 faces but none could be read.*4 vertices"):
        read_shape_file(path)
    with pytest.raises(ValueError, match="declares 2 faces"):
        as_shape(path)


def test_vertex_only_files_are_point_clouds_and_say_so(tmp_path):
    path = tmp_path / "cloud.ply"
    pts = np.random.default_rng(0).normal(size=(64, 3))
    header = f"ply\nformat ascii 1.0\nelement vertex {len(pts)}\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    path.write_text(header + "".join(f"{x} {y} {z}\n" for x, y, z in pts))
    assert declared_faces(path) == 0
    shape = as_shape(path)
    assert shape.mesh is None and shape.source == "point cloud file" and len(shape.points) == 64
    off = tmp_path / "m.off"
    off.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    assert declared_faces(off) == 1 and as_shape(off, num_points=10).source == "mesh"
    assert diagonal(np.array([[0.0, 0, 0], [3, 4, 0]])) == 5.0


def test_missing_hub_weights_name_the_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    assert main(["keypoints", "example:chair", "--names", "leg end", "--checkpoint", "someone/not-cached"]) == 1
    err = capsys.readouterr().err
    assert "--checkpoint PATH" in err and "load_model()" not in err and err.count("\n") == 1
