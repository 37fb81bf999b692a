"""``ResumableCheckpoint``: Lightning's ``ModelCheckpoint`` for preemptible runs.

What it adds to ``ModelCheckpoint``:

* one folder per run, ``<trainer.default_root_dir>/checkpoints`` unless ``dirpath`` is given (not the logger's
  versioned folder), so ``last.ckpt`` has one place, and ``--trainer.default_root_dir`` moves it;
* ``last.ckpt`` is always this run's newest: no ``last-v1.ckpt`` (``enable_version_counter=False``), and a new
  run (no ``--ckpt_path``) refuses a folder that already holds checkpoints instead of mixing with them;
* with ``save_last``, ``last.ckpt`` is also written at every epoch end and when training ends, whatever the
  step or time interval (``every_n_train_steps`` / ``train_time_interval``) that writes it within epochs; an
  interval that falls on an epoch's last batch is left to that epoch-end save (a checkpoint taken on the last
  batch trips Lightning's restart counters on a second resume);
* atomic writes and a resume that skips damaged files (installs
  :class:`~patchalign3d.lit.checkpoint_files.AtomicCheckpointIO` unless another ``CheckpointIO`` is set);
* checks before the first step: the folder is writable and has room for two checkpoints (the one being
  written beside the previous one), and a monitored metric can exist (the run validates something).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule, Trainer
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.model_helpers import is_overridden

from .checkpoint_files import PART_SUFFIX, AtomicCheckpointIO
from .errors import TrainingSetupError

__all__ = ["ResumableCheckpoint", "checkpoint_size_estimate", "unwritable_folder_problem"]

_MiB = 2**20


def checkpoint_size_estimate(module: torch.nn.Module) -> int:
    """Bytes of a full training checkpoint of ``module``: its state dict, AdamW's two float32 moments per
    trainable parameter, and 1 MiB for the loop, loader and callback states."""
    state = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    moments = 2 * 4 * sum(p.numel() for p in module.parameters() if p.requires_grad)
    return state + moments + _MiB


def unwritable_folder_problem(folder: Path) -> str | None:
    """Why checkpoints cannot be written to ``folder`` (created if missing), or ``None``; removes the
    temporary files of writes a kill interrupted."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f".write-test-{os.getpid()}{PART_SUFFIX}", "wb") as probe:
            probe.write(b"0")
        os.unlink(probe.name)
    except OSError as err:
        return (f"checkpoint folder {folder} is not writable ({err.strerror or err}): choose another with "
                "--trainer.default_root_dir")
    for stale in folder.glob(f".*{PART_SUFFIX}"):
        stale.unlink(missing_ok=True)
    return None


def _validation_batches(trainer: Trainer) -> int | None:
    """Batches one validation pass runs on this rank (``None``: unknown, e.g. loaders passed to ``fit``)."""
    if trainer.limit_val_batches == 0 or not is_overridden("validation_step", trainer.lightning_module):
        return 0
    if trainer.datamodule is None:
        return None
    loaders = trainer.datamodule.val_dataloader()
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    try:
        return sum(len(loader) for loader in loaders)
    except TypeError:  # a loader without a length
        return None


class ResumableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with a fixed folder, one ``last.ckpt``, atomic writes and early checks.

    Arguments are ``ModelCheckpoint``'s (see the module docstring for what differs); ``dirpath=None`` means
    ``<trainer.default_root_dir>/checkpoints`` and ``enable_version_counter`` defaults to False.
    """

    def __init__(self, *args: Any, enable_version_counter: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, enable_version_counter=enable_version_counter, **kwargs)

    # -- folder and checks -------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.realpath(os.path.join(trainer.default_root_dir, "checkpoints"))
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # leave a user's own CheckpointIO alone
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        local = _is_local_file_protocol(self.dirpath)
        problem = unwritable_folder_problem(Path(self.dirpath)) if trainer.is_global_zero and local else None
        self._raise_on_all_ranks(trainer, problem)

    def _occupied_or_full(self, trainer: Trainer, module: LightningModule) -> str | None:
        folder = Path(self.dirpath)
        existing = sorted(p.name for p in folder.glob("*.ckpt"))
        if trainer.ckpt_path is None and existing:  # known here, after the restore, not yet in setup()
            shown = ", ".join(existing[:3]) + (", ..." if len(existing) > 3 else "")
            return (f"{folder} already holds checkpoints of an earlier run ({shown}): resume that run with "
                    f"--ckpt_path last, or start a new one in another folder (--trainer.default_root_dir) or after "
                    f"moving {folder} away")
        need, free = 2 * checkpoint_size_estimate(module), shutil.disk_usage(folder).free
        if free < need:
            return (f"checkpoint folder {folder} has {free / _MiB:.0f} MiB free, but a checkpoint of this run takes "
                    f"about {need / 2 / _MiB:.0f} MiB and an atomic write needs room for two: free some space or "
                    "choose another folder with --trainer.default_root_dir")
        return None

    @staticmethod
    def _raise_on_all_ranks(trainer: Trainer, problem: str | None) -> None:
        problem = trainer.strategy.broadcast(problem)  # every rank stops, none waits at a barrier for ever
        if problem:
            raise TrainingSetupError(problem)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        local = _is_local_file_protocol(self.dirpath)
        problem = self._occupied_or_full(trainer, pl_module) if trainer.is_global_zero and local else None
        self._raise_on_all_ranks(trainer, problem)
        if self.monitor is not None:
            batches = _validation_batches(trainer)
            no_validation = trainer.strategy.reduce_boolean_decision(batches == 0, all=False)
            if no_validation:
                raise TrainingSetupError(
                    f"checkpoints monitor {self.monitor!r}, but this run validates nothing (data.val_split null, "
                    "limit_val_batches 0, or a validation split too small for the ranks), so the metric never "
                    "exists: give the run validation data, or drop monitor from the checkpoint callback"
                )

    # -- when last.ckpt is written -------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any) -> None:
        # An interval that lands on an epoch's last batch is left to the epoch-end save moments later (same
        # weights). Lightning (2.6) resumes once from a checkpoint taken on a last batch, but the resumed run then
        # skips the next epoch's start counters, and a checkpoint it writes replays an epoch on the next resume.
        if self.save_last and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def _save_last_now(self, trainer: Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_now(trainer)  # an epoch end is a natural resume point, whatever the interval

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save_last_now(trainer)  # last.ckpt holds the final weights, not those of the last interval
