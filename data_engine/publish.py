"""Publication: the store as a pure function of the finished per-shape records, made visible in one step.

``publish_store`` (also ``python -m data_engine publish STORE``) may run on any node, any number of times, at
any moment. It reads which planned shapes have a staged record or a failure note (a :class:`Snapshot`); when
every shape has one, it builds a new version from the records alone into a fresh folder, verifies it against
the plan (:mod:`.verify`), checks that the records did not change meanwhile, and swaps it in
(:func:`.versions.swap_current`). Nothing else is written or deleted: records are never touched, and a
version is deleted only once two newer ones have been published.

A claim (a lease, :mod:`.leases`) keeps nodes that finish together from building the same version twice. It
is not needed for correctness: two publishers of the same records build the same items, and a publisher
whose records changed under it discards its build; whoever swaps last leaves a verified store of the
records as they were at its swap, and every publication checks the records again after its swap.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from patchalign3d.store_check import StoreMismatchError, check_store

from . import faults
from .filesystems import check_store_filesystem
from .leases import Lease, acquire
from .litdata_jobs import write_dataset
from .nodes import digest
from .runs import check_still_current, load_plan, planned_uids, read_run, shape_owners
from .store import (
    REPORT,
    SCHEMA_VERSION,
    SPLITS,
    STAGING,
    STORE_INFO,
    Staging,
    atomic_write_json,
    write_uid_list,
)
from .verify import VerificationError, verify_version
from .versions import (
    builder_path,
    collect_garbage,
    current_version,
    discard_version,
    ensure_public_links,
    swap_current,
    versions_dir,
)
from .worker import StagedRecords

#: The claim file at the top of a store.
CLAIM = ".publishing"
#: Bins of the seen-fraction histogram in ``store_info.json``.
SEEN_FRACTION_BINS = 10
#: Builds a publisher tries when the records keep changing under it.
MAX_ATTEMPTS = 3
#: Where a build notes staged records it could not read (one JSON per uid).
UNREADABLE = ".unreadable"


@dataclass
class Snapshot:
    """Which planned shapes are finished, from one listing of ``.staging``.

    Attributes:
        written: per split, the uids with a staged record, in write order.
        failed: the failure notes of planned shapes without a record, in plan order.
        pending: planned uids with neither.
        digest: a digest of the above (equal digests, equal stores).
    """

    written: dict[str, list[str]]
    failed: list[dict[str, str]]
    pending: list[str]
    digest: str


@dataclass
class Publication:
    """What ``publish_store`` did: ``status`` is ``published``, ``up to date``, ``waiting`` (shapes to do,
    ``pending`` per node) or ``busy`` (another live process publishes: ``holder``)."""

    status: str
    message: str
    result: dict[str, Any] = field(default_factory=dict)
    pending: dict[int, int] = field(default_factory=dict)
    holder: dict[str, Any] | None = None

    @property
    def published(self) -> bool:
        return self.status in ("published", "up to date")


def take_snapshot(staging: Staging, plan: dict[str, Any]) -> Snapshot:
    records, noted = staging.listing()
    planned = planned_uids(plan)
    written = {s: [u for u in uids if u in records] for s, uids in planned.items()}
    order = [u for s in SPLITS for u in planned[s]]
    failed = staging.failures([u for u in order if u in noted and u not in records])
    pending = [u for u in order if u not in records and u not in noted]
    state = {"plan": plan["id"], "written": written, "failed": [[n["uid"], n["reason"]] for n in failed]}
    return Snapshot(written, failed, pending, digest(state, 16))


# --------------------------------------------------------------------------------------- store content
def _result(plan: dict[str, Any], snap: Snapshot, staging: Staging) -> dict[str, Any]:
    """Lists, failures, warnings and per-shape facts of the store the snapshot makes."""
    shapes = {}
    for uid in (u for s in SPLITS for u in snap.written[s]):
        fields = staging.read_fields(uid, ("category", "part_names", "meta"))
        meta = json.loads(fields["meta"])
        shapes[uid] = {"category": fields["category"], "part_names": json.loads(fields["part_names"]),
                       "seen_fraction": meta.get("seen_fraction"), "source": meta.get("source", "")}  # fmt: skip
    threshold = plan["settings"]["min_seen_fraction"]
    warnings = [
        {"uid": u, "path": f["source"],
         "reason": f"only {f['seen_fraction']:.0%} of the points are seen by a view (checks.min_seen_fraction "
                   f"is {threshold:.0%}): the others carry nearest-neighbour features"}
        for u, f in shapes.items() if f["seen_fraction"] is not None and f["seen_fraction"] < threshold
    ]  # fmt: skip
    failed = list(plan["problems"]) + snap.failed
    return {"written": snap.written, "failed": failed, "warnings": warnings, "shapes": shapes}


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


def _write_summary_files(root: Path, plan: dict[str, Any], snap: Snapshot, result: dict, staging: Staging) -> None:
    """Split lists, report and store info (the same bytes for the same plan and records)."""
    written, settings = result["written"], plan["settings"]
    for split in SPLITS:
        write_uid_list(root / f"{split}.txt", written[split])
    done = sum(len(u) for u in written.values())
    atomic_write_json(root / REPORT, {"failed": result["failed"], "warnings": result["warnings"], "done": done})
    first = next((u for s in SPLITS for u in written[s]), None)
    feature_dim = int(staging.read_field(first, "features").shape[1]) if first else None
    stats = _store_stats(written, result["shapes"])
    public = {k: result[k] for k in ("written", "failed", "warnings")}
    info = {
        "schema_version": SCHEMA_VERSION,
        "feature_dim": feature_dim,
        **{k: settings[k] for k in ("teacher", "pretrained", "views", "resolution", "num_points", "img_size",
                                    "render_backend", "write_order")},  # fmt: skip
        "part_names": sorted(stats["part_counts"]),
        "splits": {s: len(written[s]) for s in SPLITS},
        "stats": stats,
        "run": {"id": plan["id"], "nodes": settings["nodes"], "result": digest(public), "snapshot": snap.digest},
        "config": settings["records"],
    }
    atomic_write_json(root / STORE_INFO, info)


def _build(store: Path, name: str, plan: dict, snap: Snapshot, staging: Staging, workers: int, progress: bool) -> dict:
    """Write version ``name`` from the staged records; returns its result (lists, failures, warnings)."""
    root = versions_dir(store) / name
    root.mkdir(parents=True)
    settings = plan["settings"]
    for split in SPLITS:
        if snap.written[split]:
            write_dataset(
                StagedRecords(staging.root, root / UNREADABLE), snap.written[split], root / split,
                num_workers=workers, chunk_bytes=settings["chunk_bytes"], start_method=settings["start_method"],
                progress=progress,
            )  # fmt: skip
        faults.reached("split-built")
    notes = sorted((root / UNREADABLE).glob("*.json")) if (root / UNREADABLE).is_dir() else []
    if notes:
        bad = [json.loads(note.read_text()) for note in notes]
        raise VerificationError(
            f"the store built from the records of {store} fails verification, so it was not published (the store "
            "is unchanged): " + "; ".join(f"staged record of {b['uid']} cannot be read ({b['reason']})" for b in bad)
            + ": delete it from .staging and rerun the node whose share holds it"
        )
    result = _result(plan, snap, staging)
    _write_summary_files(root, plan, snap, result, staging)
    return result


# ----------------------------------------------------------------------------------------- publishing
def _published_result(store: Path) -> dict[str, Any]:
    """Lists, failures and warnings of the visible version."""
    root, _ = check_store(store)
    report = json.loads((Path(root) / REPORT).read_text())
    written = {s: (Path(root) / f"{s}.txt").read_text().split() for s in SPLITS}
    return {"written": written, "failed": report["failed"], "warnings": report["warnings"]}


def is_current(store: Path, plan: dict[str, Any], snap: Snapshot) -> bool:
    """Whether the visible version was built from exactly these records for this plan, and is whole."""
    if current_version(store) is None:
        return False
    try:
        root, _ = check_store(store)
    except (FileNotFoundError, StoreMismatchError):
        return False
    run = json.loads((Path(root) / STORE_INFO).read_text()).get("run", {})
    return run.get("id") == plan["id"] and run.get("snapshot") == snap.digest


def _waiting(store: Path, plan: dict[str, Any], run: dict[str, Any], snap: Snapshot) -> Publication:
    owners = shape_owners(plan, run["nodes"])
    pending = dict(sorted(Counter(owners[u] for u in snap.pending).items()))
    nodes = ", ".join(f"{r} ({n} to do)" for r, n in pending.items())
    message = (f"store {store} is not published yet: {len(snap.pending)} shapes have no record or failure note; "
               f"waiting for node{'s' if len(pending) > 1 else ''} {nodes}")  # fmt: skip
    return Publication("waiting", message, pending=pending)


def _summary(status: str, store: Path, by: str, result: dict[str, Any]) -> str:
    counts = json.dumps({s: len(u) for s, u in result["written"].items()})
    head = f"published store {store} (by {by})" if status == "published" else f"store {store} is up to date"
    return f"{head}: {counts}, {len(result['failed'])} failed, {len(result['warnings'])} warnings"


def publish_store(
    store: str | os.PathLike,
    *,
    by: str = "publish",
    workers: int = 0,
    progress: bool = False,
    wait: bool = False,
    plan_id: str | None = None,
) -> Publication:
    """Publish the store of the run in ``store`` from its records, if anything changed (see the module doc).

    Args:
        store: the store folder (where ``precompute`` ran).
        by: who publishes, for messages and the claim (``"node 1"``).
        workers: LitData workers writing the splits (0: the run's setting, else up to 8 CPU cores).
        progress: LitData's progress output while writing.
        wait: when another live process publishes, wait for it (and publish after it if still needed).
        plan_id: publish only if the folder's run has this plan (a node publishing its own run).

    Raises:
        FileNotFoundError: no run was started in ``store``.
        VerificationError: the built version does not match the plan (it is discarded; the store is unchanged).
        RunMismatchError: the run in the folder was replaced meanwhile.
    """
    store = Path(store)
    check_store_filesystem(store)
    run = read_run(store)
    if run is None:
        raise FileNotFoundError(f"{store} holds no run to publish: start one with python -m data_engine precompute")
    if plan_id is not None:
        check_still_current(store, plan_id)
    plan = load_plan(store, run["plan"])
    staging = Staging(store / STAGING)
    workers = workers or plan["settings"]["publish_workers"] or min(8, os.cpu_count() or 1)
    while True:
        snap = take_snapshot(staging, plan)
        if snap.pending:
            return _waiting(store, plan, run, snap)
        if is_current(store, plan, snap):
            ensure_public_links(store)
            result = _published_result(store)
            return Publication("up to date", _summary("up to date", store, by, result), result)
        claim = acquire(store / CLAIM, by=by)
        if isinstance(claim, Lease):
            break
        if not wait:
            message = (f"{claim.get('by', 'another process')} on {claim['host']} (pid {claim['pid']}) is publishing "
                       f"store {store} now (claim renewed {claim['age']:.0f} s ago)")  # fmt: skip
            return Publication("busy", message, holder=claim)
        time.sleep(2.0)
    with claim:
        faults.reached("publish-started")
        return _publish_claimed(store, plan, run, staging, claim, by, workers, progress)


def _publish_claimed(store: Path, plan: dict, run: dict, staging: Staging, claim: Lease, by: str, workers: int,
                     progress: bool) -> Publication:  # fmt: skip
    for attempt in range(MAX_ATTEMPTS):
        snap = take_snapshot(staging, plan)
        if snap.pending:  # a failure note was cleared for a retry since
            return _waiting(store, plan, run, snap)
        if is_current(store, plan, snap):  # published meanwhile by a process whose claim had expired
            result = _published_result(store)
            return Publication("up to date", _summary("up to date", store, by, result), result)
        check_still_current(store, plan["id"])
        name = f"v-{snap.digest}-{claim.token}-{attempt}"
        claim.mark(builder_path(store, name))  # before the folder exists: garbage collection spares it
        swapped = False
        try:
            result = _build(store, name, plan, snap, staging, workers, progress)
            problems = verify_version(versions_dir(store) / name, plan, snap)
            if problems:
                raise VerificationError(f"the store built from the records of {store} fails verification, so it "
                                        f"was not published (the store is unchanged): {'; '.join(problems)}")  # fmt: skip
            faults.reached("verified")
            if take_snapshot(staging, plan).digest != snap.digest:
                continue  # records changed while building: build again from the new ones
            check_still_current(store, plan["id"])
            if not claim.owns(builder_path(store, name)):
                continue  # stopped past its lease, this build was taken over: see what the other one published
            swap_current(store, name)
            swapped = True
        finally:
            claim.unmark(builder_path(store, name))
            if not swapped:
                discard_version(store, name)
        faults.reached("swapped")
        if take_snapshot(staging, plan).digest != snap.digest:
            continue  # a record landed during the swap: publish again so that it is not left out
        collect_garbage(store)
        faults.reached("published")
        public = {k: result[k] for k in ("written", "failed", "warnings")}
        return Publication("published", _summary("published", store, by, public), public)
    raise RuntimeError(
        f"the records of {store} kept changing during {MAX_ATTEMPTS} publications: run python -m data_engine "
        f"publish {store} again once every node has finished"
    )
