"""Training step time of both stages, and the share of each step spent waiting for data.

Writes (once) a synthetic store in the documented schema (random points, 768-d float16 features, a few part
masks per shape), then runs a few Lightning training steps per (stage, architecture) with the real
DataModule (LitData StreamingDataLoader) and measures, per step:

* step time: from the end of one training batch to the end of the next (everything the loop does);
* data wait: from the end of one batch to the start of the next (the loader's ``next()`` plus the loop's own
  bookkeeping), i.e. time in which no model computation ran.

Usage::

    python benchmarks/bench_train.py                       # tiny and base, stage 1 and 2, CPU, 2 workers
    python benchmarks/bench_train.py --archs tiny --steps 20 --workers 0 2 4
    python benchmarks/bench_train.py --stages 2 --sampling random mask_aware   # the release's point sampling
    python benchmarks/bench_train.py --archs demo --precision 32-true bf16-mixed   # the demo's steps, both precisions

``demo`` is the demo's model (``patchalign3d/configs/demo/stage*.yaml``: the tiny preset with 64 patches of 32 points,
batch 8, stage 2 training everything against 384-d text). Several ``--precision`` (and ``--sampling``) values
are measured in turn in the same run, so their ratios are taken on the same machine state.

Target: data wait <= 10 % of the step time with 2 loader workers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from lightning import Callback, Trainer

from patchalign3d.lit import Stage1Module, Stage2Module, StoreDataModule

PART_NAMES = [f"part {i}" for i in range(24)]
#: The demo's model (patchalign3d/configs/demo/stage1.yaml and stage2.yaml).
DEMO = {"arch": "tiny", "arch_overrides": {"num_groups": 64, "group_size": 32}, "text_dim": 384, "trainable": "all"}


def _item(index: int, num_points: int, feature_dim: int) -> dict:
    rng = np.random.default_rng(index)
    points = rng.uniform(-1, 1, size=(num_points, 3)).astype(np.float32)
    feats = rng.normal(size=(num_points, feature_dim)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    k = int(rng.integers(3, 9))
    names = [PART_NAMES[i] for i in rng.choice(len(PART_NAMES), size=k, replace=False)]
    owner = np.argmin(np.abs(points[:, 1:2] - np.linspace(-1, 1, k)[None]), axis=1)  # slabs along y
    return {
        "uid": f"bench-{index:05d}", "category": "bench", "points": points, "features": feats.astype(np.float16),
        "part_names": json.dumps(names), "part_masks": np.stack([owner == j for j in range(k)]).astype(np.uint8),
        "meta": json.dumps({"schema_version": 1, "teacher": "random", "pretrained": False, "views": 0,
                            "resolution": 0, "source": "benchmark"}),
    }


def ensure_store(root: Path, shapes: int, num_points: int, feature_dim: int, *, workers: int = 2,
                 start_method: str | None = None) -> Path:
    """Write the benchmark store unless one with the same settings is already there."""
    from litdata import optimize

    info = {"schema_version": 1, "feature_dim": feature_dim, "teacher": "random", "pretrained": False, "views": 0,
            "resolution": 0, "num_points": num_points, "shapes": shapes, "part_names": PART_NAMES}
    info_path = root / "store_info.json"
    if info_path.is_file() and json.loads(info_path.read_text()) == info:
        return root
    t0 = time.perf_counter()
    for split, n, offset in (("train", shapes, 0), ("val", 8, 10**6)):
        optimize(fn=partial(_item, num_points=num_points, feature_dim=feature_dim),
                 inputs=[offset + i for i in range(n)], output_dir=str(root / split), chunk_bytes="64MB",
                 num_workers=workers, mode="overwrite", verbose=False, start_method=start_method)
    info_path.write_text(json.dumps(info))
    print(f"wrote benchmark store {root} ({shapes} shapes x {num_points} points) in {time.perf_counter() - t0:.0f} s")
    return root


class StepTimer(Callback):
    """Per-step wall time and data wait (see the module docstring)."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.waits: list[float] = []
        self._last_end: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last_end is not None:
            self.waits.append(now - self._last_end)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last_end is not None:
            self.steps.append(now - self._last_end)
        self._last_end = now


def write_banks(store: Path) -> Path:
    """Random text banks of the store's part names, 1280-d and 384-d, beside the store; returns the stem path."""
    bank = store / "bench_bank.pt"
    for dim in (1280, 384):
        emb = torch.nn.functional.normalize(torch.randn(len(PART_NAMES), dim), dim=-1)
        torch.save({"keys": PART_NAMES, "emb": emb, "meta": {"text_dim": dim, "backend": "random"}},
                   bank.with_name(f"bench_bank_{dim}.pt"))
    return bank


def bench_module(stage: int, arch: str, bank: Path | None) -> Stage1Module | Stage2Module:
    """The module of one (stage, architecture); ``demo`` is the demo's model (its configs' settings)."""
    demo = arch == "demo"
    common = dict(arch=DEMO["arch"] if demo else arch, arch_overrides=DEMO["arch_overrides"] if demo else None,
                  lr_encoder=1e-4, lr_head=1e-4)
    if stage == 1:
        return Stage1Module(**common, teacher_dim=None)
    text_dim = DEMO["text_dim"] if demo else 1280
    return Stage2Module(**common, text_dim=text_dim, text_bank=str(bank.with_name(f"bench_bank_{text_dim}.pt")),
                        trainable=DEMO["trainable"] if demo else "paper")


def bench(stage: int, arch: str, store: Path, bank: Path | None, batch_size: int, workers: int, steps: int,
          warmup: int, precision: str, accelerator: str, sampling: str = "random") -> dict:
    module = bench_module(stage, arch, bank)
    dm = StoreDataModule(str(store), batch_size=batch_size, num_points=2048, num_workers=workers,
                         with_features=stage == 1, with_labels=stage == 2, sampling=sampling)
    timer = StepTimer()
    trainer = Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=warmup + steps + 1,
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, callbacks=[timer])
    trainer.fit(module, datamodule=dm)
    step_times, waits = timer.steps[warmup:], timer.waits[warmup:]
    mean_step, mean_wait = statistics.mean(step_times), statistics.mean(waits)
    return {"stage": stage, "arch": arch, "precision": precision, "batch": batch_size, "workers": workers,
            "sampling": sampling,
            "steps": len(step_times),
            "step_s": round(mean_step, 4), "data_wait_s": round(mean_wait, 4),
            "data_wait_pct": round(100 * sum(waits) / sum(step_times), 1),
            "shapes_per_s": round(batch_size / mean_step, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "patchalign3d-bench-store")
    p.add_argument("--shapes", type=int, default=400, help="train shapes in the benchmark store")
    p.add_argument("--stored-points", type=int, default=4096, help="points per stored shape (2048 drawn per step)")
    p.add_argument("--feature-dim", type=int, default=768)
    p.add_argument("--archs", nargs="+", default=["tiny", "base"], choices=["tiny", "base", "demo"])
    p.add_argument("--stages", nargs="+", type=int, default=[1, 2], choices=[1, 2])
    p.add_argument("--batch-tiny", type=int, default=32)
    p.add_argument("--batch-base", type=int, default=8, help="per-step shapes for the full-size model")
    p.add_argument("--batch-demo", type=int, default=8, help="per-step shapes for the demo's model (its config's)")
    p.add_argument("--workers", nargs="+", type=int, default=[2])
    p.add_argument("--sampling", nargs="+", default=["random"], choices=["random", "mask_aware"],
                   help="training-point sampling of the DataModule")
    p.add_argument("--steps", type=int, default=8, help="measured steps per configuration")
    p.add_argument("--warmup", type=int, default=2, help="steps dropped before measuring")
    p.add_argument("--precision", nargs="+", default=["32-true"], help="Lightning precisions, measured in turn")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()

    batches = {"tiny": args.batch_tiny, "base": args.batch_base, "demo": args.batch_demo}
    needed = max(batches[a] for a in args.archs)
    if needed * (args.steps + args.warmup + 2) > args.shapes:
        p.error(f"--shapes {args.shapes} is less than one epoch of the run; use at least "
                f"{needed * (args.steps + args.warmup + 2)} (epoch ends restart the loader workers)")
    store = ensure_store(args.store, args.shapes, args.stored_points, args.feature_dim)
    bank = write_banks(args.store)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, accelerator={args.accelerator}, "
          f"precision={' '.join(args.precision)}, stored points {args.stored_points}, features {args.feature_dim}-d")
    header = (f"{'stage':>5} {'arch':>5} {'precision':>10} {'batch':>5} {'workers':>7} {'sampling':>10} {'step s':>8} "
              f"{'wait s':>8} "
              f"{'wait %':>7} {'shapes/s':>9}")
    print(header)
    # The first fit of a process pays one-off costs (thread pools, first loader start) that no later one does.
    bench(args.stages[0], args.archs[0], store, bank, batches[args.archs[0]], args.workers[0], 2, 1,
          args.precision[0], args.accelerator)
    results = []
    for arch in args.archs:
        for stage in args.stages:
            for workers in args.workers:
                for sampling, precision in itertools.product(args.sampling, args.precision):
                    r = bench(stage, arch, store, bank, batches[arch], workers, args.steps, args.warmup, precision,
                              args.accelerator, sampling)
                    results.append(r)
                    print(f"{r['stage']:>5} {r['arch']:>5} {precision:>10} {r['batch']:>5} {r['workers']:>7} "
                          f"{sampling:>10} "
                          f"{r['step_s']:>8.3f} {r['data_wait_s']:>8.3f} {r['data_wait_pct']:>7.1f} "
                          f"{r['shapes_per_s']:>9.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
