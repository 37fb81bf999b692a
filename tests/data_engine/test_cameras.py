"""The Find3D camera rig and the projection every renderer and lookup shares."""

from __future__ import annotations

import numpy as np
import pytest

from data_engine.cameras import CameraConfig, make_rig


def test_find3d_rig_defaults():
    rig = make_rig()
    assert rig.num_views == 10 and rig.resolution == 500 and rig.orthographic
    eyes = rig.poses[:, :3, 3]
    np.testing.assert_allclose(np.linalg.norm(eyes, axis=1), 3.0)
    elevations = np.rad2deg(np.arcsin(eyes[:, 1] / 3.0))
    np.testing.assert_allclose(elevations, [30, -20] * 5, atol=1e-9)
    azimuths = np.rad2deg(np.arctan2(eyes[:, 0], eyes[:, 2]))
    expected = np.linspace(-180, 180, 10)
    np.testing.assert_allclose(np.cos(np.deg2rad(azimuths - expected)), 1.0, atol=1e-9)  # equal modulo 360
    # every camera looks at the origin: its -z axis points from the eye to the origin
    np.testing.assert_allclose(-rig.poses[:, :3, 2], -eyes / 3.0, atol=1e-12)


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
