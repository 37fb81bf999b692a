import numpy as np
import pytest
import trimesh

from patchalign3d.keypoints import OraclePointer, detect_keypoints, lift_keypoints
from patchalign3d.keypoints.lifting import backproject_answer, gaussian, vote_weights
from patchalign3d.keypoints.pointers import FeaturePointer, RenderedView


def oracle(*targets, name="spot"):
    return OraclePointer({name: np.asarray(targets, dtype=np.float64)})


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
    res = lift_keypoints(ball, ["spot"], oracle(target), views=26, resolution=128)
    assert len(res.candidates["spot"]) >= 10
    # every patch mean is a point of the sphere's surface patch, a chord's depth below it at most
    assert np.linalg.norm(res.keypoint("spot") - target) < 0.01 * 2.0
    assert set(res.seconds) == {"render", "pointer", "backproject", "cluster"}
    assert all(a[0] in range(26) for a in res.answers["spot"])


def test_oracle_on_a_moved_chair_comes_back_in_its_frame(moved_chair):
    target = seat_top_centre(moved_chair)
    res = lift_keypoints(moved_chair, ["seat middle"], oracle(target, name="seat middle"), views=26, resolution=192)
    diag = np.linalg.norm(np.ptp(moved_chair.vertices, axis=0))
    # patches straddling the seat's edge or the back pull some answers off: a few % of the size
    assert np.linalg.norm(res.keypoint("seat middle") - target) < 0.03 * diag


def test_every_instance_by_default_and_one_per_name_on_request(chair):
    legs = np.asarray(chair.keypoints["leg end"])[[0, 3]]
    # the outer sides of two opposite legs, just above their ends: visible from many views
    outward = legs * [1, 0, 1] / np.linalg.norm(legs * [1, 0, 1], axis=1, keepdims=True)
    a, b = trimesh.proximity.closest_point(chair.mesh, legs + [0, 0.1, 0] + 0.2 * outward)[0]
    opts = dict(views=26, resolution=256, patch_size=3, min_cluster_size=5)
    res = lift_keypoints(chair.mesh, ["foot"], oracle(a, b, name="foot"), **opts)
    found = res.keypoints["foot"]
    assert len(found) == 2
    for target in (a, b):
        assert np.linalg.norm(found - target, axis=1).min() < 0.05
    assert res.shares["foot"].sum() > 0.8 and (np.diff(res.weights["foot"]) <= 0).all()  # heaviest first
    one = lift_keypoints(chair.mesh, ["foot"], oracle(a, b, name="foot"), all_clusters=False, **opts)
    assert len(one.keypoints["foot"]) == 1
    np.testing.assert_allclose(one.keypoints["foot"][0], found[0])
    # a share no cluster reaches keeps none
    none = lift_keypoints(chair.mesh, ["foot"], oracle(a, b, name="foot"), min_cluster_share=0.9, **opts)
    assert len(none.keypoints["foot"]) == 0


def test_pinhole_rig_with_poles_lifts_a_point_seen_only_from_above():
    box = trimesh.creation.box(extents=[2.0, 0.2, 2.0])  # a flat slab: its top centre faces straight up
    target = np.array([0.0, 0.1, 0.0])
    res = lift_keypoints(box, ["top"], oracle(target, name="top"), rig="pinhole", views=26, resolution=96,
                         min_cluster_size=5)
    # seen by the upper ring (views 16-23) and the top view (24); the horizontal ring and the bottom do not
    assert sorted(v for v, _, _ in res.answers["top"]) == list(range(16, 25))
    assert np.linalg.norm(res.keypoint("top") - target) < 0.05
    with pytest.raises(ValueError, match="3 n \\+ 2"):
        lift_keypoints(box, ["top"], oracle(target, name="top"), rig="pinhole", views=10)


def test_too_few_views_give_no_keypoint(chair):
    target = seat_top_centre(chair.mesh)
    res = lift_keypoints(chair.mesh, ["x"], oracle(target, name="x"), views=4, resolution=64)
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


def test_lift_mode_of_detect_keypoints(chair, tmp_path):
    legs = np.asarray(chair.keypoints["leg end"])  # four leg ends, fixed by the shape's construction
    corners = np.asarray(chair.keypoints["seat corner"])
    kps = detect_keypoints(chair.mesh, ["leg end", "seat corner", "armrest end"], mode="lift", num_points=1024,
                           pointer=OraclePointer({"leg end": legs, "seat corner": corners}), views=26, resolution=160)
    assert kps.mode == "lift" and kps.field.shape == (1024, 3)
    assert kps.absent == ["armrest end"]  # the oracle never answered for it
    diag = np.linalg.norm(np.ptp(chair.mesh.vertices, axis=0))
    for name, truth in (("leg end", legs), ("seat corner", corners)):
        found = kps.positions[kps.labels == kps.names.index(name)]
        assert len(found) == len(truth)  # every instance, none twice
        assert np.linalg.norm(truth[:, None] - found[None], axis=-1).min(1).max() < 0.05 * diag
    np.testing.assert_allclose(kps.points[kps.indices], kps.positions, atol=0.05 * diag)  # nearest samples
    assert set(kps.info["seconds"]) == {"render", "pointer", "backproject", "cluster"}
    assert kps.to_png(tmp_path / "lift.png").is_file()


def test_feature_pointer_in_lift_mode(tiny_model, bank, chair):
    kps = detect_keypoints(chair.mesh, ["leg end", "seat corner"], model=tiny_model, text=bank, mode="lift",
                           num_points=1024, views=26, resolution=96)
    assert kps.info["pointer"] == "FeaturePointer" and (kps.indices < 1024).all()


def test_vote_weights_by_hand():
    from data_engine.cameras import CameraConfig, make_rig

    rig = make_rig(CameraConfig(num_views=2, resolution=32, elevations=[0.0], azimuth_range=[0.0, 180.0]))
    depth = np.full((2, 32, 32), np.inf)
    point = np.array([[0.1, 0.2, 0.0]])
    uv, d = rig.project(point)
    for v in range(2):
        r, c = int(uv[v, 0, 1]), int(uv[v, 0, 0])
        depth[v, r - 1:r + 2, c - 1:c + 2] = d[v, 0]  # both views see the point
    views = [RenderedView(i, np.zeros((32, 32, 3), np.uint8), depth[i], np.zeros((32, 32), np.int64), rig, None,
                          np.eye(4)) for i in range(2)]
    sigma, h = 1.0, 3
    own = (0, uv[0, 0, 0] + 0.4, uv[0, 0, 1])  # answered in view 0, 0.4 px off the point's projection
    other = (1, uv[1, 0, 0] + 1.0, uv[1, 0, 1] - 1.0)  # view 1's answer: 1 px right, 1 px up
    far = (1, uv[1, 0, 0] + 5.0, uv[1, 0, 1])  # outside the 3 x 3 patch: no vote
    w = vote_weights(np.repeat(point, 3, axis=0), [own, other, far], views, h, sigma)
    # the first answer: its own vote (offset 0) and view 1's answer at offset (1, -1); the point projects
    # exactly where the others were asked about, 0.4 px from the first answer in view 0
    g = lambda d2: np.exp(-d2 / 2) / np.sqrt(2 * np.pi)  # noqa: E731
    assert w[0] == pytest.approx(g(0.0) + g(2.0))
    assert w[1] == pytest.approx(g(0.16) + g(0.0))
    assert w[2] == pytest.approx(g(0.0) + g(0.16))  # only its own vote in view 1; view 0's answer is near
    assert gaussian(np.array([0.0]), sigma)[0] == pytest.approx(g(0.0))


def test_bad_lift_arguments(chair):
    with pytest.raises(ValueError, match="odd"):
        lift_keypoints(chair.mesh, ["x"], oracle([0, 0, 0]), patch_size=4)
    with pytest.raises(TypeError, match="point"):
        lift_keypoints(chair.mesh, ["x"], object())
    with pytest.raises(ValueError, match="no faces"):
        lift_keypoints(trimesh.Trimesh(np.eye(3), np.zeros((0, 3), int)), ["x"], oracle([0, 0, 0]))
    with pytest.raises(ValueError, match="weighting"):
        lift_keypoints(chair.mesh, ["x"], oracle([0, 0, 0]), weighting="mean")


def test_lift_mode_renders_about_the_given_up_axis(chair, monkeypatch):
    """detect_keypoints(mode="lift", up_axis="z") must orbit the cameras about z (it used to keep y)."""
    import patchalign3d.keypoints.lifting as lifting

    seen, real = [], lifting.render_views

    def spy(mesh, **kwargs):
        seen.append(kwargs["up_axis"])
        return real(mesh, **kwargs)

    monkeypatch.setattr(lifting, "render_views", spy)
    legs = np.asarray(chair.keypoints["leg end"])
    for up in ("z", "y"):
        detect_keypoints(chair.mesh, ["leg end"], mode="lift", num_points=256, up_axis=up,
                         pointer=OraclePointer({"leg end": legs}), views=8, resolution=64)
    assert seen == ["z", "y"]
