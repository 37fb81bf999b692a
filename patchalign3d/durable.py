"""Writes that survive a crash: after ``os.replace`` of a file or link, its folder is fsync'd so that the
rename itself reaches the disk (the data engine's store versions, training checkpoints)."""

from __future__ import annotations

import contextlib
import os

__all__ = ["fsync_folder"]


def fsync_folder(folder: str | os.PathLike) -> None:
    """fsync ``folder``'s entry list; skipped where the platform cannot (e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
