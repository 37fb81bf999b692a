"""docs/make_images.py: the README's segmentation pictures from a given checkpoint, and a note naming it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from patchalign3d.app.main import random_demo_model
from patchalign3d.model.checkpoint import export_released

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "make_images.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_images", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pictures_of_every_example_and_the_model_named(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = export_released(random_demo_model(), tmp_path / "patchalign3d_demo.pt")
    # a demo folder's metrics.json tells the caption how the model was made
    (tmp_path / "metrics.json").write_text(json.dumps({
        "quick": False, "seed": 0, "teacher": {"pretrained": False}, "text_encoder": {"spec": "minilm"},
        "splits": {"test_seen": {"model": {"miou": 74.0}}}}))
    make_images = _script()
    assert make_images.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "images"), "--no-app"]) == 0
    images = tmp_path / "images"
    for name in [*make_images.EXAMPLES, "examples"]:
        assert (images / f"{name}_parts.png").read_bytes()[:4] == b"\x89PNG"
    note = (images / "made_with.txt").read_text()
    assert "patchalign3d_demo.pt" in note and "full demo, seed 0" in note and "test_seen mIoU 74.0" in note
    with pytest.raises(SystemExit):
        make_images.main(["--checkpoint", str(tmp_path / "absent.pt"), "--out", str(images)])
    assert "run `patchalign3d demo --out demo_out` first" in capsys.readouterr().err
