"""``python -m data_engine inspect STORE``: the summary people read and the contact sheet they look at."""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image

from data_engine import precompute
from data_engine.__main__ import main
from data_engine.inspection import feature_colors

from .conftest import tiny_config, write_labelled_shape


def test_inspect_a_store(tmp_path, capsys):
    for i, category in enumerate(["chair", "lamp", "chair", "mug"]):
        write_labelled_shape(tmp_path / "in", f"s{i}", category=category)
    (tmp_path / "in" / "broken.obj").write_bytes(b"")
    store = tmp_path / "store"
    config = tiny_config(**{"input.paths": f"[{tmp_path / 'in'}]", "output": str(store), "split.val_fraction": 0,
                            "camera.num_views": 1})  # one view: every shape gets a seen-fraction warning
    precompute(config, progress=False)

    png = tmp_path / "sheet.png"
    assert main(["inspect", str(store), "--png", str(png), "--num", "3"]) == 0
    out = capsys.readouterr().out
    assert "shapes per split: train 4, val 0" in out
    assert re.search(r"chair\s+2\s+0\n", out) and re.search(r"lamp\s+1\s+0\n", out)  # categories per split
    assert "part vocabulary (3 names; shapes carrying each):" in out and re.search(r"box part\s+4\n", out)
    assert "0.2-0.3 |" in out or "0.3-0.4 |" in out  # the histogram has the one-view fractions
    assert "failed (1):\n  broken: " in out and "warnings (4):" in out
    assert "RANDOM weights" in out and "in shuffled order, seed 0" in out
    with Image.open(png) as image:
        assert image.size[1] > image.size[0]  # three rows of two panels: taller than wide
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # coloured points, not a blank page

    assert main(["inspect", str(store), "--json", "--no-png"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stats"]["categories"]["train"] == {"chair": 2, "lamp": 1, "mug": 1}
    assert summary["stats"]["part_counts"] == {"box part": 4, "cylinder": 4, "sphere": 4}


def test_inspect_refuses_what_is_not_a_store(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 1
    assert "is not a finished store" in capsys.readouterr().err


def test_feature_colors_follow_the_principal_components():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 5
    features = np.concatenate([c + 0.05 * rng.normal(size=(100, 8)) for c in centres]).astype(np.float16)
    colors = feature_colors(features)
    assert colors.shape == (300, 3) and colors.min() >= 0 and colors.max() <= 1
    means = np.stack([colors[i * 100 : (i + 1) * 100].mean(0) for i in range(3)])
    # three clusters, three clearly different colours
    assert min(np.linalg.norm(means[i] - means[j]) for i in range(3) for j in range(i + 1, 3)) > 0.3
