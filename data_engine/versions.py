"""Published versions of a store on disk, and the one atomic step that makes a new one visible.

::

    <store>/.versions/<version>/      a whole published store: train/ val/ train.txt val.txt report.json
                                      store_info.json (built, verified, then never changed)
    <store>/.versions/<version>.builder   lease of the process building that version (see .leases)
    <store>/current -> .versions/<version>    the visible version
    <store>/previous -> .versions/<version>   the version before it (kept for readers that opened it)
    <store>/train -> current/train, val, train.txt, val.txt, report.json, store_info.json -> current/...

Publishing is ``rename(2)`` of a fresh symlink over ``current``: POSIX replaces a symlink atomically (a
directory could not be: ``rename`` refuses to replace a non-empty one, and two renames leave a moment with
no store). The six public names never change, so the store path people always used keeps working; a reader
that resolves ``current`` once (LitData resolves its input folder when a dataset is created; see
:func:`patchalign3d.store_check.published_root`) keeps reading one version while a newer one lands. Old
versions are deleted once superseded twice; a version being built is protected by its builder's lease.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from patchalign3d.durable import fsync_folder
from patchalign3d.store_check import CURRENT

from .leases import new_token, read_lease

VERSIONS = ".versions"
PREVIOUS = "previous"
#: Names at the top of a store that point into the visible version.
PUBLIC = ("train", "val", "train.txt", "val.txt", "report.json", "store_info.json")
#: What stores made before versions kept beside the splits (per-node datasets, half-swapped splits); deleted
#: once a version is published.
LEGACY = (".runs", ".train.building", ".val.building", ".train.old", ".val.old", ".train.written", ".val.written")


def versions_dir(store: Path) -> Path:
    return store / VERSIONS


def builder_path(store: Path, name: str) -> Path:
    """The lease file of the process building version ``name`` (created before the version's folder)."""
    return versions_dir(store) / f"{name}.builder"


def _link_target(store: Path, link: str) -> str | None:
    try:
        return Path(os.readlink(store / link)).name
    except (FileNotFoundError, OSError):
        return None


def current_version(store: Path) -> str | None:
    """The name of the visible version (``None`` when nothing is published)."""
    return _link_target(store, CURRENT)


def _point(store: Path, link: str, target: str) -> None:
    """Make ``store/link`` a symlink to ``target`` in one rename (replacing a file or symlink there)."""
    tmp = store / f".{link}.{new_token()}.link"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, store / link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def ensure_public_links(store: Path) -> None:
    """Create the six public links; a store made before versions has real files and folders there: they are
    moved into ``.versions/legacy-*`` (superseded by the version just published) and replaced by links."""
    legacy = versions_dir(store) / f"legacy-{new_token()}"
    for name in PUBLIC:
        path, target = store / name, f"{CURRENT}/{name}"
        if path.is_symlink() and os.readlink(path) == target:
            continue
        if path.is_dir() and not path.is_symlink():
            legacy.mkdir(parents=True, exist_ok=True)
            os.replace(path, legacy / name)
        _point(store, name, target)


def swap_current(store: Path, name: str) -> str | None:
    """Make version ``name`` the visible one (the one atomic step); returns the version it replaced."""
    before = current_version(store)
    # `previous` first: a garbage collector reading the links at any moment keeps the version being replaced
    if before is not None and before != name:
        _point(store, PREVIOUS, f"{VERSIONS}/{before}")
    _point(store, CURRENT, f"{VERSIONS}/{name}")
    fsync_folder(store)
    ensure_public_links(store)
    return before


def _discard(path: Path) -> None:
    """Delete a folder: renamed first (one rename), so nobody finds it half-deleted under its own name."""
    trash = path.with_name(f".trash-{new_token()}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def discard_version(store: Path, name: str) -> None:
    """Delete an unpublished version this process built (a publication that lost a race or failed)."""
    _discard(versions_dir(store) / name)


def collect_garbage(store: Path) -> list[str]:
    """Delete versions that are neither visible, nor the one before, nor being built by a live process; and
    the per-node datasets of stores made before versions. Returns the names deleted."""
    root = versions_dir(store)
    if not root.is_dir():
        return []
    deleted = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".trash-"):  # a deletion that was interrupted
            shutil.rmtree(entry, ignore_errors=True)
            continue
        if entry.name.endswith(".builder"):
            if not (root / entry.name.removesuffix(".builder")).exists() and read_lease(entry) is None:
                entry.unlink(missing_ok=True)
            continue
        if not entry.is_dir() or read_lease(builder_path(store, entry.name)) is not None:
            continue
        # The links are read again for every version, after its lease: another publisher may have swapped
        # meanwhile, and a builder swaps before it drops its lease, so a version without a live lease that
        # is not visible now never becomes visible again.
        if entry.name in (current_version(store), _link_target(store, PREVIOUS)):
            continue
        _discard(entry)
        builder_path(store, entry.name).unlink(missing_ok=True)
        deleted.append(entry.name)
    for name in LEGACY if current_version(store) is not None else ():
        if (store / name).is_dir():
            _discard(store / name)
    return deleted
