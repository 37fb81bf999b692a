"""The Find3D camera rig and the projection every renderer and lookup shares."""

from __future__ import annotations

import numpy as np
import pytest

from data_engine.cameras import CameraConfig, make_rig

# Find3D's rig (dataengine/rendering/render_2d.py): elevations tile [30, -20], azimuths are
# np.linspace(-180, 180, 10, endpoint=False), distance 3, written out here rather than recomputed.
FIND3D_AZIMUTHS = [-180.0, -144.0, -108.0, -72.0, -36.0, 0.0, 36.0, 72.0, 108.0, 144.0]
FIND3D_ELEVATIONS = [30.0, -20.0, 30.0, -20.0, 30.0, -20.0, 30.0, -20.0, 30.0, -20.0]


def test_find3d_rig_defaults():
    rig = make_rig()
    assert rig.num_views == 10 and rig.resolution == 500 and rig.orthographic
    eyes = rig.poses[:, :3, 3]
    np.testing.assert_allclose(np.linalg.norm(eyes, axis=1), 3.0)
    elevations = np.rad2deg(np.arcsin(eyes[:, 1] / 3.0))
    np.testing.assert_allclose(elevations, FIND3D_ELEVATIONS, atol=1e-9)
    azimuths = np.rad2deg(np.arctan2(eyes[:, 0], eyes[:, 2]))
    azimuths[np.isclose(azimuths, 180.0)] = -180.0  # arctan2 may return either end for the first view
    np.testing.assert_allclose(azimuths, FIND3D_AZIMUTHS, atol=1e-9)
    # every camera looks at the origin: its -z axis points from the eye to the origin
    np.testing.assert_allclose(-rig.poses[:, :3, 2], -eyes / 3.0, atol=1e-12)


def test_find3d_eye_positions_by_hand():
    """Two eyes worked out by hand with PyTorch3D's convention (x = d cos e sin a, y = d sin e, z = d cos e cos a)."""
    eyes = make_rig().poses[:, :3, 3]
    # view 0: azimuth -180, elevation 30 -> (0, 3 sin 30, -3 cos 30)
    np.testing.assert_allclose(eyes[0], [0.0, 1.5, -2.598076], atol=1e-6)
    # view 1: azimuth -144, elevation -20 -> (3 * 0.939693 * -0.587785, -3 * 0.342020, 3 * 0.939693 * -0.809017)
    np.testing.assert_allclose(eyes[1], [-1.657013, -1.026060, -2.280683], atol=1e-5)


def test_find3d_views_are_distinct():
    """No two views look from the same direction (the first and last did when the stop was included)."""
    dirs = make_rig().poses[:, :3, 3] / 3.0
    cos = dirs @ dirs.T
    np.fill_diagonal(cos, -1.0)
    assert cos.max() < 0.99


def test_bad_rig_settings_are_named():
    with pytest.raises(ValueError, match="azimuth_range"):
        make_rig(CameraConfig(azimuth_range=[0.0]))
    with pytest.raises(ValueError, match="num_views"):
        make_rig(CameraConfig(num_views=0))


@pytest.mark.parametrize("orthographic", [True, False])
def test_origin_projects_to_the_image_centre(orthographic):
    rig = make_rig(CameraConfig(num_views=5, resolution=64, orthographic=orthographic))
    uv, depth = rig.project(np.zeros((1, 3)))
    np.testing.assert_allclose(uv[:, 0], 32.0, atol=1e-9)
    np.testing.assert_allclose(depth[:, 0], 3.0)


@pytest.mark.parametrize("orthographic", [True, False])
def test_rays_and_projection_agree(orthographic):
    rig = make_rig(CameraConfig(num_views=3, resolution=16, orthographic=orthographic))
    origins, directions = rig.rays()
    t = 2.5
    points = origins + t * directions  # (V, P, 3): a point on each pixel's ray
    scale = rig.ray_depth_scale()
    rows, cols = np.divmod(np.arange(16 * 16), 16)
    for v in range(rig.num_views):
        uv, depth = rig.project(points[v])
        np.testing.assert_allclose(uv[v, :, 0], cols + 0.5, atol=1e-9)
        np.testing.assert_allclose(uv[v, :, 1], rows + 0.5, atol=1e-9)
        np.testing.assert_allclose(depth[v], t * scale, atol=1e-9)


def test_image_is_not_mirrored():
    # seen from +z (azimuth 0, elevation 0), world +x is image right and world +y is image up
    rig = make_rig(CameraConfig(num_views=1, elevations=[0.0], azimuth_range=[0.0, 0.0], resolution=100))
    uv, _ = rig.project(np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]))
    assert uv[0, 0, 0] > 50 and uv[0, 1, 1] < 50
