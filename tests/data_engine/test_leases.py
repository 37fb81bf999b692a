"""Claims with leases judged by the filesystem's clock, and two publishers racing for one store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from data_engine import precompute
from data_engine.__main__ import main
from data_engine.leases import LEASE_SECONDS, Lease, acquire, create_exclusive, filesystem_now, read_lease
from data_engine.publish import CLAIM
from data_engine.store import STAGING
from data_engine.versions import VERSIONS
from patchalign3d.store_check import CURRENT

from .conftest import tiny_config, write_labelled_shape
from .node_harness import paused_node


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_exclusive_files_are_whole_and_made_once(tmp_path):
    assert create_exclusive(tmp_path / "f.json", {"a": 1})
    assert not create_exclusive(tmp_path / "f.json", {"a": 2})
    assert json.loads((tmp_path / "f.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]  # no temporary file left
    assert abs(filesystem_now(tmp_path) - time.time()) < 5


def test_a_lease_is_held_until_released_and_taken_over_when_dead(tmp_path):
    path = tmp_path / "claim"
    mine = acquire(path, by="node 0")
    assert isinstance(mine, Lease)
    other = acquire(path, by="node 1")
    assert isinstance(other, dict) and other["by"] == "node 0" and other["pid"] == os.getpid()
    mine.release()
    assert not path.exists()

    gone = {"host": socket.gethostname(), "pid": _dead_pid(), "token": "x"}
    path.write_text(json.dumps(gone))  # holder on this host, process gone: dead at once
    assert read_lease(path) is None and isinstance(taken := acquire(path, by="node 1"), Lease)
    taken.release()

    remote = {"host": "elsewhere", "pid": 12345, "token": "y", "by": "node 7"}
    path.write_text(json.dumps(remote))  # another host: alive while renewed within the lease
    assert acquire(path, by="node 1")["by"] == "node 7"
    _age(path, LEASE_SECONDS - 30)
    assert read_lease(path)["by"] == "node 7"
    _age(path, LEASE_SECONDS + 30)
    assert read_lease(path) is None and isinstance(taken := acquire(path, by="node 1"), Lease)
    taken.release()

    path.write_text("")  # unreadable: no live holder wrote it (leases are created whole)
    assert isinstance(taken := acquire(path, by="node 1"), Lease)
    assert json.loads(path.read_text())["by"] == "node 1"
    taken.release()


def _dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _version_content(root: Path) -> dict[str, bytes]:
    """Every file of a version, index.json without LitData's write time."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "index.json":
            index = json.loads(data)
            index.pop("updated_at", None)
            data = json.dumps(index, sort_keys=True).encode()
        out[str(path.relative_to(root))] = data
    return out


def test_racing_publishers_give_the_same_store_and_the_loser_discards_its_build(tmp_path, capsys):
    for i in range(6):
        write_labelled_shape(tmp_path / "in", f"s{i}")
    store = tmp_path / "store"
    config = tiny_config(**{"input.paths": f"[{tmp_path / 'in'}]", "output": str(store), "split.val_fraction": 0.3})
    from omegaconf import OmegaConf

    OmegaConf.save(OmegaConf.structured(config), tmp_path / "c.yaml")
    pause = tmp_path / "pause"
    pause.mkdir()
    # Publisher A builds and verifies its version, then is stopped before the swap, longer than its lease.
    with paused_node(["precompute", "-c", str(tmp_path / "c.yaml"), "--no-progress"], tmp_path / "a.log",
                     "verified", pause) as a:  # fmt: skip
        os.killpg(a["pid"], signal.SIGSTOP)  # heartbeat included
        (built,) = [p for p in (store / VERSIONS).iterdir() if p.is_dir()]
        content_a = _version_content(built)
        for lease in (store / CLAIM, built.with_name(built.name + ".builder")):
            _age(lease, LEASE_SECONDS + 60)
        records = {p.name: p.stat().st_mtime_ns for p in (store / STAGING).glob("*.npz")}

        assert main(["publish", str(store), "--no-wait"]) == 0  # publisher B takes the expired claim over
        assert "published store" in capsys.readouterr().out
        content_b = _version_content((store / CURRENT).resolve())
        assert content_b == content_a  # the same records, the same store
        assert not built.exists()  # A's build (its builder's lease expired) was discarded, nothing else
    log = (tmp_path / "a.log").read_text()
    assert a["code"] == 0 and "is up to date" in log, log
    assert {p.name: p.stat().st_mtime_ns for p in (store / STAGING).glob("*.npz")} == records
    assert main(["verify", str(store), "--deep"]) == 0
    assert precompute(config, progress=False)["status"].startswith(f"store {store} is up to date")


def test_a_publisher_whose_records_change_under_it_builds_again(tmp_path):
    """A retry lands while a publisher has built and verified its version: it must not swap the stale one in."""
    for i in range(4):
        write_labelled_shape(tmp_path / "in", f"s{i}")
    broken = tmp_path / "in" / "thing" / "s2.ply"
    good = broken.read_bytes()
    broken.write_bytes(b"corrupt")
    store = tmp_path / "store"
    config = tiny_config(**{"input.paths": f"[{tmp_path / 'in'}]", "output": str(store), "split.val_fraction": 0})
    assert precompute(config, progress=False)["failed"][0]["uid"] == "s2"
    (store / CURRENT).unlink()  # the store must be published again: by A, below
    pause = tmp_path / "pause"
    pause.mkdir()
    with paused_node(["publish", str(store)], tmp_path / "a.log", "verified", pause) as a:
        broken.write_bytes(good)  # fixed and retried meanwhile: A's claim is live, so this one does not publish
        retried = precompute(config, progress=False, retry_failed=True)
        assert not retried["published"] and "is publishing" in retried["status"]
    assert a["code"] == 0, (tmp_path / "a.log").read_text()
    assert (store / "train.txt").read_text().split().count("s2") == 1  # A built again from the new records
    assert json.loads((store / "report.json").read_text())["failed"] == []
    assert main(["verify", str(store), "--deep"]) == 0
