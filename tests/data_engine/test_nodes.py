"""Several nodes on one shared output folder: LitData's node variables, shares, and real separate processes
(staggered starts, one SIGKILLed midway by a timer); the step-by-step kills are in ``test_faults.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from data_engine import plan
from data_engine.nodes import node_count_and_rank, node_share, node_shares
from data_engine.store import STAGING, Staging, open_split
from data_engine.versions import VERSIONS
from patchalign3d.store_check import CURRENT

from .conftest import tiny_config, write_labelled_shape

REPO = Path(__file__).resolve().parents[2]


def test_node_variables_are_checked(monkeypatch):
    monkeypatch.setenv("DATA_OPTIMIZER_NUM_NODES", "2")
    monkeypatch.setenv("DATA_OPTIMIZER_NODE_RANK", "1")
    assert node_count_and_rank() == (2, 1)
    assert node_share(list(range(7))) == [3, 4, 5, 6]  # LitData's rule: the remainder goes to the last nodes
    monkeypatch.setenv("DATA_OPTIMIZER_NODE_RANK", "2")
    with pytest.raises(ValueError, match="DATA_OPTIMIZER_NODE_RANK=2 with DATA_OPTIMIZER_NUM_NODES=2"):
        node_count_and_rank()
    monkeypatch.setenv("DATA_OPTIMIZER_NUM_NODES", "two")
    with pytest.raises(ValueError, match="must be integers"):
        node_count_and_rank()
    monkeypatch.setenv("DATA_OPTIMIZER_NUM_NODES", "2")
    monkeypatch.delenv("DATA_OPTIMIZER_NODE_RANK")  # every such process would take node 0's share
    with pytest.raises(ValueError, match="DATA_OPTIMIZER_NUM_NODES=2 but DATA_OPTIMIZER_NODE_RANK is not set"):
        node_count_and_rank()
    monkeypatch.delenv("DATA_OPTIMIZER_NUM_NODES")
    assert node_count_and_rank() == (1, 0)
    assert node_shares(list(range(7)), 3) == [[0, 1], [2, 3], [4, 5, 6]]
    assert node_shares([1], 2) == [[], [1]]


def test_bad_node_variables_stop_the_cli_with_a_message(tmp_path, monkeypatch, capsys):
    from data_engine.__main__ import main

    cfg_path = tmp_path / "c.yaml"
    OmegaConf.save(OmegaConf.structured(tiny_config(**{"input.paths": f"[{tmp_path}]"})), cfg_path)
    monkeypatch.setenv("DATA_OPTIMIZER_NUM_NODES", "2")
    monkeypatch.setenv("DATA_OPTIMIZER_NODE_RANK", "3")
    assert main(["precompute", "-c", str(cfg_path), "--dry-run"]) == 1
    assert "DATA_OPTIMIZER_NODE_RANK=3 with DATA_OPTIMIZER_NUM_NODES=2" in capsys.readouterr().err


def test_overwrite_is_refused_with_several_nodes(tmp_path, monkeypatch):
    from data_engine import precompute

    monkeypatch.setenv("DATA_OPTIMIZER_NUM_NODES", "2")
    monkeypatch.setenv("DATA_OPTIMIZER_NODE_RANK", "0")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "keep.txt").write_text("another node's work")
    config = tiny_config(**{"input.paths": f"[{tmp_path}]", "output": str(tmp_path / "store")})
    with pytest.raises(ValueError, match="other nodes' work"):
        precompute(config, overwrite=True, progress=False)
    assert (tmp_path / "store" / "keep.txt").is_file()


def _start_node(cfg_path: Path, rank: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DATA_OPTIMIZER_NUM_NODES": "2",
           "DATA_OPTIMIZER_NODE_RANK": str(rank)}  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "data_engine", "precompute", "-c", str(cfg_path), "--no-progress"],
            cwd=REPO, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _wait(proc: subprocess.Popen, log: Path, timeout: float = 180) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"node did not finish in {timeout} s:\n{log.read_text()}") from None
    text = log.read_text()
    assert proc.returncode == 0, text
    return text


@pytest.mark.slow  # ~45 s of interpreter starts; test_faults.py kills nodes at every step in the default run
def test_two_nodes_staggered_one_killed_and_restarted(tmp_path):
    categories = ["chair", "lamp", "mug", "car"]
    uids = []
    for i in range(12):
        uid = f"s{i:02d}"
        write_labelled_shape(tmp_path / "in", uid, category=categories[i % 4])
        uids.append(uid)
    store = tmp_path / "store"
    config = tiny_config(**{"input.paths": f"[{tmp_path / 'in'}]", "output": str(store), "split.val_fraction": 0.25})
    cfg_path = tmp_path / "c.yaml"
    OmegaConf.save(OmegaConf.structured(config), cfg_path)
    # Node 0's shapes, to know when it is midway (the first half of each split in write order).
    splits = plan(config)["splits"]
    share0 = {t.uid for ts in splits.values() for t in ts[: len(ts) // 2]}
    staging = Staging(store / STAGING)
    logs = {name: tmp_path / f"{name}.log" for name in ("node1", "node0", "node0-again", "node1-again")}

    node1 = _start_node(cfg_path, 1, logs["node1"])
    time.sleep(3.0)  # staggered start
    node0 = _start_node(cfg_path, 0, logs["node0"])
    deadline = time.time() + 120
    while time.time() < deadline and node0.poll() is None:
        if sum(staging.has_record(u) for u in share0) >= 2:
            break
        time.sleep(0.05)
    os.killpg(node0.pid, signal.SIGKILL)  # the node and its LitData worker, mid-share
    node0.wait()
    staged_before = {p.name: p.stat().st_mtime_ns for p in staging.root.glob("*.npz")}
    assert 2 <= sum(staging.has_record(u) for u in share0) < len(share0), "node 0 was not stopped midway"

    node0_again = _start_node(cfg_path, 0, logs["node0-again"])
    outputs = {"node1": _wait(node1, logs["node1"]), "node0-again": _wait(node0_again, logs["node0-again"])}
    publishers = [name for name, text in outputs.items() if "published store" in text]
    assert len(publishers) == 1, outputs  # the node that finished last, and only it

    # The published store: every shape exactly once, each split in its listed order, as staged.
    listed = {s: (store / f"{s}.txt").read_text().split() for s in ("train", "val")}
    assert sorted(listed["train"] + listed["val"]) == uids
    for split, order in listed.items():
        items = [open_split(store, split)[i] for i in range(len(order))]
        assert len(open_split(store, split)) == len(order)
        assert [it["uid"] for it in items] == order
        for item in items:
            assert item["meta"] == staging.read_record(item["uid"])["meta"]
    info = json.loads((store / "store_info.json").read_text())
    assert info["run"]["nodes"] == 2 and info["splits"] == {s: len(o) for s, o in listed.items()}
    assert json.loads((store / "report.json").read_text())["done"] == len(uids)
    for name, mtime in staged_before.items():  # shapes finished before the kill were not recomputed
        assert (staging.root / name).stat().st_mtime_ns == mtime
    assert [p.name for p in (store / VERSIONS).iterdir()] == [(store / CURRENT).resolve().name]

    # A node restarted after the publication changes nothing.
    stamp = (store / "store_info.json").stat().st_mtime_ns
    again = _wait(_start_node(cfg_path, 1, logs["node1-again"]), logs["node1-again"])
    assert "up to date" in again and "published store" not in again
    assert (store / "store_info.json").stat().st_mtime_ns == stamp
