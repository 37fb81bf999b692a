import numpy as np
import pytest
from PIL import Image

from patchalign3d.keypoints.result import render_keypoints_png
from patchalign3d.viz import label_colors, part_colors, plot_frame, render_segmentation_png


def test_colors_are_distinct_and_unlabelled_is_grey():
    cols = part_colors(12)
    assert len({tuple(c) for c in cols}) == 12
    rgb = label_colors(np.array([0, 1, -1]), 2)
    assert rgb.dtype == np.uint8 and tuple(rgb[2]) == (191, 191, 191)
    assert tuple(rgb[0]) != tuple(rgb[1])


def test_png_shows_parts_in_their_colours(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(400, 3))
    labels = (pts[:, 1] > 0).astype(int)
    path = render_segmentation_png(pts, labels, ["top", "bottom"], tmp_path / "s.png", true_labels=labels, title="t")
    img = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    for colour in label_colors(np.array([0, 1]), 2).astype(int):
        assert (np.abs(img - colour).sum(1) < 30).sum() > 50  # both parts are drawn


def _marked_shape():
    """A y-up shape: a core, and a blob on each side: left (-x), right (+x), top (+y), front (+z)."""
    rng = np.random.default_rng(0)
    blobs = {"left": (-1, 0, 0), "right": (1, 0, 0), "top": (0, 1, 0), "front": (0, 0, 1)}
    pts = [rng.normal(scale=0.05, size=(150, 3)) + c for c in blobs.values()]
    return np.concatenate(pts), np.repeat(np.arange(len(blobs)), 150), list(blobs)


def _centroids(path, colours):
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    out = []
    for c in colours:
        rows, cols = np.nonzero(np.abs(img - np.asarray(c)).sum(-1) < 40)
        assert len(rows) > 20
        out.append((cols.mean(), rows.mean()))  # (x right, y down) in the picture
    return out


def _check_right_handed(left, right, top, front):
    # left is drawn left of right; the top above both; the front, nearer the camera that looks down on the
    # shape from 20 degrees above, below them. A mirror (y and z swapped) would draw the front above.
    assert left[0] < right[0]
    assert top[1] < min(left[1], right[1])
    assert front[1] > max(left[1], right[1])


def test_segmentation_pictures_are_not_mirrored(tmp_path):
    pts, labels, names = _marked_shape()
    path = render_segmentation_png(pts, labels, names, tmp_path / "s.png", point_size=8.0)
    _check_right_handed(*_centroids(path, label_colors(np.arange(4), 4).astype(int)))
    # a z-up shape is drawn as it is: the same shape with its up along z looks the same
    zup = pts[:, [0, 2, 1]] * [1, -1, 1]  # rotate y-up to z-up: (x, y, z) -> (x, -z, y)
    path = render_segmentation_png(zup, labels, names, tmp_path / "z.png", point_size=8.0, up_axis="z")
    _check_right_handed(*_centroids(path, label_colors(np.arange(4), 4).astype(int)))


def test_keypoint_pictures_are_not_mirrored(tmp_path):
    pts, _, names = _marked_shape()
    marks = np.array([[-1.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    path = render_keypoints_png(pts, marks, names, tmp_path / "k.png", names=names)
    _check_right_handed(*_centroids(path, (part_colors(4) * 255).round().astype(int)))


def test_plot_frame_is_a_rotation():
    x = np.eye(3)
    assert np.linalg.det(plot_frame(x, "y")) == 1.0 and (plot_frame(x, "z") == x).all()
    with pytest.raises(ValueError, match="up_axis"):
        plot_frame(x, "x")
