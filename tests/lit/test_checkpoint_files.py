"""Checkpoint files: atomic writes in their own folder, and a resume that skips damaged files."""

from __future__ import annotations

import errno
import os
import re
import tempfile

import pytest
import torch

from patchalign3d.lit import AtomicCheckpointIO, TrainingSetupError
from patchalign3d.lit import checkpoint_files as files
from patchalign3d.lit.checkpoint_callback import unwritable_folder_problem
from patchalign3d.lit.cli import resolve_ckpt_path


def checkpoint(step: int) -> dict:
    return {"global_step": step, "state_dict": {"w": torch.full((64, 64), float(step))}}


def test_written_beside_the_target_never_through_tmpdir(tmp_path, monkeypatch):
    # $TMPDIR on another (here: no) filesystem must not matter: the temporary file lies beside the target.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no_such_tmpdir"))
    target = tmp_path / "ckpts" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(checkpoint(3), target)
    assert torch.load(target, weights_only=True)["global_step"] == 3
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    files.save_atomically(checkpoint(1), target)

    def disk_full(obj, f):  # half a checkpoint reaches the disk, then the disk is full
        f.write(b"PK\x03\x04" + b"\0" * 5000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.torch, "save", disk_full)
    with pytest.raises(OSError, match=r"could not write checkpoint .*last\.ckpt: No space left on device") as err:
        files.save_atomically(checkpoint(2), target)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_torchs_own_full_disk_error_names_the_checkpoint(tmp_path, monkeypatch):
    """torch's zip writer reports a full disk as RuntimeError("[enforce fail at inline_container.cc:672] .
    unexpected pos ..."), never an OSError."""
    target = tmp_path / "last.ckpt"
    files.save_atomically(checkpoint(1), target)

    def zip_writer_fails(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 567104 vs 566992")

    monkeypatch.setattr(files.torch, "save", zip_writer_fails)
    with pytest.raises(OSError, match=r"could not write checkpoint .*last\.ckpt: .*unexpected pos .*is the disk full"):
        files.save_atomically(checkpoint(2), target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["global_step"] == 1 and len(list(tmp_path.iterdir())) == 1


def test_a_checkpoint_is_readable_as_the_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        path = files.save_atomically(checkpoint(1), tmp_path / "last.ckpt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600: colleagues can export or init_from it


def test_a_kill_mid_write_leaves_a_temporary_file_that_the_next_run_removes(tmp_path):
    files.save_atomically(checkpoint(1), tmp_path / "last.ckpt")
    stale = tmp_path / f".last.ckpt.x1y2z3{files.PART_SUFFIX}"  # what a SIGKILL during torch.save leaves
    stale.write_bytes(b"PK\x03\x04partial")
    assert files.newest_checkpoint(tmp_path) == tmp_path / "last.ckpt"  # never taken for a checkpoint
    assert unwritable_folder_problem(tmp_path) is None and not stale.exists()


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, damage):
    files.save_atomically(checkpoint(4), tmp_path / "epoch=0-step=4.ckpt")
    files.save_atomically(checkpoint(6), tmp_path / "epoch=1-step=6.ckpt")
    last = files.save_atomically(checkpoint(9), tmp_path / "last.ckpt")
    whole = last.read_bytes()
    last.write_bytes({"truncated": whole[: len(whole) // 2], "empty": b"", "garbage": b"not a checkpoint"}[damage])
    expected = {"truncated": "truncated or not a checkpoint", "empty": "empty (0 bytes)",
                "garbage": "truncated or not a checkpoint"}[damage]
    assert files.checkpoint_problem(last).startswith(expected)
    with pytest.warns(UserWarning, match=rf"last\.ckpt is {re.escape(expected)}.*resuming from .*epoch=1-step=6\.ckpt"):
        loaded = AtomicCheckpointIO().load_checkpoint(last)
    assert loaded["global_step"] == 6
    with pytest.warns(UserWarning, match="newest intact checkpoint"):
        assert resolve_ckpt_path("last", [tmp_path]) == str(tmp_path / "epoch=1-step=6.ckpt")
    with pytest.warns(UserWarning, match="newest intact checkpoint"):
        assert resolve_ckpt_path(str(last), []) == str(tmp_path / "epoch=1-step=6.ckpt")


def test_resume_without_any_intact_checkpoint_says_what_to_do(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"")
    with pytest.raises(TrainingSetupError, match=r"empty \(0 bytes\), and .* holds no intact checkpoint"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "last.ckpt")
    with pytest.raises(TrainingSetupError, match="no checkpoint at .*missing.ckpt"):
        resolve_ckpt_path(str(tmp_path / "missing.ckpt"), [])
    assert resolve_ckpt_path("last", [tmp_path / "empty_folder"]) is None  # nothing yet: a new run


def test_last_means_last_ckpt_even_when_another_file_is_newer(tmp_path):
    files.save_atomically(checkpoint(8), tmp_path / "last.ckpt")
    files.save_atomically(checkpoint(4), tmp_path / "best-epoch=0.ckpt")  # written later, but older training
    assert resolve_ckpt_path("last", [tmp_path]) == str(tmp_path / "last.ckpt")
