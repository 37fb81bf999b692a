"""Cost of the step checkpoints that make training preemptible: their share of training time.

For each (architecture, stage), runs the same training steps without checkpoints and with
``ResumableCheckpoint(every_n_train_steps=K, save_last=True)`` (the shipped callback: atomic write beside the
target, fsync, rename), alternating the two ``--repeats`` times, and reports:

* step time, and the time of one checkpoint write (measured inside the callback) and its size;
* measured share: extra training time of the run with checkpoints over its total (every ``K`` steps);
* share at the shipped interval: one write per interval, i.e. ``write / (interval + write)``, where the interval
  is the config's: every 3 steps for the demo's model (``patchalign3d/configs/demo/stage*.yaml``), 30 minutes of training
  for the full-size model (``configs/stage*.yaml``).

Usage::

    python benchmarks/bench_checkpoint.py                         # demo and base, both stages, CPU
    python benchmarks/bench_checkpoint.py --archs demo --steps 30 --every 3

The store is bench_train.py's synthetic one (written once).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_train import bench_module, ensure_store, write_banks
from lightning import Callback, Trainer

from patchalign3d.lit import ResumableCheckpoint, StoreDataModule

#: Interval of last.ckpt in the shipped configs.
SHIPPED_INTERVAL = {"demo": ("steps", 3), "base": ("seconds", 30 * 60)}


class TrainingClock(Callback):
    """Wall time from the start of the first measured batch to the end of training."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.seconds, self.steps = warmup, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds, self.steps = time.perf_counter() - self.start, trainer.global_step - self.warmup


class TimedCheckpoint(ResumableCheckpoint):
    """The shipped callback, timing each write."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[float] = []
        self.bytes = 0

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        t0 = time.perf_counter()
        super()._save_checkpoint(trainer, filepath)
        self.writes.append(time.perf_counter() - t0)
        self.bytes = Path(filepath).stat().st_size


def run(stage: int, arch: str, store: Path, bank: Path, batch: int, steps: int, warmup: int, every: int | None,
        root: Path) -> tuple[TrainingClock, TimedCheckpoint | None]:
    module = bench_module(stage, arch, bank)
    dm = StoreDataModule(str(store), batch_size=batch, num_points=2048, num_workers=2, with_features=stage == 1,
                         with_labels=stage == 2)
    clock = TrainingClock(warmup)
    ckpt = TimedCheckpoint(every_n_train_steps=every, save_last=True, save_top_k=0) if every else None
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=warmup + steps, logger=False,
                      enable_checkpointing=ckpt is not None, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, default_root_dir=str(root), callbacks=[clock] + ([ckpt] if ckpt else []))
    trainer.fit(module, datamodule=dm)
    return clock, ckpt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "patchalign3d-bench-store")
    p.add_argument("--archs", nargs="+", default=["demo", "base"], choices=["demo", "base"])
    p.add_argument("--stages", nargs="+", type=int, default=[1, 2], choices=[1, 2])
    p.add_argument("--steps", type=int, default=12, help="measured steps per run")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--every", type=int, default=3, help="checkpoint every K steps in the measured runs")
    p.add_argument("--repeats", type=int, default=2, help="runs with and without checkpoints, alternated")
    p.add_argument("--out", type=Path, default=None, help="checkpoint folder (default: a temporary folder)")
    args = p.parse_args()

    store = ensure_store(args.store, 400, 4096, 768)
    bank = write_banks(args.store)
    batches = {"demo": 8, "base": 8}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, checkpoint every {args.every} steps, "
          f"{args.steps} measured steps, {args.repeats} repeats")
    print(f"{'arch':>5} {'stage':>5} {'step s':>7} {'write s':>8} {'MiB':>6} {'measured share':>15} "
          f"{'share at shipped interval':>26}")
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        for arch in args.archs:
            for stage in args.stages:
                plain, timed, writes, size = [], [], [], 0
                for r in range(args.repeats):  # alternated, so a burst of other load hits both alike
                    clock, _ = run(stage, arch, store, bank, batches[arch], args.steps, args.warmup, None,
                                   Path(tmp) / f"plain{r}")
                    plain.append(clock.seconds / clock.steps)
                    clock, ckpt = run(stage, arch, store, bank, batches[arch], args.steps, args.warmup, args.every,
                                      Path(tmp) / f"ckpt{arch}{stage}{r}")
                    timed.append(clock.seconds / clock.steps)
                    writes += ckpt.writes
                    size = ckpt.bytes
                step, step_ckpt, write = statistics.median(plain), statistics.median(timed), statistics.median(writes)
                measured = (step_ckpt - step) / step_ckpt
                kind, interval = SHIPPED_INTERVAL[arch]
                interval_s = interval * step if kind == "steps" else interval
                shipped = write / (interval_s + write)
                label = f"{interval} steps" if kind == "steps" else f"{interval // 60} min"
                print(f"{arch:>5} {stage:>5} {step:>7.3f} {write:>8.3f} {size / 2**20:>6.1f} {100 * measured:>14.1f}% "
                      f"{100 * shipped:>18.2f}% ({label})", flush=True)


if __name__ == "__main__":
    main()
