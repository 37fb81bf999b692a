"""Test hooks at the step boundaries of the store protocol: stop this node dead, or pause it, at one step.

``DATA_ENGINE_TEST_HOOK="<step>[#<n>]=kill"`` SIGKILLs this node's process group (the node and its LitData
workers, as a cluster's OOM killer or preemption would) the ``n``-th time (default 1) a process reaches
``step``; ``"<step>[#<n>]=pause:<folder>"`` writes ``<folder>/<step>.paused`` and waits until
``<folder>/<step>.go`` exists. Several hooks are separated by ``,``. Nothing but the tests sets the variable;
it lets them stop nodes at exact protocol steps instead of at moments picked with timers.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

HOOK_VAR = "DATA_ENGINE_TEST_HOOK"

#: The protocol's step boundaries, in the order a node passes them.
STEPS = (
    "record-written",  # a LitData worker staged one finished record
    "share-done",  # the node has a record or a failure note for every shape of its share
    "publish-started",  # the node holds the publication claim
    "split-built",  # one split of the new version is written (train, then val)
    "verified",  # the new version is complete and verified, not yet visible
    "swapped",  # `current` points at the new version
    "published",  # the old versions are cleaned up and the claim released
)

_passed: Counter[str] = Counter()


def _hooks() -> dict[str, tuple[int, str]]:
    spec = os.environ.get(HOOK_VAR, "")
    hooks = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        where, _, action = part.partition("=")
        step, _, nth = where.partition("#")
        if step not in STEPS:
            raise ValueError(f"{HOOK_VAR}: unknown step {step!r}; steps are {', '.join(STEPS)}")
        hooks[step] = (int(nth or 1), action or "kill")
    return hooks


def reached(step: str) -> None:
    """Mark that this process passed ``step``; act on it if a test hook asks to."""
    hook = _hooks().get(step) if os.environ.get(HOOK_VAR) else None
    if hook is None:
        return
    _passed[step] += 1
    nth, action = hook
    if _passed[step] != nth:
        return
    if action == "kill":
        os.killpg(os.getpgrp(), signal.SIGKILL)
    elif action.startswith("pause:"):
        folder = Path(action.removeprefix("pause:"))
        (folder / f"{step}.paused").write_text(str(os.getpid()))
        while not (folder / f"{step}.go").exists():
            time.sleep(0.02)
    else:
        raise ValueError(f"{HOOK_VAR}: unknown action {action!r} (kill or pause:<folder>)")
