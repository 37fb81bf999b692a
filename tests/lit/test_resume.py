"""Preemption: a run killed at any step and resumed from its last checkpoint ends as the uninterrupted run.

Both stages, 3 epochs of 4 steps (8 shapes, batch 2), ``last.ckpt`` every 3 steps and at each epoch end (steps
3, 4, 6, 8, 9, 12), deterministic CPU: the final weights, optimizer and scheduler states must be bitwise equal.
Every source of randomness is on: drop-path, random FPS starts, random point draws, augmentation, shuffling.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning import Trainer

from patchalign3d.lit import ResumableCheckpoint, Stage1Module, Stage2Module, StoreDataModule

from ._record import KillAtStep, RecordUids
from .conftest import FEATURE_DIM

TINY_DROP = {"arch": "tiny", "arch_overrides": {"num_groups": 16, "group_size": 16, "drop_path_rate": 0.1}}
STEPS_PER_EPOCH, EPOCHS = 4, 3


def fit(stage: int, root: Path, store: Path, bank: Path, init_from: Path | None = None, kill: int | None = None,
        ckpt_path: str | None = None, workers: int = 0, every: int = 3) -> tuple[Trainer, RecordUids]:
    """One run of ``stage``; returns its trainer (``None`` if killed) and the uids of every batch it trained."""
    torch.manual_seed(1234)  # module initialisation; a resumed run overwrites it from the checkpoint
    common = dict(lr_schedule="cosine", warmup_steps=2, **TINY_DROP)
    if stage == 1:
        module = Stage1Module(teacher_dim=FEATURE_DIM, **common)
        data = StoreDataModule(str(store), batch_size=2, num_points=64, num_workers=workers, with_labels=False,
                               rotate_deg=30.0, jitter_sigma=0.01)
    else:
        module = Stage2Module(text_dim=64, text_bank=str(bank), init_from=str(init_from) if init_from else None,
                              trainable="all", **common)
        data = StoreDataModule(str(store), batch_size=2, num_points=64, num_workers=workers, with_features=False,
                               augment="release")
    record = RecordUids()
    callbacks = [ResumableCheckpoint(every_n_train_steps=every, save_last=True, save_top_k=0), record]
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, deterministic=True, max_epochs=EPOCHS, limit_val_batches=1,
                      default_root_dir=str(root), callbacks=callbacks + ([KillAtStep(kill)] if kill else []))
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    except SystemExit:
        return None, record
    return trainer, record


def final_state(trainer: Trainer) -> dict:
    return {"step": trainer.global_step, "weights": trainer.lightning_module.state_dict(),
            "optimizer": trainer.optimizers[0].state_dict(), "scheduler": trainer.lr_scheduler_configs[0]
            .scheduler.state_dict()}


def assert_bitwise_equal(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_bitwise_equal(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{where}[{i}]")
    elif not callable(a):  # the scheduler's lr_lambdas are closures
        assert a == b, where


@pytest.fixture(scope="module")
def uninterrupted(tiny_store, tiny_bank, stage1_ckpt, tmp_path_factory):
    """The reference run of each stage, made on first use."""
    runs: dict[int, tuple[dict, list]] = {}

    def get(stage: int) -> tuple[dict, list]:
        if stage not in runs:
            trainer, record = fit(stage, tmp_path_factory.mktemp(f"ref{stage}"), tiny_store, tiny_bank, stage1_ckpt)
            assert trainer.global_step == STEPS_PER_EPOCH * EPOCHS
            runs[stage] = final_state(trainer), record.uids
        return runs[stage]

    return get


def check_kill_and_resume(stage, kill, uninterrupted, tiny_store, tiny_bank, stage1_ckpt, tmp_path) -> None:
    reference, reference_uids = uninterrupted(stage)
    killed, before = fit(stage, tmp_path, tiny_store, tiny_bank, stage1_ckpt, kill=kill)
    assert killed is None and len(before.uids) == kill
    # Stage 2 resumes from its own checkpoint alone: no init_from (the stage-1 file may be gone).
    resumed, after = fit(stage, tmp_path, tiny_store, tiny_bank, None, ckpt_path="last")
    saved_at = max(s for s in (3, 4, 6, 8, 9, 12) if s < kill)
    # The resumed run trains exactly the batches the uninterrupted run trained after the checkpoint (no replayed
    # shuffle, no empty epoch), then ends at the same step with the same weights, optimizer and scheduler.
    assert after.uids == reference_uids[saved_at:]
    assert_bitwise_equal(final_state(resumed), reference, "final")


# Kill points across two epoch boundaries (epochs end at steps 4, 8, 12); each resumes from the newest
# checkpoint before it: 5 (first step of epoch 1 -> the epoch-end checkpoint of step 4), 7 (middle of an
# epoch -> mid-epoch step 6), 8 (last step of an epoch -> 6, before the epoch-end save), 9 (first step of epoch
# 2 -> 8), 4, 10 and 12 likewise.
@pytest.mark.parametrize(("stage", "kill"), [(1, 5), (2, 7)])
def test_killed_run_resumes_to_the_same_weights(stage, kill, uninterrupted, tiny_store, tiny_bank, stage1_ckpt,
                                                tmp_path):
    check_kill_and_resume(stage, kill, uninterrupted, tiny_store, tiny_bank, stage1_ckpt, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("kill", [4, 5, 7, 8, 9, 10, 12])
def test_killed_run_resumes_to_the_same_weights_at_every_kind_of_step(stage, kill, uninterrupted, tiny_store,
                                                                       tiny_bank, stage1_ckpt, tmp_path):
    check_kill_and_resume(stage, kill, uninterrupted, tiny_store, tiny_bank, stage1_ckpt, tmp_path)


def test_a_resumed_run_resumes_again_when_a_checkpoint_fell_on_an_epochs_last_batch(uninterrupted, tiny_store,
                                                                                    tiny_bank, tmp_path):
    """Every 4 steps with 4 steps per epoch: each interval lands on an epoch's last batch. Lightning 2.6 resumes
    once from a checkpoint taken there, but then skips the next epoch's start counters, so the checkpoint the
    resumed run writes replays an epoch on a second resume (the chain ended at step 15 instead of 12, other
    weights). ResumableCheckpoint leaves such a step to the epoch-end save of the same weights."""
    reference, reference_uids = uninterrupted(1)
    assert fit(1, tmp_path, tiny_store, tiny_bank, kill=6, every=4)[0] is None  # last.ckpt: step 4
    assert fit(1, tmp_path, tiny_store, tiny_bank, kill=10, every=4, ckpt_path="last")[0] is None  # step 8
    resumed, after = fit(1, tmp_path, tiny_store, tiny_bank, ckpt_path="last", every=4)
    assert resumed.global_step == STEPS_PER_EPOCH * EPOCHS and after.uids == reference_uids[8:]
    assert_bitwise_equal(final_state(resumed), reference, "final")
