"""The quick demo, end to end: shapes -> data engine -> stage 1 -> stage 2 -> evaluation, run twice."""

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from patchalign3d.demo import (
    FULL,
    FULL_MINUTES,
    QUICK_MINUTES,
    SMOKE_RUN_NOTE,
    SPLITS,
    _reset_if_changed,
    _stage_config,
    data_config,
    demo_main,
    parse_settings,
)
from patchalign3d.lit.cli import cli_main
from patchalign3d.model.checkpoint import load_model

REPO = Path(__file__).resolve().parents[1]


def _figures(metrics: dict) -> dict:
    """Everything in metrics.json that is a result (the wall times and paths are not)."""
    return {k: v for k, v in metrics.items() if k not in ("seconds", "store", "checkpoints")} | {
        "store_written": metrics["store"]["written"]}


def test_quick_demo_end_to_end_and_deterministic(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert demo_main(["--quick", "--out", str(first)]) == 0
    assert demo_main(["--quick", "--out", str(second)]) == 0

    metrics = json.loads((first / "metrics.json").read_text())
    # the same command on the same machine gives the same figures, to the last digit
    assert _figures(metrics) == _figures(json.loads((second / "metrics.json").read_text()))

    assert set(metrics["splits"]) == set(SPLITS)
    for split, result in metrics["splits"].items():
        model, chance = result["model"], result["chance"]
        assert model["num_scored"] > 0 and 0.0 <= model["miou"] <= 100.0, split
        assert 0.0 < chance["miou"] < 100.0, split
    assert set(metrics["splits"]["test_unseen"]["categories"]) == {"bed", "bicycle"}
    assert set(metrics["splits"]["test_hard"]["categories"]) == {"windmill"}
    assert metrics["heldout"]["ratio"] == pytest.approx(
        metrics["heldout"]["model_miou"] / metrics["heldout"]["chance_miou"])
    assert metrics["store"]["written"]["train"] > 0 and metrics["store"]["failed"] == 0
    assert metrics["teacher"]["pretrained"] is False  # nothing is cached in CI: announced, recorded
    printed = capsys.readouterr().out
    assert "RANDOMLY INITIALISED" in printed
    # a smoke run says so where its figures appear, naming the command whose figures mean something
    assert SMOKE_RUN_NOTE in printed and "x chance (smoke run: meaningless)" in printed
    assert "`patchalign3d demo --out demo_out`" in SMOKE_RUN_NOTE

    # the exported model has exactly the released layout and segments a shape
    blob = torch.load(first / "patchalign3d_demo.pt", weights_only=True)
    assert set(blob) == {"model", "proj", "temp"}
    model = load_model(first / "patchalign3d_demo.pt")
    assert model.text_meta["text_dim"] == 384

    # results.md: every held-out category with its best and worst picture, which exist
    results = (first / "results.md").read_text()
    for category in ("bed", "bicycle", "windmill"):
        pictures = metrics["splits"]["test_hard" if category == "windmill" else "test_unseen"]["categories"][category]["pictures"]
        assert [p.split("/")[-1][:4] for p in pictures] == ["best", "wors"]
        for p in pictures:
            assert (first / p).is_file() and f"]({p})" in results
    assert "| test_hard |" in results and "Mean over the held-out categories" in results
    assert SMOKE_RUN_NOTE in results and "target >=" not in results and "NOT met" not in results
    assert (first / "eval" / "test_unseen.md").read_text().startswith(SMOKE_RUN_NOTE)  # every table of a smoke run
    keypoints = metrics["keypoints"]  # zero-shot, few-shot, lifting and chance keypoint IoU on seen and held-out shapes
    for split in ("test_seen", "test_unseen"):
        assert set(keypoints[split]["iou"]) == {"zero_shot", "few_shot", "lift", "lift_oracle", "chance"}
    # the known answer: lifting with the perfect pointer finds the held-out shapes' bed corners, leg ends and
    # wheel centres (one shape per category, whatever the smoke run's model knows)
    unseen = keypoints["test_unseen"]
    assert unseen["lift_shapes"] == 2 and unseen["iou"]["lift_oracle"]["0.10"] >= 90.0
    assert unseen["absent"]["asked"] > 0 and "Names found absent (zero-shot):" in results
    assert "| test_unseen | 2 | lift (oracle pointer: upper bound) |" in results
    unsupervised = keypoints["unsupervised"]  # both discovery methods, labelled as the smoke run they are
    assert unsupervised["smoke_run"] is True and "Smoke run" in results
    for method in ("embeddings", "diffuser"):
        assert {"das", "das_random", "regression_error", "regression_error_random"} <= set(unsupervised[method]["test_unseen"])
    assert unsupervised["pictures"] and all((first / p).is_file() for p in unsupervised["pictures"])

    # benchmarks/demo_recipe.py's seed table over the two identical runs: no spread, and the quick demo's
    # unscored keypoint figures (too few seen test shapes for a support set) are left out, not made NaN
    table = _demo_recipe().summarise([metrics, json.loads((second / "metrics.json").read_text())])
    seen_miou = metrics["splits"]["test_seen"]["model"]["miou"]
    assert table["test_seen mIoU"] == {"values": [seen_miou, seen_miou], "mean": pytest.approx(seen_miou), "std": 0.0}
    assert "keypoint IoU@0.10 test_unseen few_shot" in table and "keypoint IoU@0.10 test_seen few_shot" not in table
    for name in ("data.yaml", "stage1.yaml", "stage2.yaml"):
        assert (first / "configs" / name).is_file()


def test_help_and_readme_agree_on_the_demo_times(capsys):
    with pytest.raises(SystemExit):
        demo_main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"about {QUICK_MINUTES} minutes instead of about {FULL_MINUTES}" in help_text
    readme = " ".join((REPO / "README.md").read_text().split())
    assert f"The demo takes about {FULL_MINUTES} minutes on a 2-core CPU (`--quick`, a smoke run: about {QUICK_MINUTES})" in readme


def test_settings_parse_and_reject_bad_keys():
    s = parse_settings(["size.stage2_epochs=40", "stage2.model.init_args.trainable=paper", "data.camera.num_views=8",
                        "size.rotate=true"])
    assert s["size"] == {"stage2_epochs": 40, "rotate": True}
    assert s["stage2"] == {"model.init_args.trainable": "paper"} and s["data"] == {"camera.num_views": "8"}
    for bad in ("stage3.x=1", "size.nope=1", "stage2.model", "size=3", "data.camera.nope=1",
                "data.camera.num_views=abc"):
        with pytest.raises(ValueError, match="--set"):
            parse_settings([bad])


def test_stage_config_takes_seed_and_settings(tmp_path):
    (tmp_path / "configs").mkdir()
    text = {"spec": "minilm", "dim": 384}
    path = _stage_config("stage2", tmp_path, tmp_path / "store", 3, text, tmp_path / "s1.ckpt", 7,
                         {"model.init_args.trainable": "paper", "trainer.max_epochs": 5})
    cfg = yaml.safe_load(path.read_text())
    assert cfg["seed_everything"] == 7 and cfg["data"]["init_args"]["seed"] == 7
    assert cfg["trainer"]["deterministic"] is True
    assert cfg["model"]["init_args"]["trainable"] == "paper" and cfg["trainer"]["max_epochs"] == 5
    assert cfg["model"]["init_args"]["init_from"] == str(tmp_path / "s1.ckpt")


def test_bad_arguments_are_messages(capsys):
    with pytest.raises(SystemExit) as err:
        demo_main(["--set", "size.nope=1"])
    assert err.value.code == 2 and "size has no field 'nope'" in capsys.readouterr().err


def test_rerun_remakes_a_store_of_other_records(tmp_path):
    """The manifest holds the data engine's own fingerprint of the records, so a folder whose store was made
    differently (here: other camera angles, as before the rig fix) is remade instead of refused."""
    from data_engine.pipeline import records_fingerprint

    teacher = {"name": "vit_small_patch14_dinov2.lvd142m", "pretrained": False}
    config = data_config(tmp_path, teacher, {})
    assert config.input.paths == [str(tmp_path / "shapes" / "trainval")] and config.output == str(tmp_path / "store")
    manifest = {"seed": 0, "shapes": {}, "store": records_fingerprint(config)}
    _reset_if_changed(tmp_path, manifest)
    for name in ("shapes", "store", "stage1"):
        (tmp_path / name).mkdir()
    _reset_if_changed(tmp_path, manifest)  # same records: everything is kept
    assert all((tmp_path / name).is_dir() for name in ("shapes", "store", "stage1"))
    old = json.loads(json.dumps(manifest))
    old["store"]["camera"]["azimuths"][0] += 18.0
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    _reset_if_changed(tmp_path, manifest)
    assert not any((tmp_path / name).exists() for name in ("shapes", "store", "stage1"))
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest


def _demo_recipe():
    spec = importlib.util.spec_from_file_location("demo_recipe", REPO / "benchmarks" / "demo_recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_arms_build_runs_the_cli_accepts(tmp_path):
    """Every arm of benchmarks/demo_recipe.py (and a stage-2 seed on top) gives the demo settings and stage
    configs that the LightningCLI parses, with each override reaching the module it names."""
    recipe = _demo_recipe()
    text = {"spec": "minilm", "dim": 384}
    for arm in recipe.ARMS:
        sets = recipe.arm_overrides(arm) + recipe.stage2_seed_overrides(3)
        settings = parse_settings(sets)
        replace(FULL, **settings["size"])
        (tmp_path / arm / "configs").mkdir(parents=True)
        for stage in ("stage1", "stage2"):
            path = _stage_config(stage, tmp_path / arm, tmp_path / "store", 1, text,
                                 tmp_path / "s1.ckpt" if stage == "stage2" else None, 0, settings[stage])
            fix = "init_from=null" if stage == "stage2" else "teacher_dim=16"
            cli = cli_main(["-c", str(path), f"--model.init_args.{fix}"], run=False)
            for dotted, value in settings[stage].items():
                section, _, key = dotted.partition(".init_args.")
                target = {"model": cli.model, "data": cli.datamodule}.get(section)
                if target is not None:
                    got = target.hparams[key]
                    assert (dict(got) if isinstance(value, dict) else got) == value, (arm, stage, dotted)
                else:
                    assert cli.config[dotted] == value, (arm, stage, dotted)
    # arms that change only stage 2 share shapes, store and stage 1; the others get their own folder
    folder = lambda arm: recipe.run_folder(tmp_path, recipe.arm_overrides(arm))  # noqa: E731
    assert folder("base") == folder("negatives-shape") == folder("augment-up") == tmp_path / "shared"
    assert folder("points-5000") == folder("points-5000+sampling-mask_aware") != folder("base")
    assert len({folder("patches-128x16"), folder("rotate-shapes"), folder("base")}) == 3
    with pytest.raises(ValueError, match="unknown arm"):
        recipe.arm_overrides("base+nope")
