import numpy as np
import pytest
import trimesh

from patchalign3d.keypoints import detect_keypoints, lift_keypoints
from patchalign3d.keypoints.lifting import backproject_answer
from patchalign3d.keypoints.pointers import FeaturePointer, RenderedView


class OraclePointer:
    """Points at given 3D targets (input frame) in every view where they are visible."""

    def __init__(self, *targets):
        self.targets = np.asarray(targets, dtype=np.float64)

    def point(self, image, name, *, view=None):
        t = trimesh.transform_points(self.targets, view.transform)
        uv, depth = view.rig.project(t)
        out = []
        for (u, v), d in zip(uv[view.index], depth[view.index]):
            r, c = int(v), int(u)
            if 0 <= r < image.shape[0] and 0 <= c < image.shape[1] and abs(view.depth[r, c] - d) < 0.01:
                out.append((float(u), float(v)))
        return out


@pytest.fixture(scope="module")
def moved_chair(chair):
    mesh = chair.mesh.copy()
    mesh.apply_scale(3.0)
    mesh.apply_translation([1.0, 2.0, -3.0])
    return mesh


def seat_top_centre(mesh):
    """A point in the middle of the seat's top face (flat all around)."""
    up = mesh.face_normals[:, 1] > 0.99
    centres = mesh.triangles_center[up]
    heights = np.round(centres[:, 1], 4)
    seat = centres[heights == np.median(heights)]
    target = seat.mean(0)
    return trimesh.proximity.closest_point(mesh, target[None])[0][0]


def test_oracle_answers_lift_back_to_the_point_on_a_convex_shape():
    ball = trimesh.creation.icosphere(subdivisions=4, radius=2.0)
    ball.apply_translation([5.0, -1.0, 2.0])
    target = ball.vertices[17]
    res = lift_keypoints(ball, ["spot"], OraclePointer(target), views=26, resolution=128)
    assert len(res.candidates["spot"]) >= 10
    # every patch mean is a point of the sphere's surface patch, a chord's depth below it at most
    assert np.linalg.norm(res.keypoint("spot") - target) < 0.01 * 2.0
    assert set(res.seconds) == {"render", "pointer", "backproject", "cluster"}
    assert all(a[0] in range(26) for a in res.answers["spot"])


def test_oracle_on_a_moved_chair_comes_back_in_its_frame(moved_chair):
    target = seat_top_centre(moved_chair)
    res = lift_keypoints(moved_chair, ["seat middle"], OraclePointer(target), views=26, resolution=192)
    diag = np.linalg.norm(np.ptp(moved_chair.vertices, axis=0))
    # patches straddling the seat's edge or the back pull some answers off: a few % of the size
    assert np.linalg.norm(res.keypoint("seat middle") - target) < 0.03 * diag


def test_two_instances_with_all_clusters(chair):
    legs = np.asarray(chair.keypoints["leg end"])[[0, 3]]
    # the outer sides of two opposite legs, just above their ends: visible from many views
    outward = legs * [1, 0, 1] / np.linalg.norm(legs * [1, 0, 1], axis=1, keepdims=True)
    a, b = trimesh.proximity.closest_point(chair.mesh, legs + [0, 0.1, 0] + 0.2 * outward)[0]
    res = lift_keypoints(chair.mesh, ["foot"], OraclePointer(a, b), views=26, resolution=256, patch_size=3,
                         all_clusters=True, min_cluster_size=5)
    found = res.keypoints["foot"]
    assert len(found) == 2
    for target in (a, b):
        assert np.linalg.norm(found - target, axis=1).min() < 0.05


def test_too_few_views_give_no_keypoint(chair):
    target = seat_top_centre(chair.mesh)
    res = lift_keypoints(chair.mesh, ["x"], OraclePointer(target), views=4, resolution=64)
    assert res.keypoint("x") is None and len(res.keypoints["x"]) == 0
    assert 0 < len(res.candidates["x"]) < 10


def _flat_view(depth):
    from data_engine.cameras import CameraConfig, make_rig

    rig = make_rig(CameraConfig(num_views=1, resolution=depth.shape[0]))
    return RenderedView(0, np.zeros((*depth.shape, 3), np.uint8), depth, np.zeros(depth.shape, np.int64), rig, None,
                        np.eye(4))


def test_backprojection_weight_by_hand():
    depth = np.full((9, 9), 2.0, dtype=np.float32)
    sigma = 1.0
    point, weight = backproject_answer(_flat_view(depth), 4.5, 4.5, 3, sigma)  # the centre of pixel (4, 4)
    expected = (1 + 4 * np.exp(-1 / 2) + 4 * np.exp(-2 / 2)) / (sigma * np.sqrt(2 * np.pi))
    assert weight == pytest.approx(expected)
    view = _flat_view(depth)
    np.testing.assert_allclose(point, view.pixel_points(np.array([4]), np.array([4]))[0], atol=1e-9)
    depth[3, :] = np.inf  # the row above is off the mesh: dropped from the mean and the weight
    point, weight = backproject_answer(_flat_view(depth), 4.5, 4.5, 3, sigma)
    assert weight == pytest.approx((1 + 2 * np.exp(-1 / 2) + 2 * np.exp(-2 / 2) + np.exp(-1 / 2)) / np.sqrt(2 * np.pi))
    depth[:] = np.inf
    assert backproject_answer(_flat_view(depth), 4.5, 4.5, 3, sigma) is None


def test_feature_pointer_lifting_end_to_end(tiny_model, bank, chair):
    pointer = FeaturePointer(tiny_model, bank, num_points=1024)
    res = lift_keypoints(chair.mesh, ["leg end"], pointer, views=26, resolution=96)
    kp = res.keypoint("leg end")
    assert kp is not None
    _, dist, _ = trimesh.proximity.closest_point(chair.mesh, kp[None])
    assert dist[0] < 0.05  # a patch mean lies on or just off the surface
    # the answers come from the best-scoring samples: the lifted point is near the top of the field
    scores = pointer.scores("leg end")
    top = pointer._samples[scores >= np.quantile(scores, 0.9)]
    assert np.linalg.norm(top - kp, axis=1).min() < 0.15


def test_lift_mode_of_detect_keypoints(tiny_model, bank, chair, tmp_path):
    kps = detect_keypoints(chair.mesh, ["leg end", "seat corner"], model=tiny_model, text=bank, mode="lift",
                           num_points=1024, views=26, resolution=96)
    assert kps.mode == "lift" and kps.field.shape == (1024, 2)
    assert len(kps) <= 2 and (kps.indices < 1024).all()
    assert set(kps.info["seconds"]) == {"render", "pointer", "backproject", "cluster"}
    assert kps.to_png(tmp_path / "lift.png").is_file()


def test_bad_lift_arguments(chair):
    with pytest.raises(ValueError, match="odd"):
        lift_keypoints(chair.mesh, ["x"], OraclePointer([0, 0, 0]), patch_size=4)
    with pytest.raises(TypeError, match="point"):
        lift_keypoints(chair.mesh, ["x"], object())
    with pytest.raises(ValueError, match="no faces"):
        lift_keypoints(trimesh.Trimesh(np.eye(3), np.zeros((0, 3), int)), ["x"], OraclePointer([0, 0, 0]))
