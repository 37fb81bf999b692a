"""The plan every node of a run shares, and the run file that makes nodes with different plans an error.

A plan is what a store must hold: the uids of each split in write order (with their mesh paths), the shapes
discovery skipped, and the settings publication needs. Every node computes it alike from the same config; it
is saved under ``<store>/.plans/<plan id>.json`` (the id is a digest of its content). ``<store>/.run.json``
names the plan and node count of the run in the folder; it is created exclusively by the first node, so a
node started with other inputs or another node count finds it and stops with an error naming both, unless
that run is finished (its store is published) or ``--new-run`` replaces it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from patchalign3d.store_check import CURRENT, STORE_INFO, published_root

from .leases import create_exclusive
from .nodes import digest, node_shares
from .store import SPLITS, atomic_write_json

RUN_FILE = ".run.json"
PLANS = ".plans"


class RunMismatchError(ValueError):
    """This node's plan or node count differs from the unfinished run already in the output folder."""


def make_plan(splits: dict[str, list[Any]], problems: list[dict], settings: dict[str, Any]) -> dict[str, Any]:
    """The plan of a store: ``splits`` maps a split to its ``ShapeTask``s in write order.

    ``settings`` are what publication needs besides the records (record fingerprint, chunk size, teacher
    name, ...). The plan's ``id`` is a digest of everything else in it.
    """
    body = {
        "splits": {s: [[t.uid, t.path] for t in splits.get(s, [])] for s in SPLITS},
        "problems": problems,
        "settings": settings,
    }
    return {"id": digest(body), **body}


def planned_uids(plan: dict[str, Any]) -> dict[str, list[str]]:
    """Uids per split, in write order."""
    return {s: [uid for uid, _ in plan["splits"][s]] for s in SPLITS}


def save_plan(store: Path, plan: dict[str, Any]) -> None:
    """Write the plan under ``.plans/`` (every node writes the same bytes; the last rename wins)."""
    path = store / PLANS / f"{plan['id']}.json"
    if not path.is_file():
        atomic_write_json(path, plan)


class DamagedRunFileError(ValueError):
    """The run file or a plan file of a store cannot be read (empty, cut short, edited by hand)."""


def _read_json(path: Path, keys: tuple[str, ...], fix: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DamagedRunFileError(f"{path} is damaged ({'empty' if not path.stat().st_size else err}): {fix}") from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise DamagedRunFileError(f"{path} is damaged (no {', '.join(missing)}): {fix}")
    return data


def load_plan(store: Path, plan_id: str) -> dict[str, Any]:
    path = store / PLANS / f"{plan_id}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the plan of the run in {store} is missing")
    return _read_json(path, ("id", "splits", "problems", "settings"),
                      "delete it and run precompute again on any node (every node writes the same plan)")


def read_run(store: Path) -> dict[str, Any] | None:
    """The run file of ``store``, or ``None`` when no run was started there.

    Raises:
        DamagedRunFileError: the file exists but is not a run file (it names the file and the way out).
    """
    path = store / RUN_FILE
    if not path.is_file():
        return None
    return _read_json(path, ("plan", "nodes", "shapes", "settings", "by"),
                      "run precompute again with --new-run on every node (finished records are kept and reused)")


def published_plan_id(store: Path) -> str | None:
    """The plan id of the store now visible in ``store`` (``None`` when nothing is published)."""
    if not (store / CURRENT).is_symlink():
        return None
    info = Path(published_root(store)) / STORE_INFO
    return json.loads(info.read_text()).get("run", {}).get("id") if info.is_file() else None


def _describe(run: dict[str, Any]) -> str:
    return (
        f"plan {run['plan']} ({run['shapes']} shapes, record settings {run['settings']}) for "
        f"{run['nodes']} node{'s' if run['nodes'] > 1 else ''}"
    )


def join_run(store: Path, plan: dict[str, Any], num_nodes: int, rank: int, new_run: bool = False) -> dict[str, Any]:
    """Join the run in ``store``, or start it: this node's plan and node count must be the run's.

    A different run already there is replaced when it is finished (its plan's store is published), when
    both are single-node runs (one process, edited inputs), or with ``new_run``; otherwise this raises.

    Raises:
        RunMismatchError: naming both runs and what to do.
    """
    mine = {
        "plan": plan["id"],
        "nodes": num_nodes,
        "shapes": sum(len(v) for v in plan["splits"].values()),
        "settings": digest(plan["settings"].get("records", {}), 8),
        "started": time.time(),
        "by": f"node {rank} on {socket.gethostname()} (pid {os.getpid()})",
    }
    save_plan(store, plan)
    if create_exclusive(store / RUN_FILE, mine):
        return mine
    try:
        theirs = read_run(store)
    except DamagedRunFileError:
        if not new_run:
            raise
        theirs = None
    if theirs is not None and (theirs["plan"], theirs["nodes"]) == (mine["plan"], mine["nodes"]):
        return theirs
    finished = theirs is None or published_plan_id(store) == theirs["plan"]
    if not (new_run or finished or (theirs["nodes"] == 1 and num_nodes == 1)):
        raise RunMismatchError(
            f"{store} holds an unfinished run of {_describe(theirs)}, started by {theirs['by']}; this node "
            f"(rank {rank}) was started with {_describe(mine)}. Start every node with the same inputs, settings "
            f"and DATA_OPTIMIZER_NUM_NODES, or pass --new-run to replace the unfinished run (its finished "
            "records are kept and reused)"
        )
    atomic_write_json(store / RUN_FILE, mine)
    return mine


def check_still_current(store: Path, plan_id: str) -> None:
    """Raise :class:`RunMismatchError` when the folder's run is no longer ``plan_id`` (replaced meanwhile)."""
    run = read_run(store)
    if run is not None and run["plan"] != plan_id:
        raise RunMismatchError(
            f"the run in {store} was replaced by {_describe(run)} (started by {run['by']}) while this process "
            f"worked on plan {plan_id}: its records are kept in .staging and the new run uses them"
        )


def shape_owners(plan: dict[str, Any], num_nodes: int) -> dict[str, int]:
    """The node whose share holds each planned uid."""
    owners = {}
    for uids in planned_uids(plan).values():
        for rank, share in enumerate(node_shares(uids, num_nodes)):
            owners.update(dict.fromkeys(share, rank))
    return owners
