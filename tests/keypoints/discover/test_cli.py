"""``patchalign3d keypoints discover`` and ``evaluate keypointnet --detector discover-*``, end to end on tiny
inputs; mistakes are one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from patchalign3d.cli import main


def test_discover_embeddings_json_png_and_save(bicycles, backbone_dir, tmp_path, capsys):
    rc = main(["keypoints", "discover", str(bicycles), "--method", "embeddings", "--k", "3", "--steps", "5",
               "--checkpoint", str(backbone_dir), "--num-points", "512", "--json", str(tmp_path / "k.json"),
               "--png", str(tmp_path / "k.png"), "--save", str(tmp_path / "finder.pt")])
    assert rc == 0
    out = json.loads((tmp_path / "k.json").read_text())
    assert out["method"] == "embeddings" and out["k"] == 3 and len(out["shapes"]) == 4
    for kps in out["shapes"].values():
        assert [k["name"] for k in kps["keypoints"]] == ["kp0", "kp1", "kp2"] and kps["mode"] == "discover"
    assert (tmp_path / "k.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "finder.pt").is_file()
    assert "4 shapes under" in capsys.readouterr().out


def test_discover_diffuser_trains_when_no_checkpoint_is_given(bicycles, backbone_dir, tmp_path):
    ckpt = tmp_path / "d.ckpt"
    rc = main(["keypoints", "discover", str(bicycles), "--method", "diffuser", "--k", "2", "--steps", "2",
               "--checkpoint", str(backbone_dir), "--num-points", "256", "--save", str(ckpt)])
    assert rc == 0 and ckpt.is_file()
    rc = main(["keypoints", "discover", str(bicycles / "bicycle" / "*.ply"), "--method", "diffuser",
               "--diffuser", str(ckpt), "--json", str(tmp_path / "d.json"), "--num-points", "256"])
    assert rc == 0
    assert len(json.loads((tmp_path / "d.json").read_text())["shapes"]) == 4


@pytest.mark.parametrize("args, message, code", [  # exit status: 1 failed, 2 usage error
    (["/no/such/folder"], "no such folder: /no/such/folder", 1),
    (["{empty}"], "no shape files", 1),
    (["{shapes}", "--k", "0"], "--k must be >= 1", 2),
    (["{shapes}", "--method", "diffuser", "--diffuser", "/no/d.ckpt"], "no such diffuser checkpoint", 1),
    (["{shapes}", "--png", "{empty}"], "--png", 2),  # a folder where a file is wanted, refused before any work
    (["{shapes}", "--method", "diffuser", "--diffuser", "{notes}"],
     "notes.ckpt is not a KeyPointDiffuser checkpoint: it is a text file", 1),
    (["{shapes}", "--method", "diffuser", "--diffuser", "{cut}"], "cut.ckpt is not a KeyPointDiffuser checkpoint", 1),
])
def test_mistakes_are_one_line_errors(bicycles, tmp_path, capsys, args, message, code):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")
    torch.save({"state_dict": {"w": torch.zeros(3)}}, tmp_path / "cut.ckpt")
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "cut.ckpt").read_bytes()[:200])  # a write cut short
    args = [a.format(empty=tmp_path / "empty", shapes=bicycles, notes=tmp_path / "notes.ckpt", cut=tmp_path / "cut.ckpt")
            for a in args]
    assert main(["keypoints", "discover", *args]) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_evaluate_keypointnet_discover_embeddings(kpnet, backbone_dir, tmp_path, capsys):
    rc = main(["evaluate", "keypointnet", "--root", str(kpnet), "--categories", "chair", "--detector",
               "discover-embeddings", "--k", "2", "--checkpoint", str(backbone_dir), "--json", str(tmp_path / "r.json")])
    assert rc == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["detector"] == "discover-embeddings" and report["categories"] == ["chair"]
    row = report["per_category"]["chair"]
    assert (row["train"], row["test"]) == (2, 2)  # the fixture's train chairs; c2 has no cloud
    for key in ("das", "das_random", "regression_error", "regression_error_random"):
        assert report[key] is not None and 0 <= report[key]
    assert report["correlation"] is None  # KeypointNet has no part labels per point
    assert "| **mean** |" in capsys.readouterr().out
