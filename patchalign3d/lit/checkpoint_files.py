"""Checkpoint files that cannot be half-written, and a resume that skips a damaged one.

Lightning's own writer serialises to a temporary file in ``$TMPDIR`` and moves it into place; where ``$TMPDIR``
is another filesystem (common on clusters) the move is a copy, and a kill or a full disk during it leaves a
truncated ``last.ckpt``. :func:`save_atomically` writes a temporary file *beside* the target, flushes it to
disk and renames it over the target (atomic within one filesystem), so a checkpoint path always holds either
the previous complete file or the new one.

A resume first checks the file (:func:`checkpoint_problem`: empty, truncated, not a PyTorch archive) and falls
back to the newest intact checkpoint of the same folder, saying so (:func:`intact_checkpoint`).
:class:`AtomicCheckpointIO` puts both behind Lightning's ``CheckpointIO`` interface;
:class:`~patchalign3d.lit.checkpoint_callback.ResumableCheckpoint` installs it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from ..durable import fsync_folder
from .errors import TrainingSetupError

__all__ = ["PART_SUFFIX", "AtomicCheckpointIO", "checkpoint_problem", "intact_checkpoint", "latest_checkpoint",
           "newest_checkpoint", "save_atomically"]

#: Suffix of the temporary file a checkpoint is written to before its rename (never matches ``*.ckpt``).
PART_SUFFIX = ".part"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_atomically(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through a temporary file in the same folder, fsync'd, then renamed.

    On any failure (full disk, kill) the temporary file is removed and ``path`` keeps its previous content.
    Raises ``OSError`` naming ``path`` when the write fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART_SUFFIX, dir=path.parent)
    try:
        os.chmod(part, 0o666 & ~_umask())  # mkstemp makes 0600 files; a checkpoint is shared like any file
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(part)
        # torch reports a full disk as a RuntimeError of its zip writer ("unexpected pos ...")
        if isinstance(err, OSError) or (isinstance(err, RuntimeError) and "inline_container" in str(err)):
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
            raise OSError(getattr(err, "errno", None) or errno.EIO, f"could not write checkpoint {path}: {reason} (is the disk "
                                                       f"full?); the checkpoints already in {path.parent} are "
                                                       "intact") from err
        raise
    fsync_folder(path.parent)
    return path


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a checkpoint file (``None`` when it is an intact PyTorch archive).

    Checks the size and the zip directory at the end of the archive, which any truncation removes; it reads
    no tensor data, so it costs the same for any checkpoint size.
    """
    path = Path(path)
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size == 0:
        return "empty (0 bytes)"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return f"truncated or not a checkpoint ({size} bytes without a complete archive directory)"
    if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return "not a PyTorch checkpoint (no data.pkl in the archive)"
    return None


def newest_checkpoint(folder: str | os.PathLike, exclude: Path | None = None) -> Path | None:
    """The most recently written intact ``*.ckpt`` of ``folder`` (``None`` if there is none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for candidate in candidates:
        if candidate != exclude and checkpoint_problem(candidate) is None:
            return candidate
    return None


def intact_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` if it is intact, else the newest intact checkpoint beside it (with a warning saying so).

    Raises:
        TrainingSetupError: no file at ``path``, or it is damaged and nothing intact lies beside it.
    """
    path = Path(path)
    problem = checkpoint_problem(path)
    if problem is None:
        return path
    if problem == "missing":
        raise TrainingSetupError(f"no checkpoint at {path}: check --ckpt_path (or pass --ckpt_path last)")
    fallback = newest_checkpoint(path.parent, exclude=path)
    if fallback is None:
        raise TrainingSetupError(
            f"cannot resume from {path}: it is {problem}, and {path.parent} holds no intact checkpoint to fall back "
            f"to; start a new run without --ckpt_path after moving {path.parent} away"
        )
    rank_zero_warn(f"{path} is {problem}; resuming from {fallback}, the newest intact checkpoint in {path.parent}")
    return fallback


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """What ``--ckpt_path last`` resumes in ``folder``: ``last.ckpt`` (or, if it is damaged, the newest intact
    checkpoint, with a warning), else the newest intact checkpoint; ``None`` when the folder holds none."""
    last = Path(folder) / "last.ckpt"
    return intact_checkpoint(last) if last.exists() else newest_checkpoint(folder)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic (:func:`save_atomically`) and whose loads fall back
    from a damaged file to the newest intact one beside it (:func:`intact_checkpoint`). Remote URLs are
    written and read as Lightning does."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        save_atomically(checkpoint, path)

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if _is_local_file_protocol(path):
            path = intact_checkpoint(path)
        return super().load_checkpoint(path, *args, **kwargs)
