"""Refuse a store folder on a filesystem where the store's atomic steps do not hold.

The store relies on three POSIX guarantees: ``rename`` replaces a file or symlink atomically, ``link`` (and
``O_EXCL``) creates a file only if it does not exist, and a file's mtime comes from the filesystem's clock.
Local filesystems, NFSv3+, Lustre, CephFS, GPFS and BeeGFS give them. Object stores mounted through FUSE
(s3fs, gcsfuse, goofys, mountpoint-s3, rclone, blobfuse) emulate rename by copy-then-delete and exclusive
creation not at all: two nodes would both win a claim and readers could see half-renamed folders. Those are
recognised from ``/proc/mounts`` and refused.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Mount types (or FUSE sources) of object stores: rename and exclusive creation are not atomic there.
OBJECT_STORE_MOUNTS = ("s3fs", "gcsfuse", "goofys", "mountpoint-s3", "rclone", "blobfuse", "blobfuse2", "s3backer")


class UnsafeFilesystemError(ValueError):
    """The store folder is on a filesystem whose rename / exclusive creation are not atomic."""


def _unescape(field: str) -> str:
    """``/proc/mounts`` writes spaces, tabs, newlines and backslashes as octal escapes (``\\040``)."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def mount_of(path: str | os.PathLike, mounts: str) -> tuple[str, str, str]:
    """``(mount point, filesystem type, source)`` of the mount holding ``path``, from ``/proc/mounts`` text."""
    target = Path(path).absolute()
    while not target.exists() and target != target.parent:  # the store may not exist yet: its nearest parent
        target = target.parent
    target = target.resolve()
    best = ("/", "", "")
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        source, point, fstype = _unescape(fields[0]), _unescape(fields[1]), fields[2]
        inside = target == Path(point) or Path(point) in target.parents
        if inside and len(point) >= len(best[0]):
            best = (point, fstype, source)
    return best


def check_store_filesystem(path: str | os.PathLike, mounts_file: str | os.PathLike = "/proc/mounts") -> None:
    """Raise :class:`UnsafeFilesystemError` when ``path`` is on an object-store mount (see the module doc).

    Machines without ``/proc/mounts`` (macOS) are not checked.
    """
    try:
        mounts = Path(mounts_file).read_text()
    except OSError:
        return
    point, fstype, source = mount_of(path, mounts)
    kind = fstype.removeprefix("fuse.") if fstype.startswith("fuse") else fstype
    names = {kind.lower(), Path(source).name.lower()}
    hit = next((m for m in OBJECT_STORE_MOUNTS if m in names or any(n.startswith(m) for n in names if n)), None)
    if hit:
        raise UnsafeFilesystemError(
            f"{path} is on {point}, a {fstype} mount of an object store ({source}): rename and exclusive file "
            "creation are not atomic there, so nodes could publish a half-built store. Write the store to a "
            "local disk or a POSIX shared filesystem (NFSv3+, Lustre, CephFS, GPFS) and copy the published "
            "version (STORE/current/) to object storage afterwards"
        )
