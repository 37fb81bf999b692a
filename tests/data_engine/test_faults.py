"""Fault injection: two nodes, each protocol step a place to die, every recovery order, a retry after a fix.

A scenario: the two nodes run one after the other (either first); one of them is SIGKILLed (with its LitData
workers) at one step boundary of the protocol (``data_engine.faults.STEPS``: a record written, its share
done, the publication claimed, each split of the new version built, the version verified, swapped in,
published); then the killed node, the other one, or both in either order are started again; then the corrupt
mesh in node 1's share is fixed and either node runs ``--retry-failed``; then both run once more. After every
single step the invariants of ``node_harness.check_invariants`` are asserted (a visible store is whole and
verified item by item, nothing staged is deleted, the store never loses a shape), and at the end the store
holds every shape that has a record, the fixed one too when its own node retried it.

``all_scenarios()`` enumerates the 160 scenarios (``-m slow``, about 25 minutes on 2 busy cores); the default
run takes a subset that still kills at every step once, restarts in every order, and retries on both nodes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from data_engine import plan
from data_engine.nodes import node_shares

from .conftest import tiny_config, write_labelled_shape
from .node_harness import KILLED, check_invariants, run_node, store_state

KILL_STEPS = ("record-written", "share-done", "publish-started", "split-built#1", "split-built#2", "verified",
              "swapped", "published")  # fmt: skip
NUM_SHAPES = 6


@dataclass(frozen=True)
class Scenario:
    first: int  # the node that runs first
    victim: int  # the node killed during its first run
    step: str  # where it is killed
    recovery: tuple[int, ...]  # nodes started again, in this order
    retry_on: int  # the node that runs --retry-failed once the mesh is fixed

    def __str__(self) -> str:
        again = "+".join(map(str, self.recovery))
        return f"first{self.first}-kill{self.victim}@{self.step}-again{again}-retry{self.retry_on}"


def all_scenarios() -> list[Scenario]:
    """Every reachable kill: only the node that finishes second publishes, so only it can die publishing."""
    out = []
    for first in (0, 1):
        for step in KILL_STEPS:
            victims = (first, 1 - first) if step in ("record-written", "share-done") else (1 - first,)
            for victim in victims:
                other = 1 - victim
                for recovery in ((victim,), (other,), (victim, other), (other, victim)):
                    out += [Scenario(first, victim, step, recovery, retry_on) for retry_on in (0, 1)]
    return out


DEFAULT = [
    Scenario(0, 0, "record-written", (0, 1), 1),
    Scenario(1, 0, "share-done", (1,), 0),
    Scenario(0, 1, "publish-started", (0,), 1),
    Scenario(1, 0, "split-built#1", (1, 0), 0),
    Scenario(0, 1, "split-built#2", (0, 1), 1),
    Scenario(1, 0, "verified", (0,), 1),
    Scenario(0, 1, "swapped", (1, 0), 0),
    Scenario(1, 0, "published", (1,), 1),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Six tiny labelled shapes and the uid of the one that will be corrupt (in node 1's share of train)."""
    root = tmp_path_factory.mktemp("faults")
    for i in range(NUM_SHAPES):
        write_labelled_shape(root / "in", f"s{i}", category=["chair", "lamp"][i % 2])
    config = tiny_config(**{"input.paths": f"[{root / 'in'}]", "split.val_fraction": 0.34})
    splits = plan(config)["splits"]
    assert all(len(splits[s]) >= 2 for s in ("train", "val"))
    broken = node_shares(splits["train"], 2)[1][0]
    return {"inputs": root / "in", "broken": Path(broken.path).relative_to(root / "in"), "uid": broken.uid,
            "uids": {t.uid for ts in splits.values() for t in ts}}  # fmt: skip


def run_scenario(scenario: Scenario, world: dict, tmp: Path) -> None:
    inputs, store = tmp / "in", tmp / "store"
    shutil.copytree(world["inputs"], inputs)
    mesh = inputs / world["broken"]
    good_bytes = mesh.read_bytes()
    mesh.write_bytes(b"not a mesh")
    cfg = tmp / "c.yaml"
    OmegaConf.save(OmegaConf.structured(tiny_config(**{"input.paths": f"[{inputs}]", "output": str(store),
                                                       "split.val_fraction": 0.34})), cfg)  # fmt: skip
    state = store_state(store)
    logs = []

    def step(rank: int, kill: str | None = None, retry: bool = False) -> int:
        nonlocal state
        log = tmp / f"{len(logs):02d}-node{rank}{'-kill@' + kill if kill else ''}{'-retry' if retry else ''}.log"
        logs.append(log)
        args = ["precompute", "-c", str(cfg), "--no-progress"] + (["--retry-failed"] if retry else [])
        code = run_node(args, log, num_nodes=2, rank=rank, hook=f"{kill}=kill" if kill else None)
        text = log.read_text()
        assert code == (KILLED if kill else 0), f"{scenario}: {log.name} exited {code}:\n{text}"
        state = check_invariants(store, state, world["uids"], retried=retry)
        if code == 0 and "published store" not in text and "is up to date" not in text:  # never a silent exit
            assert "waiting for node" in text and f"python -m data_engine publish {store}" in text, text
        return code

    for rank in (scenario.first, 1 - scenario.first):
        step(rank, kill=scenario.step if rank == scenario.victim else None)
    for rank in scenario.recovery:
        step(rank)
    mesh.write_bytes(good_bytes)
    step(scenario.retry_on, retry=True)
    for rank in (0, 1):
        step(rank)

    assert state.published, scenario
    staged = {name.removesuffix(".npz") for name in state.records}
    assert state.written == staged & world["uids"], scenario
    assert world["uids"] - {world["uid"]} <= state.written
    if scenario.retry_on == 1:  # the corrupt shape's own node retried it after the fix
        assert world["uid"] in state.written and not state.failed, scenario


@pytest.mark.parametrize("scenario", DEFAULT, ids=str)
def test_kill_at_each_step_then_recover(scenario, world, tmp_path):
    run_scenario(scenario, world, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", [s for s in all_scenarios() if s not in DEFAULT], ids=str)
def test_every_interleaving(scenario, world, tmp_path):
    run_scenario(scenario, world, tmp_path)
