"""The data engine over a whole collection: ``precompute`` (and ``plan``, what a run would do).

``precompute`` finds the meshes (:mod:`.discovery`), gives each a uid, a split and a place in the seeded write
order, and writes this node's share of every split with ``litdata.optimize`` (:func:`.store.write_dataset`, one
LitData worker per GPU). Workers process shapes with :class:`.worker.ShapeWorker`, which stages every finished
record atomically before handing it to LitData: a killed run loses only the shapes in flight, and rerunning
reuses every staged record. Several nodes (LitData's ``DATA_OPTIMIZER_NUM_NODES`` and
``DATA_OPTIMIZER_NODE_RANK``) share the work on one output folder (:mod:`.nodes`); the node that finishes last
publishes the store, once, with every shape exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .config import DataEngineConfig, InputConfig, SplitConfig, load_config, records_fingerprint
from .discovery import ShapeTask, discover, split_tasks, write_order
from .nodes import RunFolder, digest, node_count_and_rank, node_share
from .process import StageTimer, process_mesh
from .store import (
    REPORT,
    SCHEMA_VERSION,
    SPLITS,
    STAGING,
    STORE_INFO,
    Staging,
    assemble_split,
    atomic_write_json,
    write_dataset,
    write_uid_list,
)
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

#: Bins of the seen-fraction histogram in ``store_info.json``.
SEEN_FRACTION_BINS = 10


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
    staging = Staging(Path(config.output) / STAGING)
    splits = {s: write_order(ts, config.write_order_seed) for s, ts in split_tasks(tasks, config.split).items()}
    counts = {
        split: {
            "shapes": len(ts),
            "staged": sum(staging.has_record(t.uid) for t in ts),
            "failed": sum(staging.has_failure(t.uid) for t in ts),
        }
        for split, ts in splits.items()
    }
    for c in counts.values():
        c["pending"] = c["shapes"] - c["staged"] - c["failed"]
    return {"tasks": tasks, "splits": splits, "problems": problems, "counts": counts}


def _run_id(config: DataEngineConfig, splits: dict[str, list[ShapeTask]], num_nodes: int) -> str:
    """The digest every node of a run computes alike (and nodes that saw other inputs do not)."""
    order = {s: [[t.uid, t.path] for t in ts] for s, ts in splits.items()}
    return digest({"records": records_fingerprint(config), "nodes": num_nodes, "splits": order})


def precompute(
    config: DataEngineConfig,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    retry_failed: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build (or finish) the store of ``config``; with several nodes, this node's share of it.

    Args:
        config: settings.
        limit: only the first ``limit`` shapes in uid order.
        dry_run: report the plan, write nothing.
        retry_failed: process this node's shapes that failed in earlier runs again.
        overwrite: delete the output folder first (one node only).
        progress: show a progress bar.

    Returns:
        A summary: ``counts`` per split (before the run), ``written`` uids per split and ``failed`` and
        ``warnings`` notes (the whole store once published, else this node's share), ``published`` (whether the
        store now holds this run's result) and ``status`` (one line for people).

    Raises:
        EngineError: a run-wide failure (nothing already staged or published is lost).
        ValueError: bad settings, e.g. LitData's node variables or ``overwrite`` with several nodes.
    """
    num_nodes, rank = node_count_and_rank()
    out = Path(config.output)
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
    staging.clear_fatal(rank)
    shares = {split: node_share(tasks) for split, tasks in work["splits"].items()}
    if retry_failed:
        staging.clear_failures(t.uid for share in shares.values() for t in share)
    run = RunFolder(out, _run_id(config, work["splits"], num_nodes))
    run.begin(rank)
    workers = _default_workers(config)
    threads = config.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    worker = ShapeWorker(config, staging.root, threads, node=rank)
    tasks = work["tasks"]
    done = sum(staging.has_record(t.uid) or staging.has_failure(t.uid) for t in tasks)
    with _progress(staging, len(tasks), done, progress):
        for split, share in shares.items():
            if not share:
                continue
            write_dataset(
                worker, share, run.node_dir(rank) / split, num_workers=workers, chunk_bytes=config.chunk_bytes,
                start_method=config.start_method,
            )  # fmt: skip
            if staging.fatal(rank) is not None:  # keep what was published before; drop this node's half-run
                shutil.rmtree(run.node_dir(rank), ignore_errors=True)
                raise EngineError(f"the run stopped: {staging.fatal(rank)}")
    run.finish(rank, _node_summary(staging, shares))
    return _publish_if_last(config, run, work, num_nodes, rank)


def _node_summary(staging: Staging, shares: dict[str, list[ShapeTask]]) -> dict[str, Any]:
    """What a node wrote (uids per split, in write order), what failed, and the facts ``store_info`` needs."""
    written = {split: [t.uid for t in share if staging.has_record(t.uid)] for split, share in shares.items()}
    shapes = {}
    for uids in written.values():
        for uid in uids:
            fields = staging.read_fields(uid, ("category", "part_names", "meta"))
            meta = json.loads(fields["meta"])
            shapes[uid] = {"category": fields["category"], "part_names": json.loads(fields["part_names"]),
                           "seen_fraction": meta.get("seen_fraction"), "source": meta.get("source", "")}  # fmt: skip
    failed = staging.failures([t.uid for share in shares.values() for t in share])
    return {"written": written, "failed": failed, "shapes": shapes}


def _publish_if_last(
    config: DataEngineConfig, run: RunFolder, work: dict[str, Any], num_nodes: int, rank: int
) -> dict[str, Any]:
    """Publish the store when every node's share is in and no other node publishes it; else say who will."""
    out = Path(config.output)
    summaries = run.finished(num_nodes)
    mine = summaries[rank]
    base = {"counts": work["counts"], "problems": work["problems"], "node": rank, "num_nodes": num_nodes}
    missing = [r for r in range(num_nodes) if r not in summaries]
    if missing:
        status = (
            f"node {rank} of {num_nodes} wrote its share ({sum(map(len, mine['written'].values()))} shapes, "
            f"{len(mine['failed'])} failed); nodes {missing} have not finished yet: the last to finish publishes"
        )
        return {**base, **_public(_result(config, {rank: mine}, [])), "published": False, "status": status}
    result = _result(config, summaries, work["problems"])
    result_id = digest(_public(result))
    if run.published() == result_id and _store_result(out, result["written"]) == result_id:
        run.remove_datasets({rank: mine})
        status = f"store {out} is up to date (published before)"
        return {**base, **_public(result), "published": True, "status": status}
    owner = run.claim(result_id, rank)
    if owner != rank:
        status = f"node {rank} wrote its share; every node has finished and node {owner} publishes the store"
        return {**base, **_public(result), "published": False, "status": status}
    try:
        for split in SPLITS:
            datasets = [run.node_dir(r) / split for r in range(num_nodes)]
            assemble_split(datasets, out / split, move=num_nodes == 1)
        _write_summary_files(out, config, result, run={"id": run.run_id, "result": result_id, "nodes": num_nodes,
                                                        "published_by": rank})  # fmt: skip
        run.mark_published(result_id, rank)
    except BaseException:
        run.release(result_id)  # another node (or this one, rerun) may publish instead
        raise
    run.remove_datasets(summaries)
    written = {s: len(u) for s, u in result["written"].items()}
    status = f"node {rank} published store {out}: {json.dumps(written)}, {len(result['failed'])} failed"
    return {**base, **_public(result), "published": True, "status": status}


def _public(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("written", "failed", "warnings")}


def _store_result(out: Path, written: dict[str, list[str]]) -> str | None:
    """The result digest of the store published in ``out``, if it is whole (every split with shapes is there)."""
    path = out / STORE_INFO
    if not path.is_file() or any(uids and not (out / s / "index.json").is_file() for s, uids in written.items()):
        return None
    return json.loads(path.read_text()).get("run", {}).get("result")


def _result(config: DataEngineConfig, summaries: dict[int, dict[str, Any]], problems: list[dict]) -> dict[str, Any]:
    """The nodes' summaries joined in rank order (their shares are consecutive slices of the write order)."""
    ranks = sorted(summaries)
    written = {s: [u for r in ranks for u in summaries[r]["written"].get(s, [])] for s in SPLITS}
    uids = [u for s in SPLITS for u in written[s]]
    if len(set(uids)) != len(uids):  # cannot happen with disjoint shares; a store must never hold a shape twice
        twice = sorted(u for u, n in Counter(uids).items() if n > 1)
        raise EngineError(f"shapes written by more than one node: {twice[:5]}")
    shapes = {u: facts for r in ranks for u, facts in summaries[r]["shapes"].items()}
    threshold = config.checks.min_seen_fraction
    warnings = [
        {"uid": u, "path": shapes[u]["source"],
         "reason": f"only {shapes[u]['seen_fraction']:.0%} of the points are seen by a view (checks.min_seen_fraction "
                   f"is {threshold:.0%}): the others carry nearest-neighbour features"}
        for u in uids if shapes[u]["seen_fraction"] is not None and shapes[u]["seen_fraction"] < threshold
    ]  # fmt: skip
    failed = list(problems) + [n for r in ranks for n in summaries[r]["failed"]]
    return {"written": written, "failed": failed, "warnings": warnings, "shapes": shapes}


def _store_stats(written: dict[str, list[str]], shapes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-split categories, part-name counts (shapes carrying each name) and the seen-fraction histogram."""
    uids = [u for us in written.values() for u in us]
    seen = [shapes[u]["seen_fraction"] for u in uids if shapes[u]["seen_fraction"] is not None]
    counts, edges = np.histogram(seen, bins=SEEN_FRACTION_BINS, range=(0.0, 1.0))
    categories = {s: Counter(shapes[u]["category"] for u in us) for s, us in written.items()}
    parts = Counter(name for u in uids for name in shapes[u]["part_names"])
    return {
        "categories": {s: dict(sorted(c.items())) for s, c in categories.items()},
        "part_counts": dict(sorted(parts.items())),
        "seen_fraction": {"bin_edges": [round(float(e), 6) for e in edges], "counts": counts.tolist()},
    }


def _write_summary_files(out: Path, config: DataEngineConfig, result: dict[str, Any], run: dict[str, Any]) -> None:
    """Split lists, report and store info, each written atomically (store info last: it marks the store done)."""
    written, shapes = result["written"], result["shapes"]
    for split in SPLITS:
        write_uid_list(out / f"{split}.txt", written[split])
    done = sum(len(u) for u in written.values())
    atomic_write_json(out / REPORT, {"failed": result["failed"], "warnings": result["warnings"], "done": done})
    first = next((u for s in SPLITS for u in written[s]), None)
    feature_dim = int(Staging(out / STAGING).read_field(first, "features").shape[1]) if first else None
    stats = _store_stats(written, shapes)
    info = {
        "schema_version": SCHEMA_VERSION,
        "feature_dim": feature_dim,
        "teacher": config.teacher.name,
        "pretrained": bool(config.teacher.pretrained),
        "views": config.camera.num_views,
        "resolution": config.camera.resolution,
        "num_points": config.mesh.num_points,
        "img_size": config.teacher.img_size,
        "render_backend": config.render.backend,
        "part_names": sorted(stats["part_counts"]),
        "splits": {s: len(written[s]) for s in SPLITS},
        "write_order": {"shuffled": config.write_order_seed is not None, "seed": config.write_order_seed},
        "stats": stats,
        "run": run,
        "config": records_fingerprint(config),
    }
    atomic_write_json(out / STORE_INFO, info)
