"""Publication of a multi-node store: the six ways the marker-based design lost shapes (issue 18), each replayed.

Each of the first six tests replays one failure of the design before this one (nodes coordinating through
"finished" markers, deleting their datasets after publication, a claim without a lease). On that code they
ended with a store missing half its shapes, exit status 0 and no store, or a refused command line; here the
store holds every shape exactly once, verified, or the command stops with an error naming the problem.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from data_engine import plan, precompute
from data_engine.__main__ import main
from data_engine.leases import LEASE_SECONDS
from data_engine.nodes import node_shares
from data_engine.publish import CLAIM
from data_engine.runs import RunMismatchError
from data_engine.store import STAGING, open_split
from data_engine.versions import VERSIONS
from patchalign3d.store_check import CURRENT

from .conftest import tiny_config, write_labelled_shape
from .node_harness import paused_node, run_node

CATEGORIES = ["chair", "lamp", "mug", "car"]


@pytest.fixture(scope="module")
def twelve(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("twelve")
    for i in range(12):
        write_labelled_shape(root, f"s{i:02d}", category=CATEGORIES[i % 4])
    return root


def _setup(tmp_path: Path, shapes: Path) -> tuple[Path, object]:
    shutil.copytree(shapes, tmp_path / "in")
    store = tmp_path / "store"
    return store, tiny_config(**{"input.paths": f"[{tmp_path / 'in'}]", "output": str(store),
                                 "split.val_fraction": 0.25})  # fmt: skip


def _node(monkeypatch, num_nodes: int, rank: int | None, config, **kwargs) -> dict:
    monkeypatch.setenv("DATA_OPTIMIZER_NUM_NODES", str(num_nodes))
    if rank is None:
        monkeypatch.delenv("DATA_OPTIMIZER_NODE_RANK", raising=False)
    else:
        monkeypatch.setenv("DATA_OPTIMIZER_NODE_RANK", str(rank))
    return precompute(config, progress=False, **kwargs)


def _items(store: Path) -> dict[str, list[str]]:
    """Uids per split as LitData reads them back."""
    out = {}
    for split in ("train", "val"):
        dataset = open_split(store, split) if (store / split / "index.json").is_file() else []
        out[split] = [dataset[i]["uid"] for i in range(len(dataset))]
    return out


def _save_config(config, path: Path) -> Path:
    OmegaConf.save(OmegaConf.structured(config), path)
    return path


# ------------------------------------------------------------------------------- the six failures, replayed
def test_1_retry_failed_on_one_node_after_publication_keeps_every_shape(tmp_path, twelve, monkeypatch, capsys):
    store, config = _setup(tmp_path, twelve)
    victim = node_shares(plan(config)["splits"]["train"], 2)[1][0]  # in node 1's share
    good = Path(victim.path).read_bytes()
    Path(victim.path).write_bytes(b"corrupt")
    assert not _node(monkeypatch, 2, 0, config)["published"]
    first = _node(monkeypatch, 2, 1, config)
    assert first["published"] and [n["uid"] for n in first["failed"]] == [victim.uid]
    assert sum(map(len, _items(store).values())) == 11

    Path(victim.path).write_bytes(good)  # the mesh is fixed; node 1 alone retries (the old code kept 6 of 12)
    again = _node(monkeypatch, 2, 1, config, retry_failed=True)
    assert again["published"] and "published store" in again["status"]
    items = _items(store)
    assert sorted(items["train"] + items["val"]) == [f"s{i:02d}" for i in range(12)]
    assert items == {s: (store / f"{s}.txt").read_text().split() for s in ("train", "val")}
    info = json.loads((store / "store_info.json").read_text())
    assert info["splits"] == {s: len(u) for s, u in items.items()}
    assert json.loads((store / "report.json").read_text()) == {"failed": [], "warnings": [], "done": 12}
    for rank in (0, 1):
        assert "is up to date" in _node(monkeypatch, 2, rank, config)["status"]

    from patchalign3d.lit import StoreDataModule

    module = StoreDataModule(str(store), batch_size=2, num_points=64, num_workers=0)
    module.setup("fit")
    assert len(module._dataset("train", train=False)) == len(items["train"])
    capsys.readouterr()
    assert main(["inspect", str(store), "--no-png", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"]["train"] == sum(summary["stats"]["categories"]["train"].values()) == len(items["train"])


def test_2_a_node_restarted_while_another_publishes_loses_nothing(tmp_path, twelve, monkeypatch):
    store, config = _setup(tmp_path, twelve)
    cfg = _save_config(config, tmp_path / "c.yaml")
    _node(monkeypatch, 2, 1, config)
    staged = {p.name: p.stat().st_mtime_ns for p in (store / STAGING).glob("*.npz")}
    pause = tmp_path / "pause"
    pause.mkdir()
    # Node 0 publishes, and stops midway (the first split written, the second not yet); node 1 restarts now.
    with paused_node(["precompute", "-c", str(cfg), "--no-progress"], tmp_path / "node0.log", "split-built#1",
                     pause, 2, 0) as node0:  # fmt: skip
        restarted = _node(monkeypatch, 2, 1, config)  # it deletes nothing, publishes nothing
    assert not restarted["published"] and "node 0 on" in restarted["status"] and "is publishing" in restarted["status"]
    assert all((store / STAGING / name).stat().st_mtime_ns == stamp for name, stamp in staged.items())
    assert node0["code"] == 0, (tmp_path / "node0.log").read_text()
    assert "published store" in (log := (tmp_path / "node0.log").read_text()) and "(by node 0)" in log
    items = _items(store)
    assert sorted(items["train"] + items["val"]) == [f"s{i:02d}" for i in range(12)]
    # Two processes that both forgot their rank (both would have taken node 0's share) are stopped.
    monkeypatch.delenv("DATA_OPTIMIZER_NODE_RANK")
    with pytest.raises(ValueError, match="DATA_OPTIMIZER_NODE_RANK is not set"):
        _node(monkeypatch, 2, None, config)


def test_3_a_dead_expired_or_unreadable_claim_is_taken_over(tmp_path, twelve, monkeypatch):
    store, config = _setup(tmp_path, twelve)
    cfg = _save_config(config, tmp_path / "c.yaml")
    _node(monkeypatch, 2, 0, config)
    code = run_node(["precompute", "-c", str(cfg), "--no-progress"], tmp_path / "node1.log", 2, 1,
                    hook="publish-started=kill")  # SIGKILLed right after claiming  # fmt: skip
    assert code == -9 and (store / CLAIM).is_file() and not (store / CURRENT).exists()
    assert _node(monkeypatch, 2, 0, config)["published"]  # its process is gone: the claim is taken over

    claim = {"host": "another-node", "pid": 1, "token": "t", "by": "node 1"}
    (store / CURRENT).unlink()  # (so that the store needs publishing again)
    (store / CLAIM).write_text(json.dumps(claim))  # alive on another host: renewed just now
    busy = _node(monkeypatch, 2, 0, config)
    assert not busy["published"] and "node 1 on another-node (pid 1) is publishing" in busy["status"]
    assert "python -m data_engine publish" in busy["status"] and f"{LEASE_SECONDS:.0f} s" in busy["status"]
    old = time.time() - LEASE_SECONDS - 60  # not renewed for longer than the lease (by the filesystem's clock)
    os.utime(store / CLAIM, (old, old))
    assert _node(monkeypatch, 2, 0, config)["published"]
    (store / CURRENT).unlink()
    (store / CLAIM).write_text("")  # a claim left empty by a winner killed between create and write
    assert _node(monkeypatch, 2, 1, config)["published"]
    assert sum(map(len, _items(store).values())) == 12


def test_4_nodes_told_different_node_counts_stop_with_an_error(tmp_path, twelve, monkeypatch, capsys):
    store, config = _setup(tmp_path, twelve)
    cfg = _save_config(config, tmp_path / "c.yaml")
    _node(monkeypatch, 2, 0, config)
    monkeypatch.setenv("DATA_OPTIMIZER_NUM_NODES", "3")
    monkeypatch.setenv("DATA_OPTIMIZER_NODE_RANK", "1")
    assert main(["precompute", "-c", str(cfg), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "unfinished run of plan" in err and "for 2 nodes" in err and "for 3 nodes" in err and "--new-run" in err
    assert len(list((store / STAGING).glob("*.npz"))) == 6  # node 0's records are kept
    config.split.val_fraction = 0.5  # another plan, same node count
    with pytest.raises(RunMismatchError, match="12 shapes"):
        _node(monkeypatch, 2, 1, config)
    config.split.val_fraction = 0.25
    assert _node(monkeypatch, 2, 1, config)["published"]
    # A finished run is replaced by a new one without a word (the records are reused: node 0 of 3 finds every
    # shape done and publishes); an unfinished one is replaced only with --new-run.
    assert _node(monkeypatch, 3, 0, config)["published"]
    write_labelled_shape(tmp_path / "in", "s12", category="mug")
    owner = next(r for r in (0, 1) if any(t.uid == "s12" for s in plan(config)["splits"].values()
                                           for t in node_shares(s, 2)[r]))  # fmt: skip
    waiting = _node(monkeypatch, 2, 1 - owner, config)
    assert not waiting["published"] and f"waiting for node {owner} (1 to do)" in waiting["status"]
    with pytest.raises(RunMismatchError, match="for 2 nodes"):
        _node(monkeypatch, 1, 0, config)
    assert _node(monkeypatch, 1, 0, config, new_run=True)["published"]
    assert sum(map(len, _items(store).values())) == 13


def test_5_an_up_to_date_rerun_leaves_no_copy_of_any_share(tmp_path, twelve, monkeypatch):
    store, config = _setup(tmp_path, twelve)
    for rank in (0, 1, 0, 1):
        _node(monkeypatch, 2, rank, config)
    current = (store / CURRENT).resolve()
    chunks = [p for p in store.rglob("*.bin")]
    assert chunks and all(current in p.parents for p in chunks), chunks
    assert sorted(p.name for p in store.iterdir()) == sorted(
        [".plans", ".run.json", ".staging", VERSIONS, CURRENT, "report.json", "store_info.json", "train", "train.txt",
         "val", "val.txt"]
    )  # fmt: skip


def test_6_overrides_and_flags_in_any_order(tmp_path, twelve, capsys):
    shutil.copytree(twelve, tmp_path / "in")
    cfg = _save_config(tiny_config(**{"output": str(tmp_path / "elsewhere")}), tmp_path / "c.yaml")
    store = tmp_path / "store"
    args = ["precompute", "-c", str(cfg), f"output={store}", "--no-progress", f"input.paths=[{tmp_path / 'in'}]",
            "--limit", "3", "split.val_fraction=0"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    assert len((store / "train.txt").read_text().split()) == 3 and not (tmp_path / "elsewhere").exists()
    with pytest.raises(SystemExit):
        main(["precompute", "-c", str(cfg), "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


# ------------------------------------------------------------------- found by the independent check (issue 18)
def test_garbage_collection_never_deletes_a_version_made_visible_while_it_runs(tmp_path, twelve, monkeypatch):
    """Two publishers overlap: while one deletes an old version, the other swaps in a new one. The old code read
    `current` once before deleting and then deleted the new visible version (both exited 0)."""
    from data_engine import versions

    store, config = _setup(tmp_path, twelve)
    _node(monkeypatch, 1, None, config)
    root = store / VERSIONS
    published = versions.current_version(store)
    (root / "v-0-old").mkdir()  # superseded long ago: to be deleted (sorts first)
    shutil.copytree(root / published, root / "v-z-newer")  # built by another publisher, swapped in below
    real_discard = versions._discard

    def discard_while_another_publisher_swaps(path):
        if path.name == "v-0-old":
            versions.swap_current(store, "v-z-newer")  # after its swap, that publisher drops its builder lease
        real_discard(path)

    monkeypatch.setattr(versions, "_discard", discard_while_another_publisher_swaps)
    assert versions.collect_garbage(store) == ["v-0-old"]
    assert (store / CURRENT).resolve() == root / "v-z-newer" and (root / published).is_dir()  # current, previous
    assert sum(map(len, _items(store).values())) == 12


def test_a_uid_starting_with_a_dot_is_published(tmp_path, monkeypatch):
    """Names starting with "." are temporary files to the staging listing; a uid such as ".hidden" (here from
    a sidecar, as the data engine's own shapes carry theirs) used to be skipped for ever, with exit status 0."""
    (tmp_path / "in").mkdir()
    for uid in ("hidden", "plain", "other"):
        write_labelled_shape(tmp_path / "in", uid)
    sidecar = tmp_path / "in" / "thing" / "hidden.parts.json"
    sidecar.write_text(sidecar.read_text().replace('"uid": "hidden"', '"uid": ".hidden"'))
    store = tmp_path / "store"
    config = tiny_config(**{"input.paths": f"[{tmp_path / 'in'}]", "output": str(store), "split.val_fraction": 0})
    summary = _node(monkeypatch, 1, None, config)
    assert summary["published"] and sorted(_items(store)["train"]) == [".hidden", "other", "plain"]


def test_a_damaged_run_file_is_named_with_the_way_out(tmp_path, twelve, monkeypatch, capsys):
    store, config = _setup(tmp_path, twelve)
    store.mkdir()
    (store / ".run.json").write_text("")  # a process killed between creating and writing it
    with pytest.raises(ValueError, match=r"\.run\.json is damaged \(empty\): run precompute again with --new-run"):
        _node(monkeypatch, 1, None, config)
    assert _node(monkeypatch, 1, None, config, new_run=True)["published"]
    assert sum(map(len, _items(store).values())) == 12


def test_retry_failed_on_a_node_without_failures_names_the_nodes_that_have_them(tmp_path, twelve, monkeypatch):
    store, config = _setup(tmp_path, twelve)
    victim = node_shares(plan(config)["splits"]["train"], 2)[1][0]  # in node 1's share
    Path(victim.path).write_bytes(b"corrupt")
    _node(monkeypatch, 2, 0, config)
    _node(monkeypatch, 2, 1, config)
    status = _node(monkeypatch, 2, 0, config, retry_failed=True)["status"]
    assert f"retried nothing on node 0: it owns none of the 1 failed shape(s), which belong to node 1: 1 (e.g. " \
           f"{victim.uid})" in status


def test_a_current_link_to_a_missing_version_says_so_and_publish_repairs_it(tmp_path, twelve, monkeypatch, capsys):
    store, config = _setup(tmp_path, twelve)
    _node(monkeypatch, 1, None, config)
    shutil.rmtree((store / CURRENT).resolve())  # e.g. a copy of the store without its .versions folder
    assert main(["inspect", str(store), "--no-png"]) == 1
    err = capsys.readouterr().err
    assert "current points to .versions/" in err and "which does not exist" in err and "data_engine publish" in err
    assert main(["publish", str(store)]) == 0
    assert sum(map(len, _items(store).values())) == 12
