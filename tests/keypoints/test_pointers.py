import numpy as np
import pytest

from patchalign3d.errors import WeightsUnavailableError
from patchalign3d.keypoints.pointers import (
    FeaturePointer,
    MolmoPointer,
    Pointer2D,
    parse_molmo_points,
    unproject,
)


def test_molmo_single_point_in_percent():
    text = ' <point x="61.5" y="40.6" alt="leg end">leg end</point>'
    assert parse_molmo_points(text, 200, 100) == [(123.0, 40.6)]


def test_molmo_several_points():
    text = '<points x1="10.0" y1="20.0" x2="90" y2="50.5" alt="wheels">wheels</points>'
    assert parse_molmo_points(text, 400, 200) == [(40.0, 40.0), (360.0, 101.0)]


def test_molmo_none_and_garbage():
    assert parse_molmo_points("There are none.", 100, 100) == []
    assert parse_molmo_points('<point x="120" y="30">off</point>', 100, 100) == []  # outside the image
    assert parse_molmo_points('<points x1="10" y2="30">odd</points>', 100, 100) == []  # x1 without y1


def test_molmo2_coords_in_thousandths():
    assert parse_molmo_points('<points coords="1 1 500 250">leg</points>', 200, 100) == [(100.0, 25.0)]
    assert parse_molmo_points('<points coords="1 500 250 2 100 900">', 200, 100) == [(100.0, 25.0), (20.0, 90.0)]


def test_bad_image_size():
    with pytest.raises(ValueError, match="image size"):
        parse_molmo_points("", 0, 10)


def test_pointers_follow_the_protocol():
    assert isinstance(FeaturePointer(), Pointer2D)
    assert isinstance(MolmoPointer(), Pointer2D)
    with pytest.raises(ValueError, match=r"\{name\}"):
        MolmoPointer(prompt="Point to it.")


def test_molmo_weights_missing_is_a_clear_error(tmp_path):
    pointer = MolmoPointer(str(tmp_path / "no-molmo-here"))  # a folder that does not exist: nothing is fetched
    with pytest.raises(WeightsUnavailableError, match="no-molmo-here"):
        pointer.point(np.zeros((8, 8, 3), np.uint8), "leg end")


def test_feature_pointer_needs_the_view():
    with pytest.raises(ValueError, match="view"):
        FeaturePointer().point(np.zeros((4, 4, 3), np.uint8), "nose")


@pytest.mark.parametrize("orthographic", [True, False])
def test_unproject_inverts_project(orthographic):
    from data_engine.cameras import CameraConfig, make_rig

    rig = make_rig(CameraConfig(num_views=5, resolution=64, orthographic=orthographic))
    pts = np.random.default_rng(0).uniform(-0.5, 0.5, size=(20, 3))
    uv, depth = rig.project(pts)
    for v in range(rig.num_views):
        np.testing.assert_allclose(unproject(rig, v, uv[v, :, 0], uv[v, :, 1], depth[v]), pts, atol=1e-9)
