import json

import numpy as np
import pytest
import trimesh

from data_engine.synthetic import category_names, make_shape, read_sidecar, write_dataset
from data_engine.synthetic_keypoints import RULES, keypoint_names, locate_keypoints, transform_keypoints


def _box(center, extents):
    return trimesh.creation.box(extents=extents, transform=trimesh.transformations.translation_matrix(center))


def _assembled(pieces):
    return trimesh.util.concatenate([p for _, p in pieces])


def test_rules_on_hand_built_pieces():
    seat = _box([0.0, 1.0, 0.0], [2.0, 0.2, 1.0])  # top face at y = 1.1, corners at x = +-1, z = +-0.5
    leg = trimesh.creation.cylinder(radius=0.05, segment=[[0.8, 0.0, 0.3], [0.8, 0.9, 0.3]])
    pieces = [("seat", seat), ("leg", leg)]
    kp = locate_keypoints(pieces, "chair", _assembled(pieces))
    corners = sorted(map(tuple, np.round(kp["seat corner"], 6)))
    assert corners == [(-1.0, 1.1, -0.5), (-1.0, 1.1, 0.5), (1.0, 1.1, -0.5), (1.0, 1.1, 0.5)]
    np.testing.assert_allclose(kp["leg end"], [[0.8, 0.0, 0.3]], atol=1e-9)  # centre of the bottom disc


def test_round_top_has_no_corners_and_coincident_wheel_pieces_merge():
    disc = trimesh.creation.cylinder(radius=0.5, segment=[[0, 0.9, 0], [0, 1.0, 0]], sections=32)
    hub = [0.0, 0.3, 1.0]
    ring = trimesh.creation.torus(0.3, 0.03, transform=trimesh.transformations.translation_matrix(hub))
    spoke = trimesh.creation.cylinder(radius=0.01, segment=[[0, 0.0, 1.0], [0, 0.6, 1.0]])
    pieces = [("top", disc), ("wheel", ring), ("wheel", spoke)]
    kp = locate_keypoints(pieces, "cart", _assembled(pieces))
    assert "top corner" not in kp
    assert kp["wheel centre"].shape == (1, 3)
    # the hub itself is empty space: the keypoint is the nearest surface point, on the spoke
    assert np.linalg.norm(kp["wheel centre"][0] - hub) < 0.02


def test_category_limited_rule():
    body = trimesh.creation.capsule(height=2.0, radius=0.1)  # along z, tip at z = 1.1
    pieces = [("body", body)]
    assert "nose" in locate_keypoints(pieces, "airplane", body)
    assert locate_keypoints(pieces, "bottle", body) == {}
    np.testing.assert_allclose(locate_keypoints(pieces, "airplane", body)["nose"], [[0, 0, 1.1]], atol=2e-3)


def test_transform_keypoints_is_json_ready():
    out = transform_keypoints({"a": np.array([[1.0, 2.0, 3.0]])}, trimesh.transformations.scale_matrix(0.5))
    assert out == {"a": [[0.5, 1.0, 1.5]]}
    json.dumps(out)


@pytest.mark.parametrize("rotate", [False, True])
def test_generated_keypoints_lie_on_the_final_mesh(rotate):
    names = set(keypoint_names())
    for category in category_names():
        shape = make_shape(category, 3, rotate=rotate)
        for name, points in shape.keypoints.items():
            assert name in names
            _, dist, _ = trimesh.proximity.closest_point(shape.mesh, np.asarray(points))
            assert dist.max() < 1e-5, (category, name)


def test_expected_instances_on_known_categories():
    chair = make_shape("chair", 0)
    lowest = chair.mesh.vertices[:, 1].min()
    legs = np.asarray(chair.keypoints["leg end"])
    assert len(legs) == 4 and np.allclose(legs[:, 1], lowest, atol=1e-6)
    assert len(chair.keypoints["seat corner"]) == 4
    car = make_shape("car", 0)
    assert len(car.keypoints["wheel centre"]) == 4
    assert make_shape("mug", 0).keypoints == {}  # no rule for mug parts
    assert {r.part for r in RULES} >= {"leg", "wheel", "seat", "wing"}


def test_sidecar_carries_keypoints(tmp_path):
    (path,) = write_dataset(tmp_path, ["table"], 1, seed=0)
    side = read_sidecar(path)
    assert set(side["keypoints"]) >= {"leg end"}
    mesh = trimesh.load(path, process=False)
    _, dist, _ = trimesh.proximity.closest_point(mesh, np.asarray(side["keypoints"]["leg end"]))
    assert dist.max() < 1e-5
