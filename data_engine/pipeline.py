"""The data engine over a whole collection: ``precompute`` (and ``plan``, what a run would do).

``precompute`` finds the meshes (:mod:`.discovery`), gives each a uid, a split and a place in the seeded write
order (the plan, :mod:`.runs`), and computes this node's share of every split with ``litdata.map`` (one
LitData worker per GPU, :class:`.worker.ShapeWorker`), which stages every finished record atomically: a
killed run loses only the shapes in flight, and rerunning reuses every staged record. Several nodes (LitData's
``DATA_OPTIMIZER_NUM_NODES`` and ``DATA_OPTIMIZER_NODE_RANK``, :mod:`.nodes`) share the work on one output
folder. A node that finds every planned shape finished publishes the store from the records
(:mod:`.publish`); one that does not says which nodes it waits for.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import faults
from .config import DataEngineConfig, InputConfig, SplitConfig, load_config, records_fingerprint
from .discovery import ShapeTask, discover, split_tasks, write_order
from .filesystems import check_store_filesystem
from .leases import LEASE_SECONDS
from .litdata_jobs import run_map
from .nodes import node_count_and_rank, node_shares
from .process import StageTimer, process_mesh
from .publish import publish_store
from .runs import join_run, make_plan, shape_owners
from .store import STAGING, Staging
from .worker import ShapeWorker

# Names other modules have always imported from here (the one-mesh and config API lives in its own modules).
__all__ = [
    "DataEngineConfig",
    "EngineError",
    "InputConfig",
    "ShapeTask",
    "SplitConfig",
    "StageTimer",
    "discover",
    "load_config",
    "plan",
    "precompute",
    "process_mesh",
    "records_fingerprint",
]

class EngineError(RuntimeError):
    """A run-wide failure (the teacher cannot load, the renderer cannot start, ...)."""


@contextlib.contextmanager
def _progress(staging: Staging, total: int, done: int, enabled: bool) -> Iterator[None]:
    """A tqdm bar (shapes/s, ETA) fed by counting staged files, which every worker and node writes."""
    if not enabled or total == 0:
        yield
        return
    from tqdm.auto import tqdm

    baseline = staging.count_done()
    stop = threading.Event()
    with tqdm(total=total, initial=done, unit="shape", desc="shapes", dynamic_ncols=True) as bar:

        def poll() -> None:
            while not stop.wait(1.0):
                bar.n = min(total, done + staging.count_done() - baseline)
                bar.refresh()

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            bar.n = min(total, done + staging.count_done() - baseline)
            bar.refresh()


def _default_workers(config: DataEngineConfig) -> int:
    import torch

    if config.num_workers > 0:
        return config.num_workers
    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def plan(config: DataEngineConfig, limit: int | None = None) -> dict[str, Any]:
    """What a run would do: tasks per split (in write order) and how many are already staged, failed, or pending."""
    tasks, problems = discover(config.input)
    tasks = tasks[:limit] if limit is not None else tasks
    records, noted = Staging(Path(config.output) / STAGING).listing()
    splits = {s: write_order(ts, config.write_order_seed) for s, ts in split_tasks(tasks, config.split).items()}
    counts = {
        split: {
            "shapes": len(ts),
            "staged": sum(t.uid in records for t in ts),
            "failed": sum(t.uid in noted and t.uid not in records for t in ts),
        }
        for split, ts in splits.items()
    }
    for c in counts.values():
        c["pending"] = c["shapes"] - c["staged"] - c["failed"]
    return {"tasks": tasks, "splits": splits, "problems": problems, "counts": counts}


def _plan_settings(config: DataEngineConfig, num_nodes: int) -> dict[str, Any]:
    """What publication needs besides the records (saved in the plan, so ``publish STORE`` needs no config)."""
    return {
        "records": records_fingerprint(config),
        "nodes": num_nodes,
        "teacher": config.teacher.name,
        "pretrained": bool(config.teacher.pretrained),
        "views": config.camera.num_views,
        "resolution": config.camera.resolution,
        "num_points": config.mesh.num_points,
        "img_size": config.teacher.img_size,
        "render_backend": config.render.backend,
        "write_order": {"shuffled": config.write_order_seed is not None, "seed": config.write_order_seed},
        "min_seen_fraction": config.checks.min_seen_fraction,
        "chunk_bytes": config.chunk_bytes,
        "start_method": config.start_method,
        "publish_workers": config.num_workers,
    }


def precompute(
    config: DataEngineConfig,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    retry_failed: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    new_run: bool = False,
) -> dict[str, Any]:
    """Build (or finish) the store of ``config``; with several nodes, this node's share of it.

    Args:
        config: settings.
        limit: only the first ``limit`` shapes in uid order.
        dry_run: report the plan, write nothing.
        retry_failed: process this node's shapes that failed in earlier runs again.
        overwrite: delete the output folder first (one node only).
        progress: show a progress bar.
        new_run: replace an unfinished run with another plan or node count in the output folder.

    Returns:
        A summary: ``counts`` per split (before the run), ``written`` uids per split and ``failed`` and
        ``warnings`` notes (the whole store once published, else this node's share), ``published`` (whether the
        store now holds every shape of this run) and ``status`` (one line for people).

    Raises:
        EngineError: a run-wide failure (nothing already staged or published is lost).
        ValueError: bad settings: LitData's node variables, ``overwrite`` with several nodes, an object-store
            mount, a run of another plan or node count in the folder (``RunMismatchError``).
    """
    num_nodes, rank = node_count_and_rank()
    out = Path(config.output)
    check_store_filesystem(out)
    if overwrite and not dry_run:
        if num_nodes > 1:
            raise ValueError(
                "--overwrite would delete the other nodes' work: with DATA_OPTIMIZER_NUM_NODES > 1, delete "
                f"{out} before starting the nodes"
            )
        if out.exists():
            shutil.rmtree(out)
    work = plan(config, limit)
    if dry_run:
        return {"counts": work["counts"], "problems": work["problems"], "written": {}, "failed": [],
                "warnings": [], "published": False, "status": "dry run: nothing written"}  # fmt: skip
    staging = Staging(out / STAGING)
    staging.bind_config(records_fingerprint(config))
    the_plan = make_plan(work["splits"], work["problems"], _plan_settings(config, num_nodes))
    run = join_run(out, the_plan, num_nodes, rank, new_run=new_run)
    staging.clear_fatal(rank)
    shares = {s: node_shares(ts, num_nodes)[rank] for s, ts in work["splits"].items()}
    share = [t for ts in shares.values() for t in ts]
    retry_note = ""
    if retry_failed and not staging.clear_failures(t.uid for t in share):
        retry_note = _elsewhere_failures(staging, the_plan, run["nodes"], rank)
    records, noted = staging.listing()
    todo = [t for t in share if t.uid not in records and t.uid not in noted]
    if todo:
        workers = _default_workers(config)
        threads = config.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
        worker = ShapeWorker(config, staging.root, threads, node=rank)
        done = len(work["tasks"]) - len(todo)
        with _progress(staging, len(work["tasks"]), done, progress):
            run_map(worker, todo, tempfile.mkdtemp(prefix="data_engine-map-"), num_workers=workers,
                    start_method=config.start_method)  # fmt: skip
        if staging.fatal(rank) is not None:  # every finished record stays staged for the next run
            raise EngineError(f"the run stopped: {staging.fatal(rank)}")
    faults.reached("share-done")
    summary = _finish_node(out, run, rank, staging, shares, work, progress)
    return {**summary, "status": summary["status"] + retry_note} if retry_note else summary


def _elsewhere_failures(staging: Staging, plan: dict[str, Any], num_nodes: int, rank: int) -> str:
    """What to tell a node asked to retry failures it does not have: which nodes own the failed shapes."""
    _, noted = staging.listing()
    if not noted:
        return "\nnote: --retry-failed found no failed shape in the whole run: nothing was retried"
    owners = shape_owners(plan, num_nodes)
    by_node: dict[int, list[str]] = {}
    for uid in sorted(noted):
        if uid in owners:
            by_node.setdefault(owners[uid], []).append(uid)
    listed = "; ".join(f"node {r}: {len(u)} (e.g. {u[0]})" for r, u in sorted(by_node.items()))
    return (f"\nnote: --retry-failed retried nothing on node {rank}: it owns none of the {len(noted)} failed "
            f"shape(s), which belong to {listed}. Rerun those nodes (same NODE_RANK) with --retry-failed")

def _finish_node(out: Path, run: dict[str, Any], rank: int, staging: Staging, shares: dict[str, list[ShapeTask]],
                 work: dict[str, Any], progress: bool) -> dict[str, Any]:  # fmt: skip
    """Publish the store when every shape is finished; else say which nodes it waits for and how to go on."""
    num_nodes = run["nodes"]
    who = f"node {rank}" if num_nodes > 1 else "precompute"
    publication = publish_store(out, by=who, progress=progress, plan_id=run["plan"])
    base = {"counts": work["counts"], "problems": work["problems"], "node": rank, "num_nodes": num_nodes}
    if publication.published:
        return {**base, **publication.result, "published": True, "status": publication.message}
    records, _ = staging.listing()
    mine = {s: [t.uid for t in ts if t.uid in records] for s, ts in shares.items()}
    failed = staging.failures([t.uid for ts in shares.values() for t in ts if t.uid not in records])
    counts = f"{sum(map(len, mine.values()))} shapes, {len(failed)} failed"
    own = f"{who} of {num_nodes} finished its share ({counts}); " if num_nodes > 1 else f"every shape is done ({counts}); "
    if publication.status == "waiting":
        later = (f". The last node to finish publishes it; or, once they have, publish it with: "
                 f"python -m data_engine publish {out}")  # fmt: skip
    else:  # busy: another process holds a live claim
        later = (f". If it stops, its claim expires {LEASE_SECONDS:.0f} s after its last heartbeat; then rerun any "
                 f"node or: python -m data_engine publish {out}")  # fmt: skip
    status = own + publication.message + later
    return {**base, "written": mine, "failed": failed, "warnings": [], "published": False, "status": status}
