"""The app without a browser: request checks and limits, the scripted `segment` endpoint, the command line."""

import json

import numpy as np
import pytest
import torch
import trimesh

from patchalign3d.app import AppInputError, AppLimits, AppSegmenter
from patchalign3d.app.main import app_main
from patchalign3d.examples import example_path
from patchalign3d.text import TextBank
from tests.conftest import make_cloud

NAMES = ["seat", "back", "leg"]


@pytest.fixture
def segmenter(tiny_model):
    g = torch.Generator().manual_seed(0)
    bank = TextBank(NAMES, torch.nn.functional.normalize(torch.randn(3, 64, generator=g), dim=-1), {"text_dim": 64})
    return AppSegmenter(tiny_model, bank, AppLimits(max_upload_mb=1.0, max_points=1000, max_faces=5000))


def test_mesh_request_gives_viewer_and_downloads(segmenter, tmp_path):
    result = segmenter.run(example_path("chair"), " seat, back,, leg ", num_points=512, out_dir=tmp_path)
    assert [p.name for p in result.downloads] == ["chair_parts.glb", "chair_parts.json", "chair_parts.npz"]
    record = json.loads((tmp_path / "chair_parts.json").read_text())
    chair = trimesh.load(example_path("chair"), process=False)
    assert record["part_names"] == NAMES and len(record["face_labels"]) == len(chair.faces)
    viewer = trimesh.load(result.viewer, process=False)
    assert sum(len(g.faces) for g in viewer.geometry.values()) == len(chair.faces)
    assert f"**chair**: {len(chair.faces):,} faces" in result.summary


def test_point_cloud_request(segmenter, tmp_path):
    np.savetxt(tmp_path / "cloud.xyz", make_cloud(600, 2))
    result = segmenter.run(tmp_path / "cloud.xyz", "seat,leg", out_dir=tmp_path / "o")
    assert result.parts_glb is None and [p.suffix for p in result.downloads] == [".ply", ".npz"]
    assert len(trimesh.load(result.viewer).geometry) == 1


@pytest.mark.parametrize("make, names, message", [
    (lambda d: None, "seat", "upload a mesh or point cloud"),
    (lambda d: example_path("chair"), " , ", "type at least one part name"),
    (lambda d: example_path("chair"), "seat,armrest", "not in the text bank"),
    (lambda d: (d / "a.fbx").write_text("x") and d / "a.fbx", "seat", "unsupported file type '.fbx'"),
    (lambda d: (d / "big.xyz").write_bytes(b"0 0 0\n" * 200_000) and d / "big.xyz", "seat", "this app takes files of up to 1 MB"),
    (lambda d: np.savetxt(d / "many.xyz", make_cloud(1500)) or d / "many.xyz", "seat", "1,500 points; this app takes point clouds of up to 1,000"),
    (lambda d: trimesh.creation.icosphere(subdivisions=4).export(d / "dense.glb") and d / "dense.glb", "seat", "5,120 faces"),
    (lambda d: (d / "bad.glb").write_bytes(b"glTF nope") and d / "bad.glb", "seat", "bad.glb could not be read"),
])
def test_bad_requests_get_a_message(segmenter, tmp_path, make, names, message):
    with pytest.raises(AppInputError, match=message):
        segmenter.run(make(tmp_path), names, out_dir=tmp_path / "o")


def test_no_weights_offline_is_a_clear_message(monkeypatch, capsys):
    pytest.importorskip("gradio")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", "/nonexistent-hub-cache")
    assert app_main([]) == 1  # a failure, not a usage error
    err = capsys.readouterr().err
    assert "no model weights" in err and "--checkpoint PATH" in err and "--random-model" in err
    assert "load_model()" not in err and err.count("\n") == 1


def test_api_endpoint_segment_with_gradio_client(segmenter, tmp_path):
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file

    from patchalign3d.app.ui import build_app, launch

    app = build_app(segmenter)
    launch(app, port=None, block=False)
    try:
        client = Client(app.local_url, verbose=False, download_files=str(tmp_path))
        glb = client.predict(handle_file(str(example_path("chair"))), "seat, back, leg", api_name="/segment")
        scene = trimesh.load(glb, process=False)
        assert set(scene.geometry) <= set(NAMES) and scene.geometry
        assert sum(len(g.faces) for g in scene.geometry.values()) == len(trimesh.load(example_path("chair")).faces)
        with pytest.raises(Exception, match="not in the text bank"):
            client.predict(handle_file(str(example_path("chair"))), "seat, armrest", api_name="/segment")
    finally:
        app.close()
