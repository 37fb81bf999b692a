import json

import huggingface_hub
import numpy as np
import pytest
import torch
import trimesh
from huggingface_hub.errors import LocalEntryNotFoundError

from data_engine.synthetic import write_dataset
from patchalign3d.cli import main
from patchalign3d.keypoints import KeypointNamer
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
    rc = main(["keypoints", "example:chair", "--names", "leg end, seat corner", *files, "--min-probability", "none",
               "--json", str(tmp_path / "k.json"), "--png", str(tmp_path / "k.png")])
    assert rc == 0
    out = json.loads((tmp_path / "k.json").read_text())
    assert out["mode"] == "zero_shot" and out["names"] == ["leg end", "seat corner"] and out["num_points"] == 2048
    assert {k["name"] for k in out["keypoints"]} <= {"leg end", "seat corner"} and out["keypoints"]
    assert (tmp_path / "k.png").read_bytes()[:4] == b"\x89PNG"
    assert "zero_shot keypoints on 2048 points" in capsys.readouterr().out


def _sidecar_keypoints(path):
    return json.loads(path.with_name(path.stem + ".parts.json").read_text())["keypoints"]


def _nearest_distances(found, truth):
    found, truth = np.asarray(found, dtype=float).reshape(-1, 3), np.asarray(truth, dtype=float)
    return np.linalg.norm(truth[:, None] - found[None], axis=-1).min(axis=1)


def _annotated_samples(path, truth):
    """What a support annotation means: the sample nearest each keypoint, of the 2048 seeded surface samples."""
    samples, _ = trimesh.sample.sample_surface(trimesh.load(path, process=False), 2048, seed=0)
    return samples[np.linalg.norm(samples[None] - np.asarray(truth)[:, None], axis=-1).argmin(axis=1)]


def test_few_shot_from_demo_shapes_with_sidecars(files, tmp_path):
    paths = write_dataset(tmp_path / "shapes", ["chair"], 2, seed=0)
    # the query is one of the supports: its annotated keypoints are found again exactly
    rc = main(["keypoints", str(paths[0]), "--names", "leg end,seat corner", "--mode", "few_shot", *files,
               "--support", str(paths[0]), "--support", str(paths[1]), "--json", str(tmp_path / "f.json")])
    assert rc == 0
    out = json.loads((tmp_path / "f.json").read_text())
    assert out["mode"] == "few_shot" and out["info"]["shots"] == 2
    truth = _sidecar_keypoints(paths[0])
    for name in ("leg end", "seat corner"):
        found = [k["position"] for k in out["keypoints"] if k["name"] == name]
        assert len(found) == len(truth[name])
        assert _nearest_distances(found, _annotated_samples(paths[0], truth[name])).max() < 1e-5, name


def test_few_shot_from_a_json_support_file(files, tmp_path):
    paths = write_dataset(tmp_path / "shapes", ["table"], 2, seed=0)
    legs = _sidecar_keypoints(paths[1])["leg end"]
    support = tmp_path / "support.json"
    support.write_text(json.dumps([{"shape": str(paths[1]), "keypoints": {"leg end": legs}}]))
    assert main(["keypoints", str(paths[1]), "--names", "leg end", "--mode", "few_shot", *files,
                 "--support", str(support), "--json", str(tmp_path / "t.json")]) == 0
    found = [k["position"] for k in json.loads((tmp_path / "t.json").read_text())["keypoints"]]
    assert len(found) == len(legs) and _nearest_distances(found, _annotated_samples(paths[1], legs)).max() < 1e-5


def test_lift_with_the_oracle_pointer_offline(tmp_path, capsys):
    path = write_dataset(tmp_path / "shapes", ["chair"], 1, seed=0)[0]
    truth = _sidecar_keypoints(path)
    assert main(["keypoints", str(path), "--names", "leg end,armrest end", "--mode", "lift", "--pointer", "oracle",
                 "--views", "26", "--resolution", "160", "--json", str(tmp_path / "l.json")]) == 0
    out = json.loads((tmp_path / "l.json").read_text())
    assert out["info"]["pointer"] == "OraclePointer" and out["absent"] == ["armrest end"]
    legs = [k["position"] for k in out["keypoints"] if k["name"] == "leg end"]
    assert len(legs) == len(truth["leg end"]) == 4  # every instance (--all-clusters is the default)
    diag = np.linalg.norm(np.ptp(np.asarray(truth["seat corner"] + truth["leg end"]), axis=0))
    assert _nearest_distances(legs, truth["leg end"]).max() < 0.05 * diag
    assert "absent (the pointer answered in no view): armrest end" in capsys.readouterr().out
    assert main(["keypoints", str(path), "--names", "leg end", "--mode", "lift", "--pointer", "oracle", "--views",
                 "26", "--resolution", "160", "--one-per-name", "--json", str(tmp_path / "one.json")]) == 0
    assert len(json.loads((tmp_path / "one.json").read_text())["keypoints"]) == 1


def test_lift_with_the_feature_pointer_runs_offline(files, tmp_path):
    assert main(["keypoints", "example:chair", "--names", "leg end", "--mode", "lift", *files, "--views", "12",
                 "--resolution", "64", "--min-probability", "none", "--json", str(tmp_path / "l.json")]) == 0
    assert json.loads((tmp_path / "l.json").read_text())["info"]["pointer"] == "FeaturePointer"


def test_names_of_a_category_from_the_namer(files, tmp_path):
    assert main(["keypoints", "example:chair", "--category", "chair", *files, "--min-probability", "none",
                 "--json", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["names"] == KeypointNamer().names("chair")


@pytest.mark.parametrize(
    "args, message, code",
    [  # exit status: 1 failed, 2 usage error (patchalign3d.command_line)
        (["nowhere.ply", "--names", "leg end"], "no such shape file", 1),
        (["example:chair", "--names", "armrest tip"], "not in the text bank", 1),
        (["example:chair", "--names", "leg end, "], "blank part names", 2),
        (["example:chair", "--names", "leg end", "--mode", "few_shot"], "needs annotated examples", 2),
        (["example:chair", "--category", "teapot"], "no keypoint names for the category 'teapot'", 1),
        (["example:chair", "--names", "leg end", "--mode", "lift", "--pointer", "oracle"], "has no 'keypoints'", 1),
    ],
)
def test_user_mistakes_are_one_line_errors(files, args, message, code, capsys):
    assert main(["keypoints", *args, *files]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_a_model_that_is_not_here_points_to_the_flag(monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)  # as with no network and nothing cached
    assert main(["keypoints", "example:chair", "--names", "leg end"]) == 1
    err = capsys.readouterr().err
    assert "Pass --checkpoint PATH" in err and "load_model()" not in err
    assert main(["evaluate", "keypointnet", "--root", ".", "--categories", "chair"]) == 1
    assert "--checkpoint PATH" in capsys.readouterr().err


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


def test_evaluate_keypointnet_with_the_zero_shot_detector(known, tiny_model, tmp_path):
    root, bank = known  # tests/keypoints/conftest.py: names made from the keypoints' own patches
    ckpt = export_released(tiny_model, tmp_path / "known.pt")  # carries the fixture's sigmoid bias
    bank.save(tmp_path / "known_bank.pt")
    assert main(["evaluate", "keypointnet", "--root", str(root), "--categories", "chair", "--split", "test",
                 "--checkpoint", str(ckpt), "--text-bank", str(tmp_path / "known_bank.pt"), "--max-instances", "1",
                 "--no-refine", "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")]) == 0
    assert "patchalign3d zero_shot" in (tmp_path / "r.md").read_text()
    assert json.loads((tmp_path / "r.json").read_text())["mean"]["0.00"] == 100.0


def test_evaluate_keypointnet_with_the_lift_detector_and_the_oracle_pointer(kpnet_mesh, tmp_path, capsys):
    root, annotated = kpnet_mesh  # tests/keypoints/conftest.py: a chair mesh, its 4 leg ends and 4 seat corners
    lift = ["evaluate", "keypointnet", "--root", str(root), "--categories", "chair", "--detector", "lift",
            "--pointer", "oracle", "--resolution", "160"]
    assert main([*lift, "--json", str(tmp_path / "every.json")]) == 0
    report = json.loads((tmp_path / "every.json").read_text())
    # every annotated keypoint found, by one lifted keypoint each (the upper bound of lifting: labelled so)
    assert report["mean"]["0.10"] == 100.0 and report["per_shape"]["03001627-m0"]["num_pred"] == len(annotated) == 8
    assert "upper bound (oracle pointer): mean over categories" in capsys.readouterr().out
    # one per name: 3 names (leg end, front seat corner, bottom corner of the back), 3 of the 8 found, no false
    # positive (instances lie 0.3 apart, beyond 0.10): IoU = 3 / 8
    assert main([*lift, "--one-per-name", "--json", str(tmp_path / "one.json")]) == 0
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["per_shape"]["03001627-m0"]["num_pred"] == 3 and one["mean"]["0.10"] == 37.5


def test_evaluate_keypointnet_errors(kpnet, tmp_path, capsys):
    (tmp_path / "p.json").write_text(json.dumps({"03001627-zzz": []}))
    assert main(["evaluate", "keypointnet", "--root", str(kpnet), "--categories", "chair",
                 "--predictions", str(tmp_path / "p.json")]) == 1
    assert "unknown shape" in capsys.readouterr().err
    assert main(["evaluate", "keypointnet", "--root", str(tmp_path / "none"), "--predictions", "x.json"]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--views", "0"), ("--resolution", "0"), ("--max-instances", "-1"),
                                         ("--num-points", "0"), ("--min-cluster-share", "1.5")])
def test_out_of_range_numbers_are_usage_errors(flag, value, capsys):
    """Refused by the parser (exit status 2) before any model loads; --resolution 0 used to exit 0 with every
    name "absent", --views 0 to exit 1."""
    with pytest.raises(SystemExit) as stop:
        main(["keypoints", "example:chair", "--names", "leg end", "--mode", "lift", flag, value])
    assert stop.value.code == 2 and f"argument {flag}" in capsys.readouterr().err
