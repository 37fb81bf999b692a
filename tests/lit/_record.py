"""A callback that records the shape uids each rank trains on (importable by DDP subprocesses)."""

from __future__ import annotations

import json
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
