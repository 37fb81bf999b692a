"""Output paths checked before any work: a file where a file is meant, a folder where a folder is meant, a
known suffix, and a place that can be written. Every message names the flag and what to give instead.

A name of the wrong kind (a folder for a file, a file for a folder, an unknown suffix) is a
:class:`~patchalign3d.errors.UsageError`; a place that cannot be written is a ``PermissionError``. Nothing is
created: writability is probed with a temporary file in the deepest folder that exists, removed at once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from patchalign3d.errors import UsageError


def check_output_file(path: str | os.PathLike, flag: str, suffixes: Sequence[str] | None = None,
                      example: str = "parts") -> Path:
    """Check that ``path`` names a file that can be written (``suffixes``: the ones allowed, lowercase)."""
    text = os.fspath(path)
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    hint_suffix = suffix if suffix and (suffixes is None or suffix in suffixes) else (suffixes or [".out"])[0]
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise UsageError(f"{flag} {text} is a folder; give a file name such as {path / (example + hint_suffix)}")
    if suffixes is not None and suffix not in suffixes:
        got = f"the suffix {path.suffix!r}" if suffix else "no suffix"
        raise UsageError(f"{flag} {text} has {got}; use one of {', '.join(suffixes)} "
                         f"(e.g. {path.with_suffix(hint_suffix).name})")
    _check_writable(path.parent, flag, text)
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"{flag} {text}: the file exists and cannot be overwritten; choose another name")
    return path


def check_output_folder(path: str | os.PathLike, flag: str, file_suffixes: Sequence[str] = ()) -> Path:
    """Check that ``path`` names a folder that exists or can be made, and written into.

    ``file_suffixes``: suffixes that mean the user gave a file name (``parts.glb``) where a folder is needed.
    """
    text = os.fspath(path)
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {text} is a file; give a folder (it is created if missing)")
    if not path.exists() and path.suffix.lower() in file_suffixes:
        raise UsageError(f"{flag} {text} looks like a file name; give a folder, e.g. {path.with_suffix('')}/")
    _check_writable(path, flag, text)
    return path


def _check_writable(folder: Path, flag: str, text: str) -> None:
    """``folder`` (made later if missing) must sit under folders only, and the deepest existing one be writable."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {text}: {existing} is a file, so nothing can be written below it; give a path "
                         "inside a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".patchalign3d-write-test-", dir=existing)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise PermissionError(f"{flag} {text}: cannot write in {existing} ({reason}); choose a folder you can "
                              "write to") from None
    os.close(fd)
    os.unlink(probe)
