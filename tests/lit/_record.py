"""Callbacks the tests plug into runs (importable by DDP and CLI subprocesses): record uids, simulate a kill."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lightning import Callback


class RecordUids(Callback):
    """Keeps ``uids`` (one list per training batch); with ``out_dir`` also writes ``uids-rank{r}.json``."""

    def __init__(self, out_dir: str | None = None) -> None:
        self.out_dir = out_dir
        self.uids: list[list[str]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.uids.append(list(batch["uid"]))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.out_dir:
            path = Path(self.out_dir) / f"uids-rank{trainer.global_rank}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"world_size": trainer.world_size, "batches": self.uids}))


class KillAtStep(Callback):
    """Ends the run right after optimizer step ``step``, before that step's checkpoint is written (Lightning
    runs checkpoint callbacks last): a preemption at that point.

    ``hard=False`` raises ``SystemExit`` (in-process tests; no checkpoint callback saves on it); ``hard=True``
    ends the process with ``os._exit(137)`` as a SIGKILL would: no clean-up, no hooks, nothing flushed.
    """

    def __init__(self, step: int, hard: bool = False) -> None:
        self.step, self.hard = step, hard

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            if self.hard:
                os._exit(137)
            raise SystemExit(f"simulated preemption after step {self.step}")


class RecordTrainStart(Callback):
    """Keeps the weights and the optimizer's step count as training starts (after any checkpoint restore)."""

    def __init__(self) -> None:
        self.weights: dict = {}
        self.optimizer_steps: set[int] = set()

    def on_train_start(self, trainer, pl_module) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        state = trainer.optimizers[0].state_dict()["state"]
        self.optimizer_steps = {int(s["step"]) for s in state.values()}
