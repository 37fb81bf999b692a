"""Readers verify: training, ``inspect`` and ``verify`` refuse a store whose counts disagree; ``publish`` mends
it from the records; stores made before versions are taken over; object-store mounts are refused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from data_engine import precompute
from data_engine.__main__ import main
from data_engine.filesystems import UnsafeFilesystemError, check_store_filesystem, mount_of
from data_engine.litdata_jobs import write_dataset
from data_engine.store import STAGING
from data_engine.versions import VERSIONS
from data_engine.worker import StagedRecords
from patchalign3d.store_check import CURRENT, StoreMismatchError, check_store

from .conftest import tiny_config, write_labelled_shape


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, object]:
    """A published one-node store of 8 shapes (copied by each test before it is damaged)."""
    root = tmp_path_factory.mktemp("verify")
    for i in range(8):
        write_labelled_shape(root / "in", f"s{i}", category=["chair", "lamp"][i % 2])
    config = tiny_config(**{"input.paths": f"[{root / 'in'}]", "output": str(root / "store"), "split.val_fraction": 0.25})
    assert precompute(config, progress=False)["published"]
    return root / "store", config


def _copy(published, tmp_path: Path) -> tuple[Path, object]:
    source, _ = published
    store = tmp_path / "store"
    shutil.copytree(source, store, symlinks=True)
    shutil.copytree(source.parent / "in", tmp_path / "in")
    config = tiny_config(**{"input.paths": f"[{tmp_path / 'in'}]", "output": str(store), "split.val_fraction": 0.25})
    return store, config


def _shrink_train(store: Path, keep: int) -> None:
    """What the old design left after a retry on one node: a train split holding fewer items than listed."""
    root = (store / CURRENT).resolve()
    uids = (root / "train.txt").read_text().split()[:keep]
    write_dataset(StagedRecords(store / STAGING, root / ".unreadable"), uids, root / "train", num_workers=1,
                  chunk_bytes="4MB", start_method="fork")  # fmt: skip


def test_readers_refuse_a_store_whose_counts_disagree_and_publish_mends_it(published, tmp_path, capsys):
    store, _ = _copy(published, tmp_path)
    listed = len((store / "train.txt").read_text().split())
    assert main(["verify", str(store), "--deep"]) == 0
    assert f'"train": {listed}' in capsys.readouterr().out
    _shrink_train(store, 2)

    with pytest.raises(StoreMismatchError, match=f"train holds 2 items but store_info.json says {listed}"):
        check_store(store)
    from patchalign3d.lit import StoreDataModule

    with pytest.raises(StoreMismatchError, match=f"train.txt lists {listed}"):
        StoreDataModule(str(store), num_workers=0).setup("fit")
    for command in (["inspect", str(store), "--no-png"], ["verify", str(store)]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert f"train holds 2 items but store_info.json says {listed}" in err and "data_engine publish" in err

    assert main(["publish", str(store)]) == 0  # rebuilt from the records into a new version
    assert "published store" in capsys.readouterr().out
    assert main(["verify", str(store), "--deep"]) == 0
    assert check_store(store)[1]["train"] == listed


def test_verify_checks_the_plan_and_reads_items_back(published, tmp_path, capsys):
    store, _ = _copy(published, tmp_path)
    root = (store / CURRENT).resolve()
    order = (root / "train.txt").read_text().split()
    (root / "train.txt").write_text("\n".join(order[::-1]) + "\n")  # same counts, wrong order
    assert main(["verify", str(store)]) == 1
    err = capsys.readouterr().err
    assert "train.txt is not the plan's train shapes in write order" in err and f"item 0 is {order[0]!r}" in err
    (root / "train.txt").write_text("\n".join([order[0], *order[:-1]]) + "\n")  # a shape twice, one missing
    assert main(["verify", str(store)]) == 1
    err = capsys.readouterr().err
    assert f"1 shapes in more than one place: [{order[0]!r}]" in err and f"1 shapes missing: [{order[-1]!r}]" in err
    assert main(["verify", str(tmp_path)]) == 1
    assert "is not a published store" in capsys.readouterr().err


def test_publish_needs_a_run_and_every_shape(published, tmp_path, capsys):
    store, config = _copy(published, tmp_path)
    assert main(["publish", str(tmp_path / "nothing")]) == 1
    assert "holds no run to publish" in capsys.readouterr().err
    write_labelled_shape(Path(config.input.paths[0]), "s8", category="mug")  # a new shape nobody computed yet
    from data_engine.pipeline import _plan_settings, plan
    from data_engine.runs import join_run, make_plan

    work = plan(config)
    join_run(store, make_plan(work["splits"], work["problems"], _plan_settings(config, 2)), 2, 0)
    assert main(["publish", str(store)]) == 1
    out = capsys.readouterr().out
    assert "1 shapes have no record or failure note; waiting for node" in out


def test_a_store_made_before_versions_is_taken_over(published, tmp_path):
    store, config = _copy(published, tmp_path)
    root = (store / CURRENT).resolve()
    for name in ("train", "val", "train.txt", "val.txt", "report.json", "store_info.json"):
        (store / name).unlink()
        (shutil.copytree if (root / name).is_dir() else shutil.copy)(root / name, store / name)
    for name in (CURRENT, "previous", ".run.json"):
        (store / name).unlink(missing_ok=True)
    shutil.rmtree(store / VERSIONS)
    (store / ".runs" / "abc" / "node-0" / "train").mkdir(parents=True)  # the old per-node datasets
    (store / ".runs" / "abc" / "node-0" / "train" / "chunk-0-0.bin").write_bytes(b"x" * 100)
    check_store(store)  # the old layout is readable as it is

    assert precompute(config, progress=False)["published"]
    assert all((store / n).is_symlink() for n in ("train", "val", "store_info.json", "report.json"))
    assert not (store / ".runs").exists() and [p.name for p in (store / VERSIONS).iterdir()] == [
        Path(os.readlink(store / CURRENT)).name
    ]
    assert main(["verify", str(store), "--deep"]) == 0
    assert json.loads((store / "store_info.json").read_text())["splits"] == check_store(store)[1]


def test_object_store_mounts_are_refused(tmp_path):
    for point in ("bucket", "gcs", "nfs share"):  # mount points exist; the stores below them may not yet
        (tmp_path / point).mkdir()
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        f"s3fs {tmp_path}/bucket fuse.s3fs rw,nosuid 0 0\n"
        f"gcsfuse {tmp_path}/gcs fuse rw 0 0\n"
        f"nfs-server:/export {tmp_path}/nfs\\040share nfs4 rw 0 0\n"
    )
    assert mount_of(tmp_path / "nfs share" / "store", mounts.read_text())[1] == "nfs4"
    check_store_filesystem(tmp_path / "nfs share" / "store", mounts)  # NFS: rename and link are atomic
    check_store_filesystem(tmp_path / "local", mounts)
    for folder, kind in (("bucket", "fuse.s3fs"), ("gcs", "fuse")):
        with pytest.raises(UnsafeFilesystemError, match=f"a {kind} mount of an object store"):
            check_store_filesystem(tmp_path / folder / "stores" / "demo", mounts)


def test_a_store_that_fails_verification_is_not_published(published, tmp_path, capsys):
    store, config = _copy(published, tmp_path)
    visible = (store / CURRENT).resolve()
    bad = sorted((store / STAGING).glob("*.npz"))[0]
    bad.write_bytes(b"not an npz")  # a staged record damaged on disk
    (store / CURRENT).unlink()  # so that the store must be published again
    assert main(["publish", str(store)]) == 1
    err = capsys.readouterr().err
    assert "fails verification, so it was not published" in err and f"staged record of {bad.stem} cannot be read" in err
    assert not (store / CURRENT).exists() and visible.is_dir()  # nothing was swapped in, the old version is kept
    assert [p for p in (store / VERSIONS).iterdir() if p.is_dir()] == [visible]  # the failed build is gone


def test_publication_reads_items_back_before_showing_them(published, tmp_path, capsys):
    store, _ = _copy(published, tmp_path)
    first, second = (store / "train.txt").read_text().split()[:2]
    shutil.copy(store / STAGING / f"{second}.npz", store / STAGING / f"{first}.npz")  # a record under a wrong name
    (store / CURRENT).unlink()
    assert main(["publish", str(store)]) == 1
    err = capsys.readouterr().err
    assert "fails verification, so it was not published" in err and f"train item 0 is {second!r}, listed {first!r}" in err
    assert not (store / CURRENT).exists()
