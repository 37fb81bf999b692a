"""The LightningCLI: tiny configs end to end, interpolation, resume, DDP, and the shipped configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from patchalign3d.lit import Stage1Module, Stage2Module, StoreDataModule, TrainingSetupError
from patchalign3d.lit.checkpoint_callback import ResumableCheckpoint
from patchalign3d.lit.cli import checkpoint_folders, cli_main
from patchalign3d.model.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "tests" / "conf"


def test_parse_and_interpolate(tiny_store, tmp_path):
    cli = cli_main(["-c", str(CONF / "stage1_tiny.yaml"), "--data.store", str(tiny_store),
                    "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert isinstance(cli.model, Stage1Module) and isinstance(cli.datamodule, StoreDataModule)
    assert cli.model.hparams.lr_head == cli.model.hparams.lr_encoder == 1e-3  # ${model.init_args.lr_encoder}


def test_fit_both_stages_resume_and_validate(tiny_store, tiny_bank, tmp_path):
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    # --ckpt_path last before any checkpoint exists starts a new run (one command starts and resumes a job).
    cli_main(["fit", "-c", str(CONF / "stage1_tiny.yaml"), "--data.store", str(tiny_store),
              "--trainer.default_root_dir", str(s1), "--ckpt_path", "last"])
    ckpt1 = s1 / "checkpoints" / "last.ckpt"
    assert ckpt1.is_file() and (s1 / "config.yaml").is_file()
    assert torch.load(ckpt1, weights_only=True)["patchalign3d"]["stage"] == 1

    args2 = ["-c", str(CONF / "stage2_tiny.yaml"), "--data.store", str(tiny_store), "--trainer.default_root_dir",
             str(s2), "--model.init_from", str(ckpt1), "--model.text_bank", str(tiny_bank)]
    cli = cli_main(["fit", *args2])
    assert isinstance(cli.model, Stage2Module) and cli.trainer.global_step == 3
    ckpt2 = s2 / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt2, weights_only=True)
    assert saved["global_step"] == 3  # written when training ended, not at the last 2-step interval
    model = load_model(ckpt2)
    assert model.proj.out_features == 64 and model.text_meta["backend"] == "random"

    # Resuming continues from the checkpoint's weights and optimizer state; it needs no stage-1 file.
    moved = ckpt1.rename(s1 / "moved.ckpt")
    cli = cli_main(["fit", *args2, "--ckpt_path", "last", "--trainer.max_steps", "5",
                    "--trainer.callbacks+=tests.lit._record.RecordTrainStart"])
    start = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "RecordTrainStart")
    assert start.weights.keys() == saved["state_dict"].keys()
    assert all(torch.equal(start.weights[k], v) for k, v in saved["state_dict"].items())
    assert start.optimizer_steps == {3} and cli.trainer.global_step == 5

    # A new run into the same folder would mix with (and leave stale) the earlier run's last.ckpt: refused.
    with pytest.raises(TrainingSetupError, match="already holds checkpoints of an earlier run"):
        cli_main(["fit", *args2, "--model.init_from", str(moved)])
    with pytest.raises(ValueError, match="pass it as --model.init_from"):
        cli_main(["fit", *args2, "--ckpt_path", str(moved)])

    cli = cli_main(["validate", *args2, "--ckpt_path", str(ckpt2)])
    assert 0.0 <= float(cli.trainer.callback_metrics["val/patch_acc"]) <= 1.0


def test_setup_problems_are_one_sentence(tiny_store, tiny_bank, tmp_path, capsys):
    """A bad init_from, or a checkpoint folder that cannot be written, stops the command before training with
    one line naming the setting (not jsonargparse's "Expected a NoneType ... Namespace(...)", nor a traceback)."""
    from patchalign3d.cli import main

    args = ["fit", "-c", str(CONF / "stage2_tiny.yaml"), "--data.store", str(tiny_store), "--model.text_bank",
            str(tiny_bank), "--trainer.default_root_dir", str(tmp_path / "run")]
    assert main([*args, "--model.init_from", str(tmp_path / "no_stage1.ckpt")]) == 2
    err = capsys.readouterr().err  # (pytest's own argv makes LightningCLI warn first)
    assert "Traceback" not in err and "Namespace(" not in err and "NoneType" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the model could not be built: init_from=") and "no_stage1.ckpt" in last

    # training before the store exists (the README's step 3 without steps 1-2): one line saying what to run
    assert main([*args, "--data.store", str(tmp_path / "no_store")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no_store" in last and "python -m data_engine precompute" in last

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main([*args, "--trainer.default_root_dir", str(blocker)]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith(f"error: checkpoint folder {blocker}/checkpoints is not writable")
    assert "--trainer.default_root_dir" in last


@pytest.mark.parametrize("name", ["configs/stage1.yaml", "configs/stage2.yaml", "patchalign3d/configs/demo/stage1.yaml",
                                  "patchalign3d/configs/demo/stage2.yaml"])
def test_shipped_configs_parse(name, tiny_store, tmp_path):
    cli = cli_main(["-c", str(ROOT / name), "--data.store", str(tiny_store), "--model.init_args."
                    + ("teacher_dim=16" if "stage1" in name else "init_from=null"),
                    "--trainer.default_root_dir", str(tmp_path)], run=False)
    assert cli.model.stage == (1 if "stage1" in name else 2)
    assert cli.datamodule.hparams.num_points == 2048
    # Checkpoints within an epoch (paper: every 30 minutes; demo: every few of its ~4 steps an epoch), last.ckpt
    # among them, and --trainer.default_root_dir moves checkpoints and logs alike.
    last = [cb for cb in cli.trainer.callbacks if isinstance(cb, ResumableCheckpoint) and cb.save_last]
    assert len(last) == 1 and last[0].dirpath is None
    interval = last[0]._train_time_interval
    assert (interval is not None and interval.total_seconds() <= 30 * 60) or 0 < last[0]._every_n_train_steps < 4
    assert checkpoint_folders(cli.config.trainer) == [tmp_path / "checkpoints"]
    assert all(Path(logger.save_dir) == tmp_path for logger in cli.trainer.loggers) and cli.trainer.loggers


def _run_cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "patchalign3d.lit.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_ddp_two_cpu_processes_see_disjoint_shapes(tiny_store, tmp_path):
    """2 ranks (gloo): the run finishes and the ranks train on disjoint shapes covering the epoch."""
    out = tmp_path / "uids"
    proc = _run_cli(["fit", "-c", str(CONF / "stage1_tiny.yaml"), "--data.store", str(tiny_store),
                     "--trainer.default_root_dir", str(tmp_path), "--trainer.devices", "2",
                     "--trainer.strategy", "ddp", "--trainer.max_steps", "-1", "--trainer.max_epochs", "1",
                     "--data.batch_size", "2",
                     "--trainer.callbacks+=tests.lit._record.RecordUids", f"--trainer.callbacks.out_dir={out}"],
                    cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"uids-rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    seen = [{u for b in r["batches"] for u in b} for r in ranks]
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == {f"train-{i:04d}" for i in range(8)}
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_ddp_stage2_builds_the_text_bank_on_rank_zero(tiny_store, tmp_path):
    """Rank 0 encodes the store's names (MiniLM, offline) while rank 1 waits at the barrier, then loads them."""
    proc = _run_cli(["fit", "-c", str(CONF / "stage2_tiny.yaml"), "--data.store", str(tiny_store),
                     "--trainer.default_root_dir", str(tmp_path), "--trainer.devices", "2",
                     "--trainer.strategy", "ddp", "--trainer.max_steps", "2", "--data.batch_size", "2",
                     "--model.text_dim", "384", "--model.text_encoder", "minilm",
                     "--model.text_cache_dir", str(tmp_path / "cache")], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.load(tmp_path / "text_bank.pt", weights_only=True)["emb"].shape == (8, 384)
    info = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["patchalign3d"]
    assert info["text"]["text_dim"] == 384


@pytest.mark.slow
def test_ddp_validation_split_too_small_for_the_ranks_stops_before_training(tiny_store, tmp_path):
    """4 validation shapes on 2 ranks with batches of 4: LitData would drop them all and validation would be
    skipped with a warning while the checkpoints monitor val/loss; the run stops first, saying what to set."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "patchalign3d.cli", "fit", "-c", str(CONF / "stage1_tiny.yaml"), "--data.store",
         str(tiny_store), "--trainer.default_root_dir", str(tmp_path), "--trainer.devices", "2",
         "--trainer.strategy", "ddp", "--data.val_batch_size", "4"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    assert "validation split 'val' gives no batch of 4 shapes on each of the 2 ranks (2 shapes per rank)" in proc.stderr
    assert "--data.val_batch_size 2" in proc.stderr
    assert not list(tmp_path.glob("checkpoints/*.ckpt"))


@pytest.mark.slow
def test_sigkilled_cli_run_resumes_with_ckpt_path_last_to_the_same_weights(tiny_store, tmp_path):
    """A real process end without clean-up (os._exit, as SIGKILL) after step 5 of 8, resumed with the README's
    --ckpt_path last: the final checkpoint equals the uninterrupted run's, bit for bit."""
    args = ["fit", "-c", str(CONF / "stage1_tiny.yaml"), "--data.store", str(tiny_store), "--trainer.max_steps",
            "-1", "--trainer.max_epochs", "2", "--data.batch_size", "2", "--trainer.deterministic", "true"]
    kill = ["--trainer.callbacks+=tests.lit._record.KillAtStep", "--trainer.callbacks.step=5",
            "--trainer.callbacks.hard=true"]
    assert _run_cli([*args, "--trainer.default_root_dir", str(tmp_path / "ref")], ROOT).returncode == 0
    run = ["--trainer.default_root_dir", str(tmp_path / "run")]
    assert _run_cli([*args, *run, *kill], ROOT).returncode == 137
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    proc = _run_cli([*args, *run, "--ckpt_path", "last"], ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref, resumed = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=True) for r in ("ref", "run"))
    assert resumed["global_step"] == ref["global_step"] == 8
    assert all(torch.equal(ref["state_dict"][k], v) for k, v in resumed["state_dict"].items())
    for a, b in zip(ref["optimizer_states"][0]["state"].values(), resumed["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
