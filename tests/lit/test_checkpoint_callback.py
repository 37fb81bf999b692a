"""ResumableCheckpoint: where checkpoints go, when last.ckpt is written, and the checks before the first step."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from patchalign3d.lit import (
    ResumableCheckpoint,
    Stage1Module,
    StoreDataModule,
    TrainingSetupError,
    checkpoint_callback,
)

from .conftest import FEATURE_DIM, TINY, fit_quietly


def data(store, **kw) -> StoreDataModule:
    return StoreDataModule(str(store), batch_size=2, num_points=64, num_workers=0, with_labels=False, **kw)


def test_last_ckpt_in_the_run_folder_at_intervals_epoch_ends_and_the_end(tiny_store, tmp_path):
    saved_steps = []

    class Watch(ResumableCheckpoint):
        def _save_checkpoint(self, trainer, filepath):
            super()._save_checkpoint(trainer, filepath)
            saved_steps.append(torch.load(filepath, weights_only=True)["global_step"])

    logger = CSVLogger(tmp_path, name="logs")  # its versioned folder is not where last.ckpt goes
    fit_quietly(Stage1Module(**TINY, teacher_dim=FEATURE_DIM), data(tiny_store), tmp_path, logger=logger,
                callbacks=[Watch(every_n_train_steps=3, save_last=True, save_top_k=0)], enable_checkpointing=True,
                max_steps=10)
    # 4 steps an epoch: every 3 steps (3, 6, 9), at epoch ends (4, 8), and when max_steps ends the run (10).
    assert saved_steps == [3, 4, 6, 8, 9, 10]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.ckpt"]


def test_room_for_two_checkpoints_is_checked_before_training(tiny_store, tmp_path, monkeypatch):
    module = Stage1Module(**TINY, teacher_dim=FEATURE_DIM)
    trainer = fit_quietly(module, data(tiny_store), tmp_path, max_steps=1)
    trainer.save_checkpoint(tmp_path / "one.ckpt")
    size = (tmp_path / "one.ckpt").stat().st_size
    estimate = checkpoint_callback.checkpoint_size_estimate(module)
    assert size <= estimate <= 3 * size  # an upper bound of the right order

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint_callback.shutil, "disk_usage", lambda _: usage(10**12, 10**12, estimate))
    with pytest.raises(TrainingSetupError, match=r"MiB free, but a checkpoint of this run takes about .* room for two"):
        fit_quietly(Stage1Module(**TINY, teacher_dim=FEATURE_DIM), data(tiny_store), tmp_path / "full",
                    callbacks=[ResumableCheckpoint(save_last=True)], enable_checkpointing=True, max_steps=1)
    assert not list((tmp_path / "full" / "checkpoints").glob("*.ckpt"))
    monkeypatch.setattr(checkpoint_callback.shutil, "disk_usage", lambda _: usage(10**12, 0, 2 * estimate))
    fit_quietly(Stage1Module(**TINY, teacher_dim=FEATURE_DIM), data(tiny_store), tmp_path / "room",
                callbacks=[ResumableCheckpoint(save_last=True)], enable_checkpointing=True, max_steps=1)
    assert (tmp_path / "room" / "checkpoints" / "last.ckpt").is_file()


def test_a_monitored_metric_that_cannot_exist_stops_the_run_first(tiny_store, tmp_path):
    with pytest.raises(TrainingSetupError, match="monitor 'val/loss', but this run validates nothing"):
        fit_quietly(Stage1Module(**TINY, teacher_dim=FEATURE_DIM), data(tiny_store, val_split=None), tmp_path,
                    callbacks=[ResumableCheckpoint(monitor="val/loss")], enable_checkpointing=True,
                    limit_val_batches=None, max_steps=1)


def test_unwritable_folder(tiny_store, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TrainingSetupError, match=r"checkpoint folder .*file/ckpts is not writable"):
        fit_quietly(Stage1Module(**TINY, teacher_dim=FEATURE_DIM), data(tiny_store), tmp_path,
                    callbacks=[ResumableCheckpoint(dirpath=blocker / "ckpts")], enable_checkpointing=True,
                    max_steps=1)
