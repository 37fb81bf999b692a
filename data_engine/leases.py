"""Exclusive files and leases on a shared filesystem (the publication claim, a version's builder mark).

A lease is a small JSON file (who holds it: host, pid, a random token) created exclusively and kept alive by
a heartbeat thread that touches it. It is live while its mtime is recent *by the filesystem's own clock*
(nodes' clocks may disagree; the file server stamps both the lease and a probe file this process touches) and,
when it was taken on this host, while its process exists. An unreadable, expired or orphaned lease can be
taken over. A lease only saves duplicate work: the store stays correct when two processes both believe
they hold one (see :mod:`.publish`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

#: A lease not renewed for this long (filesystem clock) is dead.
LEASE_SECONDS = 300.0
#: How often a holder renews its leases.
HEARTBEAT_SECONDS = 20.0


def new_token() -> str:
    """A random token that names one holder (and the files it alone writes)."""
    return uuid.uuid4().hex[:12]


def create_exclusive(path: str | os.PathLike, obj: Any) -> bool:
    """Create ``path`` holding the JSON of ``obj`` if it does not exist; ``False`` if it does.

    The content is written to a temporary file first and hard-linked into place (atomic and exclusive on
    POSIX filesystems, NFS included), so no reader ever finds the file empty or half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{new_token()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def filesystem_now(folder: str | os.PathLike) -> float:
    """The current time by the clock of the filesystem holding ``folder`` (the mtime of a file touched now)."""
    probe = Path(folder) / f".clock-{socket.gethostname()}-{os.getpid()}-{new_token()}"
    probe.touch()
    try:
        return probe.stat().st_mtime
    finally:
        probe.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def read_lease(path: str | os.PathLike) -> dict[str, Any] | None:
    """The holder of the live lease at ``path``, or ``None`` (no file, unreadable, expired, holder gone)."""
    path = Path(path)
    try:
        stamp = path.stat().st_mtime
        holder = json.loads(path.read_text())
        host, pid = holder["host"], int(holder["pid"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):  # unreadable: not written by a live holder
        return None
    if host == socket.gethostname() and not _process_exists(pid):
        return None
    age = filesystem_now(path.parent) - stamp
    return {**holder, "age": age} if age <= LEASE_SECONDS else None


class Lease:
    """A lease this process holds (see the module doc); ``release()`` ends it."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        self.path, self.holder = path, holder
        self.extra: list[Path] = []  # other lease files this holder keeps alive with the same heartbeat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    @property
    def token(self) -> str:
        return self.holder["token"]

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            for path in [self.path, *self.extra]:
                if self.owns(path):  # never keep alive a lease another process took over
                    with contextlib.suppress(OSError):
                        os.utime(path)

    def mark(self, path: Path) -> None:
        """Write another lease file held by this holder (kept alive until ``release`` or ``unmark``)."""
        create_exclusive(path, self.holder)
        self.extra.append(path)

    def unmark(self, path: Path) -> None:
        if path in self.extra:
            self.extra.remove(path)
        if self.owns(path):
            path.unlink(missing_ok=True)

    def owns(self, path: Path) -> bool:
        """Whether ``path`` is still this holder's lease file (it may have been taken over)."""
        try:
            return json.loads(path.read_text()).get("token") == self.token
        except (OSError, ValueError):
            return False

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        for path in [*self.extra, self.path]:
            if self.owns(path):
                path.unlink(missing_ok=True)
        self.extra.clear()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(path: str | os.PathLike, **about: Any) -> Lease | dict[str, Any]:
    """Take the lease at ``path``: a :class:`Lease` when this process now holds it, else the live holder.

    ``about`` is stored with the holder (e.g. ``by="node 1"``). A dead lease (see :func:`read_lease`) is moved
    aside by rename (of several processes taking it over, one rename wins) and created afresh.
    """
    path = Path(path)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "token": new_token(), "at": time.time(), **about}
    for _ in range(10):
        if create_exclusive(path, holder):
            return Lease(path, holder)
        live = read_lease(path)
        if live is not None:
            return live
        with contextlib.suppress(FileNotFoundError):  # someone else moved it first: try again
            os.rename(path, path.with_name(f".{path.name}.dead-{new_token()}"))
            for dead in path.parent.glob(f".{path.name}.dead-*"):
                dead.unlink(missing_ok=True)
    raise RuntimeError(f"could not take the lease {path}: it keeps changing hands")
