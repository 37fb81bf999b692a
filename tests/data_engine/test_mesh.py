"""Mesh loading, Find3D normalisation, up-axis and surface sampling."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from data_engine.mesh import (
    MeshConfig,
    MeshError,
    load_mesh,
    normalization_transform,
    normalize_mesh,
    sample_surface,
    shape_seed,
    up_axis_rotation,
)

from .conftest import composed_mesh


def test_box_normalisation_matches_find3d():
    mesh = composed_mesh().apply_scale(3.7).apply_translation([5.0, -2.0, 1.0])
    out, transform = normalize_mesh(mesh, MeshConfig(normalize="box", extent=0.75))
    np.testing.assert_allclose(out.vertices.mean(0), 0, atol=1e-9)  # vertex mean, not bbox centre
    assert np.abs(out.vertices).max() == pytest.approx(0.75)
    np.testing.assert_allclose(trimesh.transform_points(mesh.vertices, transform), out.vertices, atol=1e-9)


def test_sphere_normalisation():
    mesh = composed_mesh().apply_translation([1.0, 2.0, 3.0])
    out, _ = normalize_mesh(mesh, MeshConfig(normalize="sphere", extent=1.0))
    assert np.linalg.norm(out.vertices, axis=1).max() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "axis, vector", [("z", [0, 0, 1]), ("-z", [0, 0, -1]), ("x", [1, 0, 0]), ("-y", [0, -1, 0])]
)
def test_up_axis_goes_to_y_without_mirroring(axis, vector):
    rot = up_axis_rotation(axis)
    np.testing.assert_allclose(rot[:3, :3] @ np.asarray(vector, float), [0, 1, 0], atol=1e-12)
    assert np.linalg.det(rot[:3, :3]) == pytest.approx(1.0)


def test_z_up_file_becomes_y_up():
    tall = trimesh.creation.box((0.2, 0.3, 2.0))  # long along z
    transform = normalization_transform(tall.vertices, "box", 0.75, up_axis="z")
    extent = np.ptp(trimesh.transform_points(tall.vertices, transform), axis=0)
    assert extent.argmax() == 1


def test_samples_lie_on_their_faces_and_are_seeded():
    mesh = composed_mesh()
    points, faces = sample_surface(mesh, 500, seed=3)
    assert points.shape == (500, 3) and points.dtype == np.float32 and faces.dtype == np.int64
    # each point is on its own triangle: on the triangle's plane, barycentric coordinates in [0, 1]
    to_plane = np.einsum("nk,nk->n", points - mesh.triangles[faces][:, 0], mesh.face_normals[faces])
    assert np.abs(to_plane).max() < 1e-5
    bary = trimesh.triangles.points_to_barycentric(mesh.triangles[faces], points)
    assert bary.min() > -1e-4
    again, faces_again = sample_surface(mesh, 500, seed=3)
    np.testing.assert_array_equal(points, again)
    np.testing.assert_array_equal(faces, faces_again)
    assert shape_seed(0, "a") == shape_seed(0, "a") != shape_seed(0, "b")


def test_scene_is_flattened_with_its_transforms(tmp_path):
    scene = trimesh.Scene()
    scene.add_geometry(
        trimesh.creation.box((1, 1, 1)), transform=trimesh.transformations.translation_matrix([5, 0, 0])
    )
    scene.add_geometry(
        trimesh.creation.icosphere(1), transform=trimesh.transformations.translation_matrix([-5, 0, 0])
    )
    path = tmp_path / "scene.glb"
    scene.export(path)
    mesh = load_mesh(path)
    assert len(mesh.faces) == 12 + 80
    assert mesh.bounds[0, 0] == pytest.approx(-6.0, abs=1e-3) and mesh.bounds[1, 0] == pytest.approx(
        5.5, abs=1e-3
    )


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.ply", b"", "empty"),
        ("garbage.glb", b"\x00\x01garbage bytes\xff" * 10, "could not be read"),
        ("cloud.ply", None, "no faces"),
    ],
)
def test_bad_files_raise_a_clear_mesh_error(tmp_path, name, content, reason):
    path = tmp_path / name
    if content is None:
        trimesh.PointCloud(np.random.default_rng(0).random((50, 3))).export(path)
    else:
        path.write_bytes(content)
    with pytest.raises(MeshError, match=reason):
        load_mesh(path)


def test_degenerate_mesh_is_rejected(tmp_path):
    flat = trimesh.Trimesh(vertices=[[0, 0, 0], [1, 0, 0], [2, 0, 0]], faces=[[0, 1, 2]], process=False)
    path = tmp_path / "flat.off"
    flat.export(path)
    with pytest.raises(MeshError, match="degenerate"):
        load_mesh(path)


def test_real_shapenet_mesh(keypointnet_mesh):
    mesh = load_mesh(keypointnet_mesh)
    out, _ = normalize_mesh(mesh)
    assert len(out.faces) > 1000
    assert np.abs(out.vertices).max() == pytest.approx(0.75)
