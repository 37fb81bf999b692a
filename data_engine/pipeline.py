"""The data engine over a whole collection: ``precompute`` (and ``plan``, what a run would do).

``precompute`` finds the meshes (:mod:`.discovery`), gives each a uid and a split, and runs ``litdata.optimize``
once per split. Each LitData worker (one GPU each when there are GPUs; several nodes via LitData's
``DATA_OPTIMIZER_NUM_NODES`` / ``DATA_OPTIMIZER_NODE_RANK``) processes shapes with :class:`.worker.ShapeWorker`,
which stages every finished record atomically before handing it to LitData. A killed run therefore loses only
the shapes in flight and the hidden, half-built chunk folder; rerunning reuses every staged record.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import DataEngineConfig, InputConfig, SplitConfig, load_config, records_fingerprint
from .discovery import ShapeTask, discover, split_tasks
from .process import StageTimer, process_mesh
from .store import (
    REPORT,
    SCHEMA_VERSION,
    SPLITS,
    STAGING,
    STORE_INFO,
    Staging,
    atomic_write_json,
    building_dir,
    optimize_split,
    publish_split,
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


def _node_rank() -> int:
    return int(os.environ.get("DATA_OPTIMIZER_NODE_RANK", "0"))


def _default_workers(config: DataEngineConfig) -> int:
    import torch

    if config.num_workers > 0:
        return config.num_workers
    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def plan(config: DataEngineConfig, limit: int | None = None) -> dict[str, Any]:
    """What a run would do: tasks per split and how many are already staged, failed, or pending."""
    tasks, problems = discover(config.input)
    tasks = tasks[:limit] if limit is not None else tasks
    staging = Staging(Path(config.output) / STAGING)
    splits = split_tasks(tasks, config.split)
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


def precompute(
    config: DataEngineConfig,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    retry_failed: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build (or finish) the store of ``config``.

    Args:
        config: settings.
        limit: only the first ``limit`` shapes in uid order.
        dry_run: report the plan, write nothing.
        retry_failed: process shapes that failed in earlier runs again.
        overwrite: delete the output folder first.
        progress: show a progress bar.

    Returns:
        A summary: ``counts`` per split (before the run), ``written`` uids per split, ``failed`` notes.
    """
    out = Path(config.output)
    if overwrite and not dry_run and out.exists():
        shutil.rmtree(out)
    work = plan(config, limit)
    if dry_run:
        return {"counts": work["counts"], "problems": work["problems"], "written": {}, "failed": []}
    staging = Staging(out / STAGING)
    staging.bind_config(records_fingerprint(config))
    staging.clear_fatal()
    if retry_failed:
        staging.clear_failures()
    workers = _default_workers(config)
    threads = config.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    worker = ShapeWorker(config, staging.root, threads)
    tasks, splits = work["tasks"], work["splits"]
    done = sum(staging.has_record(t.uid) or staging.has_failure(t.uid) for t in tasks)
    publish = _node_rank() == 0
    with _progress(staging, len(tasks), done, progress and publish):
        for split in SPLITS:
            if splits[split]:
                optimize_split(
                    worker, splits[split], out / split, num_workers=workers, chunk_bytes=config.chunk_bytes,
                    start_method=config.start_method,
                )  # fmt: skip
                if staging.fatal() is not None:  # keep what was published before; drop the half-run
                    shutil.rmtree(building_dir(out / split), ignore_errors=True)
                    raise EngineError(f"the run stopped: {staging.fatal()}")
                if publish:
                    publish_split(out / split)
            elif publish:
                shutil.rmtree(out / split, ignore_errors=True)
    written = {s: [t.uid for t in splits[s] if staging.has_record(t.uid)] for s in SPLITS}
    failed = work["problems"] + staging.failures([t.uid for t in tasks])
    if publish:
        _write_summary_files(out, config, staging, written, failed)
    return {"counts": work["counts"], "problems": work["problems"], "written": written, "failed": failed}


def _write_summary_files(
    out: Path, config: DataEngineConfig, staging: Staging, written: dict[str, list[str]], failed: list[dict]
) -> None:
    """Split lists, report and store info, each written atomically."""
    for split in SPLITS:
        write_uid_list(out / f"{split}.txt", written[split])
    atomic_write_json(out / REPORT, {"failed": failed, "done": sum(len(u) for u in written.values())})
    uids = [u for s in SPLITS for u in written[s]]
    feature_dim = int(staging.read_field(uids[0], "features").shape[1]) if uids else None
    vocabulary = sorted({name for u in uids for name in json.loads(staging.read_field(u, "part_names"))})
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
        "part_names": vocabulary,
        "splits": {s: len(written[s]) for s in SPLITS},
        "config": records_fingerprint(config),
    }
    atomic_write_json(out / STORE_INFO, info)
