"""Visibility, view averaging, nearest-seen fill and normalisation of back-projected features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from data_engine.backproject import (
    BackprojectConfig,
    BackprojectError,
    backproject,
    fill_unseen,
    point_visibility,
    visible_by_depth,
    visible_by_face,
)
from data_engine.cameras import CameraConfig, make_rig
from data_engine.mesh import sample_surface
from data_engine.render import RaycastRenderer

from .conftest import OneHotTeacher


@pytest.fixture(scope="module")
def sphere_scene():
    """A sphere seen from +z and from -z (elevation 0), its surface samples and renders."""
    sphere = trimesh.creation.icosphere(3, radius=0.6)
    points, faces = sample_surface(sphere, 2000, seed=0)
    rig = make_rig(CameraConfig(num_views=2, elevations=[0.0], azimuth_range=[0.0, 360.0], resolution=96))
    return sphere, points, faces, rig, RaycastRenderer().render(sphere, rig)


def test_far_side_takes_nothing_from_a_view(sphere_scene):
    _, points, faces, rig, render = sphere_scene
    uv, _ = rig.project(points)
    visible = visible_by_face(render.face_ids, uv, faces)
    z = points[:, 2] / 0.6  # cosine between the normal and the direction to camera 0
    assert not visible[0, z < -0.05].any()  # camera 0 sits on +z
    assert not visible[1, z > 0.05].any()
    # Face matching misses points whose pixel centre shows a neighbouring face (about a pixel's width
    # from an edge; 2 / 96 here against ~0.09 edges); the depth test does not.
    assert visible[0, z > 0.3].mean() > 0.7
    assert visible[1, z < -0.3].mean() > 0.7
    config = BackprojectConfig(visibility="face_or_depth")
    _, either = point_visibility(rig, render, points, faces, config)
    assert either[0, z > 0.3].mean() > 0.9 and not either[0, z < -0.05].any()


def test_depth_test_agrees_with_face_ids_and_rejects_hidden_points(sphere_scene):
    _, points, faces, rig, render = sphere_scene
    uv, depth = rig.project(points)
    by_face = visible_by_face(render.face_ids, uv, faces)
    # at 96 px a pixel is 0.021 wide; on slanted surfaces the pixel centre's depth is off by about that much
    by_depth = visible_by_depth(render.depth, uv, depth, tolerance=0.03)
    # where the surface faces the camera (cos > 0.5) half a pixel moves depth by < 0.015 * tan(60 deg)
    facing = np.abs(points[:, 2] / 0.6) > 0.5
    assert (by_face <= by_depth)[:, facing].all()  # what the face test sees, the depth test sees too
    assert by_depth.sum() > by_face.sum()
    inner = points * 0.8  # inside the sphere, hidden from every view
    uv_in, depth_in = rig.project(inner)
    assert not visible_by_depth(render.depth, uv_in, depth_in, tolerance=0.03).any()


def test_each_point_takes_the_features_of_the_views_that_see_it(sphere_scene):
    _, points, faces, rig, render = sphere_scene
    grids = OneHotTeacher(num_views=2).patch_features(render.rgb)  # view v's features are e_v everywhere
    uv, visible = point_visibility(rig, render, points, faces, BackprojectConfig())
    features, counts = backproject(grids, uv, visible, points, rig.resolution)
    assert features.dtype == np.float16 and features.shape == (2000, 2)
    np.testing.assert_allclose(np.linalg.norm(features.astype(np.float32), axis=1), 1.0, atol=2e-3)
    front, back = visible[0] & ~visible[1], visible[1] & ~visible[0]
    np.testing.assert_array_equal(features[front], np.tile([1.0, 0.0], (front.sum(), 1)))
    np.testing.assert_array_equal(features[back], np.tile([0.0, 1.0], (back.sum(), 1)))
    np.testing.assert_array_equal(counts, visible.sum(0))
    # unseen points (the rim, and face-edge misses) take their seen neighbours' features
    unseen = counts == 0
    front_gap, back_gap = unseen & (points[:, 2] > 0.3), unseen & (points[:, 2] < -0.3)
    assert front_gap.any() and back_gap.any()
    np.testing.assert_array_equal(features[front_gap], np.tile([1.0, 0.0], (front_gap.sum(), 1)))
    np.testing.assert_array_equal(features[back_gap], np.tile([0.0, 1.0], (back_gap.sum(), 1)))


def test_fill_is_the_mean_of_the_nearest_seen_points():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(300, 3)).astype(np.float32)
    feats = rng.normal(size=(300, 8)).astype(np.float32)
    seen = rng.random(300) < 0.6
    out = fill_unseen(torch.from_numpy(points), torch.from_numpy(feats), torch.from_numpy(seen), k=20).numpy()
    np.testing.assert_array_equal(out[seen], feats[seen])
    seen_idx = np.flatnonzero(seen)
    for i in np.flatnonzero(~seen)[:25]:
        dist = np.linalg.norm(points[seen_idx] - points[i], axis=1)
        nearest = seen_idx[np.argsort(dist)[:20]]
        np.testing.assert_allclose(out[i], feats[nearest].mean(0), atol=1e-5)


def test_fill_with_fewer_seen_points_than_neighbours():
    points = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    feats = torch.eye(4)
    seen = torch.tensor([True, True, False, False])
    out = fill_unseen(points, feats, seen, k=20)
    np.testing.assert_allclose(out[2:].numpy(), np.tile([0.5, 0.5, 0, 0], (2, 1)))


def test_nothing_seen_is_an_error():
    with pytest.raises(BackprojectError, match="no point is visible"):
        fill_unseen(torch.zeros(5, 3), torch.zeros(5, 4), torch.zeros(5, dtype=torch.bool))
