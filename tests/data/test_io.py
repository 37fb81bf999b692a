import numpy as np
import pytest
import trimesh

from patchalign3d.data.io import ShapeFileError, load_geometry, load_mesh, load_points

PTS = np.array([[0.0, 0.5, 1.0], [1.5, -2.0, 0.25], [3.0, 4.0, -5.0]], dtype=np.float32)


def write_pcd(path, pts, mode="ascii"):
    head = ["# .PCD v0.7", "VERSION 0.7", "FIELDS x y z rgb", "SIZE 4 4 4 4", "TYPE F F F F", "COUNT 1 1 1 1",
            f"WIDTH {len(pts)}", "HEIGHT 1", "VIEWPOINT 0 0 0 1 0 0 0", f"POINTS {len(pts)}", f"DATA {mode}"]
    rgb = np.full((len(pts), 1), 4.2e6, np.float32)
    table = np.hstack([pts, rgb]).astype(np.float32)
    if mode == "ascii":
        path.write_text("\n".join(head + [" ".join(map(str, r)) for r in table]) + "\n")
    else:
        path.write_bytes(("\n".join(head) + "\n").encode() + table.tobytes())


@pytest.mark.parametrize("mode", ["ascii", "binary"])
def test_pcd(tmp_path, mode):
    write_pcd(tmp_path / "a.pcd", PTS, mode)
    assert np.allclose(load_points(tmp_path / "a.pcd"), PTS)


def test_npz_txt_npy(tmp_path):
    np.savez(tmp_path / "a.npz", points=PTS, labels=np.arange(3))
    np.save(tmp_path / "a.npy", PTS)
    # ShapeNetPart-style rows: x y z nx ny nz label
    np.savetxt(tmp_path / "a.txt", np.hstack([PTS, np.zeros((3, 3)), np.ones((3, 1))]))
    for name in ("a.npz", "a.npy", "a.txt"):
        assert np.allclose(load_points(tmp_path / name), PTS), name


def test_meshes_and_scenes(tmp_path):
    box = trimesh.creation.box()
    for ext in ("ply", "obj", "off", "glb"):
        box.export(tmp_path / f"b.{ext}")
        mesh = load_mesh(tmp_path / f"b.{ext}")
        assert len(mesh.faces) == 12, ext
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box(), transform=trimesh.transformations.translation_matrix([2, 0, 0]))
    scene.add_geometry(trimesh.creation.icosphere(subdivisions=1))
    scene.export(tmp_path / "s.glb")
    flat = load_mesh(tmp_path / "s.glb")
    assert len(flat.faces) == 12 + 80
    assert flat.vertices[:, 0].max() == pytest.approx(2.5)  # the transform was applied


def test_point_cloud_ply_is_not_a_mesh(tmp_path):
    trimesh.PointCloud(PTS).export(tmp_path / "p.ply")
    assert isinstance(load_geometry(tmp_path / "p.ply"), trimesh.PointCloud)
    assert np.allclose(load_points(tmp_path / "p.ply"), PTS)
    with pytest.raises(ShapeFileError, match="has no faces"):
        load_mesh(tmp_path / "p.ply")


def test_bad_files_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such shape file"):
        load_points(tmp_path / "missing.ply")
    (tmp_path / "empty.obj").write_bytes(b"")
    with pytest.raises(ShapeFileError, match="empty"):
        load_points(tmp_path / "empty.obj")
    (tmp_path / "junk.glb").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ShapeFileError, match="junk.glb"):
        load_mesh(tmp_path / "junk.glb")
    (tmp_path / "x.foo").write_text("1 2 3")
    with pytest.raises(ShapeFileError, match="unsupported file type"):
        load_points(tmp_path / "x.foo")
    np.savez(tmp_path / "k.npz", other=PTS)
    with pytest.raises(ShapeFileError, match="no points array"):
        load_points(tmp_path / "k.npz")
    np.savetxt(tmp_path / "two.txt", PTS[:, :2])
    with pytest.raises(ShapeFileError, match="at least 3 columns"):
        load_points(tmp_path / "two.txt")


def test_real_shapenetpart_and_keypointnet_files(shared_data):
    shape = next(p for p in (shared_data / "shapenetpart").rglob("*.txt") if p.parent.name.isdigit())
    table = np.loadtxt(shape)
    assert table.shape[1] == 7  # x y z nx ny nz label
    assert np.allclose(load_points(shape), table[:, :3])
    pts = load_points(next((shared_data / "keypointnet").rglob("*.pcd")))
    assert pts.shape == (2048, 3) and np.isfinite(pts).all()
    assert len(load_mesh(next((shared_data / "keypointnet").rglob("*.obj"))).faces) > 100
