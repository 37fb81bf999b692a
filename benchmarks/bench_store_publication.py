"""Cost of publishing and verifying a store of N tiny records, and its share of a precompute's time.

    python benchmarks/bench_store_publication.py                 # 1,000 records, 3 rounds
    python benchmarks/bench_store_publication.py --records 200 --rounds 1

The records have the tests' tiny sizes (256 points, 384-d float16 features, 3 parts) and are staged directly
(random values: publication never looks inside them). Each round times, interleaved:

- ``snapshot``: one listing of ``.staging`` against the plan (what every node does when it finishes);
- ``publish``: build a new version from the records with LitData, verify it against the plan (counts, ends
  read back), swap it in, collect garbage (``publish_store``, what the last node does);
- ``up to date``: the same call when nothing changed (what every later rerun does);
- ``verify``: ``python -m data_engine verify STORE`` (counts and plan) and ``verify --deep`` (every item read
  back through LitData).

The share of a precompute is ``publish / (compute + publish)``, where ``compute`` is N times the seconds per
shape of a real tiny-config precompute of ``--shapes`` procedural meshes (ray-cast, random ViT-S at 56 px, one
worker), measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from data_engine.discovery import ShapeTask
from data_engine.publish import publish_store, take_snapshot
from data_engine.runs import join_run, load_plan, make_plan, read_run
from data_engine.store import STAGING, Staging, make_record
from data_engine.verify import verify_store
from patchalign3d.store_check import CURRENT

TINY = {"mesh.num_points": 256, "camera.num_views": 4, "camera.resolution": 64, "render.backend": "raycast",
        "teacher.name": "vit_small_patch14_dinov2", "teacher.pretrained": False, "teacher.img_size": 56,
        "num_workers": 1, "threads_per_worker": 1, "chunk_bytes": "4MB", "start_method": "fork"}  # fmt: skip


def stage_records(store: Path, count: int, num_points: int = 256, dim: int = 384) -> None:
    """``count`` tiny records in ``store/.staging`` and a one-node run whose plan lists them."""
    from data_engine.pipeline import _plan_settings, load_config

    rng = np.random.default_rng(0)
    staging = Staging(store / STAGING)
    tasks = []
    for i in range(count):
        uid = f"shape{i:05d}"
        features = rng.normal(size=(num_points, dim))
        features /= np.linalg.norm(features, axis=1, keepdims=True)
        masks = rng.random((3, num_points)) < 0.3
        meta = {"teacher": "bench", "pretrained": False, "views": 4, "resolution": 64, "seen_fraction": 0.9,
                "source": f"bench/{uid}.ply"}  # fmt: skip
        staging.write_record(make_record(uid, ["chair", "lamp"][i % 2], rng.random((num_points, 3)) - 0.5,
                                         features, ["seat", "back", "leg"], masks, meta))  # fmt: skip
        tasks.append(ShapeTask(uid, f"bench/{uid}.ply", ["chair", "lamp"][i % 2]))
    config = load_config(None, [f"{k}={v}" for k, v in {**TINY, "output": str(store)}.items()])
    val = tasks[: count // 10]
    plan = make_plan({"train": tasks[count // 10 :], "val": val}, [], _plan_settings(config, 1))
    join_run(store, plan, 1, 0)


def seconds_per_shape(folder: Path, shapes: int) -> float:
    """Wall seconds per shape of a real tiny-config precompute (records computed, then published)."""
    from data_engine import precompute
    from data_engine.pipeline import load_config
    from data_engine.synthetic import write_dataset

    write_dataset(folder / "shapes", categories=["chair", "table", "mug", "lamp"],
                  shapes_per_category=max(1, shapes // 4))  # fmt: skip
    overrides = {**TINY, "input.paths": f"[{folder / 'shapes'}]", "output": str(folder / "store"),
                 "split.val_fraction": 0.1}  # fmt: skip
    config = load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    start = time.perf_counter()
    summary = precompute(config, progress=False)
    elapsed = time.perf_counter() - start
    done = sum(map(len, summary["written"].values())) + len(summary["failed"])
    return elapsed / done


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shapes", type=int, default=16, help="meshes of the precompute that gives compute s/shape")
    parser.add_argument("--workers", type=int, default=1, help="LitData workers writing the splits")
    parser.add_argument("--json", default=None, help="write the figures here too")
    args = parser.parse_args()
    print(f"{platform.machine()}, {os.cpu_count()} cores; {args.records} tiny records (256 x 384 float16), "
          f"{args.workers} LitData worker(s)")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        stage_records(store, args.records)
        size = sum(p.stat().st_size for p in (store / STAGING).glob("*.npz"))
        print(f"staged {args.records} records, {size / 1e6:.0f} MB")
        plan = load_plan(store, read_run(store)["plan"])
        staging = Staging(store / STAGING)
        times: dict[str, list[float]] = {k: [] for k in ("snapshot", "publish", "up to date", "verify", "verify --deep")}
        compute = []
        for round_ in range(args.rounds):
            (store / CURRENT).unlink(missing_ok=True)  # so that publish builds a new version
            times["snapshot"].append(timed(lambda: take_snapshot(staging, plan)))
            times["publish"].append(timed(lambda: publish_store(store, workers=args.workers)))
            times["up to date"].append(timed(lambda: publish_store(store, workers=args.workers)))
            times["verify"].append(timed(lambda: verify_store(store)))
            times["verify --deep"].append(timed(lambda: verify_store(store, deep=True)))
            compute.append(seconds_per_shape(Path(tmp) / f"precompute{round_}", args.shapes))
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
                  + f"; precompute {compute[-1]:.3f} s/shape", flush=True)  # fmt: skip
    med = {k: statistics.median(v) for k, v in times.items()}
    per_shape = statistics.median(compute)
    precompute_s = per_shape * args.records
    share = med["publish"] / (precompute_s + med["publish"])
    print(f"\nmedian of {args.rounds} rounds, {args.records} records:")
    for key, value in med.items():
        print(f"  {key:<14} {value:7.2f} s  ({1000 * value / args.records:.2f} ms per record)")
    print(f"  compute        {precompute_s:7.1f} s  ({per_shape:.3f} s per shape, tiny config, 1 worker)")
    print(f"  publication share of a precompute: {share:.1%}; verification (plan + counts) "
          f"{med['verify'] / (precompute_s + med['publish']):.2%}, deep {med['verify --deep'] / precompute_s:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "median_s": med, "compute_s_per_shape": per_shape,
                                               "publication_share": share}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
