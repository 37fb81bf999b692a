"""Part labels: per-face, per-point, Find3D view masks and files, sidecars, ShapeNetPart."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data_engine.cameras import CameraConfig, make_rig
from data_engine.labels import (
    LabelError,
    PartLabels,
    from_face_labels,
    from_point_labels,
    from_view_masks,
    read_find3d,
    read_shapenetpart,
    read_sidecar,
)
from data_engine.mesh import sample_surface
from data_engine.render import RaycastRenderer

from .conftest import composed_face_labels, composed_mesh


def test_names_are_cleaned_merged_and_unknown_dropped():
    masks = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], bool)
    labels = PartLabels.from_masks(masks, ["Back_Rest", "back rest!", "Unknown", "LEG"])
    assert labels.names == ["back rest", "leg"]
    np.testing.assert_array_equal(labels.masks, [[1, 1, 0, 0], [0, 0, 0, 1]])


def test_face_labels_reach_points_through_their_faces():
    mesh = composed_mesh()
    face_labels = composed_face_labels()
    points, faces = sample_surface(mesh, 600, seed=1)
    labels = from_face_labels(face_labels, ["box", "sphere", "cylinder"], faces)
    assert labels.names == ["box", "sphere", "cylinder"] and labels.masks.shape == (3, 600)
    assert (labels.masks.sum(0) == 1).all()
    # the parts sit at x = -0.6, 0, +0.6, so labels follow position
    np.testing.assert_array_equal(labels.masks[0], points[:, 0] < -0.2999)
    np.testing.assert_array_equal(labels.masks[1], (points[:, 0] > -0.2999) & (points[:, 0] < 0.4))
    np.testing.assert_array_equal(labels.masks[2], points[:, 0] > 0.4)


def test_point_labels_with_unlabelled_points():
    labels = from_point_labels(np.array([0, -1, 1, 1]), ["a", "b"])
    np.testing.assert_array_equal(labels.masks, [[1, 0, 0, 0], [0, 0, 1, 1]])
    with pytest.raises(LabelError):
        from_point_labels(np.array([0, 2]), ["a", "b"])


def test_view_masks_follow_find3d_rule():
    mesh = composed_mesh()
    points, faces = sample_surface(mesh, 800, seed=2)
    rig = make_rig(CameraConfig(num_views=2, elevations=[0.0], azimuth_range=[0.0, 360.0], resolution=64))
    render = RaycastRenderer().render(mesh, rig)
    left = np.zeros((64, 64), bool)
    left[:, :32] = True  # left half of view 0 (world x < 0)
    everything = render.face_ids[1] >= 0
    labels = from_view_masks(
        [(0, left, "Left side"), (1, everything, "whole"), (1, everything, "unknown")], render.face_ids, faces
    )
    assert labels.names == ["left side", "whole"]
    faces_left = np.unique(render.face_ids[0][left])
    np.testing.assert_array_equal(labels.masks[0], np.isin(faces, faces_left[faces_left >= 0]))
    assert labels.masks[0].any() and not labels.masks[0][points[:, 0] > 0.1].any()
    # a point is in a mask only if its face is drawn in that view: the far side of view 1 is not
    faces_seen_1 = np.unique(render.face_ids[1][everything])
    np.testing.assert_array_equal(labels.masks[1], np.isin(faces, faces_seen_1))


def test_find3d_files(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.random((50, 3)).astype(np.float32)
    masks = rng.random((3, 50)) < 0.3
    torch.save(torch.from_numpy(points), tmp_path / "points.pt")
    torch.save(torch.from_numpy(masks), tmp_path / "mask2points.pt")
    (tmp_path / "mask_labels.txt").write_text("Seat\nseat\nunknown\n")
    got_points, labels = read_find3d(tmp_path)
    np.testing.assert_array_equal(got_points, points)
    assert labels.names == ["seat"]
    np.testing.assert_array_equal(labels.masks[0], masks[0] | masks[1])


def test_sidecar_with_point_labels(tmp_path):
    path = tmp_path / "s.parts.json"
    path.write_text(
        json.dumps(
            {"uid": "s", "part_names": ["a"], "points": [[0, 0, 0], [1, 1, 1]], "point_labels": [0, -1]}
        )
    )
    ann = read_sidecar(path)
    assert ann.uid == "s" and ann.points.shape == (2, 3) and ann.point_labels.tolist() == [0, -1]
    path.write_text(json.dumps({"part_names": ["a"], "point_labels": [0]}))
    with pytest.raises(LabelError, match="points"):
        read_sidecar(path)


def test_shapenetpart_files(shared_data):
    table = shared_data / "shapenetpart/04379243/1a2abbc9712e2fffc3bd24f986301745.txt"
    raw = np.loadtxt(table)
    points, labels = read_shapenetpart(table, "Table")
    assert labels.names == ["desktop", "leg or support", "drawer"]  # REFERENCE section 6, ids 47-49
    np.testing.assert_array_equal(labels.masks.sum(1), [(raw[:, 6] == i).sum() for i in (47, 48, 49)])
    np.testing.assert_allclose(points, raw[:, :3], atol=1e-6)
    with pytest.raises(LabelError, match="not Chair"):
        read_shapenetpart(table, "Chair")
