"""Nodes of a multi-node run as forked processes of the test, killable at exact protocol steps.

A node is ``python -m data_engine ...`` run in a child forked from the test process (torch, timm and LitData
already imported: a node starts in milliseconds, not seconds) in a session of its own, so that a kill hook
(``data_engine.faults``) takes down the node and its LitData workers and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data_engine.faults import HOOK_VAR
from data_engine.store import STAGING, Staging
from data_engine.verify import verify_store
from patchalign3d.store_check import CURRENT

KILLED = -9


def run_node(args: list[str], log: Path, num_nodes: int | None = None, rank: int | None = None,
             hook: str | None = None) -> int:  # fmt: skip
    """Run ``python -m data_engine ARGS`` as node ``rank`` of ``num_nodes`` in a forked child; returns its exit
    code (``KILLED`` when a hook SIGKILLed it). Its output is appended to ``log``."""
    env = {"DATA_OPTIMIZER_NUM_NODES": num_nodes, "DATA_OPTIMIZER_NODE_RANK": rank, HOOK_VAR: hook}
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the node
        code = 70
        try:
            os.setsid()
            out = open(log, "a", buffering=1)
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            sys.stdout = sys.stderr = out
            for name, value in env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = str(value)
            from data_engine.__main__ import main

            code = main(args)
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else 2
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@contextlib.contextmanager
def paused_node(args: list[str], log: Path, step: str, folder: Path, num_nodes: int | None = None,
                rank: int | None = None, timeout: float = 180) -> Iterator[dict]:  # fmt: skip
    """Start a node that pauses at ``step`` (``"split-built#1"``); inside the block it waits there (``info["pid"]``
    is the node's process, leader of its group). Leaving the block lets it go on and waits for it to end:
    ``info["code"]`` is its exit code. Nothing is left running, whatever happens in the block."""
    name = step.partition("#")[0]
    child = os.fork()
    if child == 0:
        os._exit(run_node(args, log, num_nodes, rank, hook=f"{step}=pause:{folder}"))
    info: dict = {}
    try:
        deadline = time.time() + timeout
        while not (folder / f"{name}.paused").exists():
            assert time.time() < deadline and not os.waitpid(child, os.WNOHANG)[0], log.read_text()
            time.sleep(0.05)
        info["pid"] = int((folder / f"{name}.paused").read_text())
        yield info
    finally:
        (folder / f"{name}.go").touch()
        if "pid" in info:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(info["pid"], signal.SIGCONT)
        deadline = time.time() + timeout
        while not (done := os.waitpid(child, os.WNOHANG))[0] and time.time() < deadline:
            time.sleep(0.05)
        if not done[0]:  # stuck: kill it rather than leave it behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(info.get("pid", child), signal.SIGKILL)
            os.kill(child, signal.SIGKILL)
            done = os.waitpid(child, 0)
        info["code"] = os.waitstatus_to_exitcode(done[1])


@dataclass
class StoreState:
    """What a test checks between steps: the staged files and the visible store."""

    records: dict[str, tuple[int, int]]  # record file name -> (inode, mtime_ns)
    failures: set[str]
    written: set[str]  # uids in the visible store
    failed: set[str]  # uids the visible store lists as failed (planned shapes only)
    published: bool


def store_state(store: Path) -> StoreState:
    staging = Staging(store / STAGING)
    records = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in staging.root.glob("*.npz")}
    failures = {p.name for p in staging.root.glob("*.failed.json")}
    if not (store / CURRENT).is_symlink():
        return StoreState(records, failures, set(), set(), False)
    written = {u for s in ("train", "val") for u in (store / f"{s}.txt").read_text().split()}
    failed = {n["uid"] for n in json.loads((store / "report.json").read_text())["failed"]}
    return StoreState(records, failures, written, failed, True)


def check_invariants(store: Path, before: StoreState, planned: set[str], retried: bool = False) -> StoreState:
    """Assert what must hold after any step, killed or not; returns the new state.

    - a visible store is whole: every planned shape exactly once (written or failed), LitData's counts equal
      the lists and store_info.json, every item read back carries its listed uid (``verify --deep``);
    - no staged record was deleted or rewritten; a failure note goes only when a retry replaces it;
    - the visible store never loses a shape it held.
    """
    after = store_state(store)
    for name, stamp in before.records.items():
        assert after.records.get(name) == stamp, f"staged record {name} was deleted or rewritten"
    if not retried:
        assert before.failures <= after.failures, f"failure notes deleted: {before.failures - after.failures}"
    if after.published:
        checked = verify_store(store, deep=True)
        assert checked["plan"] is not None
        assert after.written | after.failed == planned and not after.written & after.failed
        assert before.written <= after.written, f"the store lost {before.written - after.written}"
    else:
        assert not before.published, "a published store disappeared"
    return after
