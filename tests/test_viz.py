import numpy as np
from PIL import Image

from patchalign3d.viz import label_colors, part_colors, render_segmentation_png


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
