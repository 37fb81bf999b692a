import json

import pytest
import torch

from data_engine.synthetic import write_dataset
from patchalign3d.cli import main
from patchalign3d.keypoints.keypointnet import DEFAULT_NAMES, KeypointNet
from patchalign3d.model import patchalign3d_tiny
from patchalign3d.model.checkpoint import export_released
from patchalign3d.text import TextBank


@pytest.fixture
def files(tmp_path):
    torch.manual_seed(0)
    ckpt = export_released(patchalign3d_tiny().eval(), tmp_path / "tiny.pt")
    names = ["leg end", "seat corner", *sorted({n for t in DEFAULT_NAMES.values() for n in t.values()})]
    g = torch.Generator().manual_seed(0)
    TextBank(names, torch.nn.functional.normalize(torch.randn(len(names), 64, generator=g), dim=-1), {}).save(tmp_path / "bank.pt")
    return ["--checkpoint", str(ckpt), "--text-bank", str(tmp_path / "bank.pt")]


def test_zero_shot_json_and_png(files, tmp_path, capsys):
    rc = main(["keypoints", "example:chair", "--names", "leg end, seat corner", *files,
               "--json", str(tmp_path / "k.json"), "--png", str(tmp_path / "k.png")])
    assert rc == 0
    out = json.loads((tmp_path / "k.json").read_text())
    assert out["mode"] == "zero_shot" and out["names"] == ["leg end", "seat corner"] and out["num_points"] == 2048
    assert {k["name"] for k in out["keypoints"]} <= {"leg end", "seat corner"} and out["keypoints"]
    assert (tmp_path / "k.png").read_bytes()[:4] == b"\x89PNG"
    assert "zero_shot keypoints on 2048 points" in capsys.readouterr().out


def test_few_shot_from_demo_shapes_with_sidecars(files, tmp_path):
    paths = write_dataset(tmp_path / "shapes", ["chair"], 3, seed=0)
    rc = main(["keypoints", str(paths[2]), "--names", "leg end,seat corner", "--mode", "few_shot", *files,
               "--support", str(paths[0]), "--support", str(paths[1]), "--json", str(tmp_path / "f.json")])
    assert rc == 0
    out = json.loads((tmp_path / "f.json").read_text())
    assert out["mode"] == "few_shot" and out["info"]["shots"] == 2
    assert sum(k["name"] == "leg end" for k in out["keypoints"]) <= 4


def test_few_shot_from_a_json_support_file(files, tmp_path):
    paths = write_dataset(tmp_path / "shapes", ["table"], 2, seed=0)
    side = json.loads(paths[0].with_name(paths[0].stem + ".parts.json").read_text())
    support = tmp_path / "support.json"
    support.write_text(json.dumps([{"shape": str(paths[0]), "keypoints": {"leg end": side["keypoints"]["leg end"]}}]))
    assert main(["keypoints", str(paths[1]), "--names", "leg end", "--mode", "few_shot", *files,
                 "--support", str(support)]) == 0


def test_lift_mode_runs_offline(files, tmp_path):
    assert main(["keypoints", "example:chair", "--names", "leg end", "--mode", "lift", *files, "--views", "12",
                 "--resolution", "64", "--json", str(tmp_path / "l.json")]) == 0
    assert json.loads((tmp_path / "l.json").read_text())["info"]["pointer"] == "FeaturePointer"


@pytest.mark.parametrize(
    "args, message, code",
    [  # exit status: 1 failed, 2 usage error (patchalign3d.command_line)
        (["nowhere.ply", "--names", "leg end"], "no such shape file", 1),
        (["example:chair", "--names", "armrest tip"], "not in the text bank", 1),
        (["example:chair", "--names", "leg end, "], "blank part names", 2),
        (["example:chair", "--names", "leg end", "--mode", "few_shot"], "needs annotated examples", 2),
    ],
)
def test_user_mistakes_are_one_line_errors(files, args, message, code, capsys):
    assert main(["keypoints", *args, *files]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_evaluate_keypointnet_with_predictions(kpnet, tmp_path, capsys):
    preds = {s.key: s.gt_indices.tolist() for s in KeypointNet(kpnet, "chair", "test")}
    (tmp_path / "p.json").write_text(json.dumps(preds))
    rc = main(["evaluate", "keypointnet", "--root", str(kpnet), "--categories", "chair", "--split", "test",
               "--predictions", str(tmp_path / "p.json"), "--json", str(tmp_path / "r.json")])
    assert rc == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["mean"]["0.10"] == 100.0 and report["missing"] == {"chair": ["03001627-c2"]}
    captured = capsys.readouterr()
    assert "| **measured: mean over categories** |" in captured.out
    assert "1 shape(s) of the test split have no point cloud" in captured.err


def test_evaluate_keypointnet_with_the_zero_shot_detector(kpnet, files, tmp_path):
    assert main(["evaluate", "keypointnet", "--root", str(kpnet), "--categories", "chair,table", *files,
                 "--markdown", str(tmp_path / "r.md")]) == 0
    assert "patchalign3d zero_shot" in (tmp_path / "r.md").read_text()


def test_evaluate_keypointnet_errors(kpnet, tmp_path, capsys):
    (tmp_path / "p.json").write_text(json.dumps({"03001627-zzz": []}))
    assert main(["evaluate", "keypointnet", "--root", str(kpnet), "--categories", "chair",
                 "--predictions", str(tmp_path / "p.json")]) == 1
    assert "unknown shape" in capsys.readouterr().err
    assert main(["evaluate", "keypointnet", "--root", str(tmp_path / "none"), "--predictions", "x.json"]) == 1
    assert "does not exist" in capsys.readouterr().err
