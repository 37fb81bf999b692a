"""The store's records: schema, per-shape staging (the source of truth), atomic files, split assignment.

Layout (see ``docs/architecture.md``)::

    <store>/store_info.json   schema version, teacher, views, resolution, part-name vocabulary, ...
    <store>/train/ val/       LitData optimized datasets, one item per shape
    <store>/train.txt val.txt uids in written order
    <store>/report.json       per-shape failures and warnings
    <store>/.staging/         one finished record per shape (``<uid>.npz``), or ``<uid>.failed.json``

The six public names are links into the published version (``data_engine.versions``); the store is built
from ``.staging`` alone (``data_engine.publish``). Nothing half-written is ever visible: staged records and
every JSON/text file are written to a temporary name and renamed (``os.replace`` is atomic within a
filesystem), and a record, once staged, is never rewritten.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
SPLITS = ("train", "val")
STORE_INFO = "store_info.json"
REPORT = "report.json"
STAGING = ".staging"
#: Keys of one item, in the documented order.
RECORD_KEYS = ("uid", "category", "points", "features", "part_names", "part_masks", "meta")


# --------------------------------------------------------------------------------------------- records
def make_record(
    uid: str,
    category: str,
    points: np.ndarray,
    features: np.ndarray,
    part_names: Sequence[str],
    part_masks: np.ndarray,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """One store item (the flat dict LitData serialises), validated.

    Args:
        uid: unique shape id.
        category: category name (``""`` unknown).
        points: ``(N, 3)`` normalised points.
        features: ``(N, D)`` unit-norm features.
        part_names: ``K`` cleaned names.
        part_masks: ``(K, N)`` bool/uint8 membership.
        meta: JSON-serialisable metadata; ``schema_version`` is added.
    """
    record = {
        "uid": str(uid),
        "category": str(category),
        "points": np.ascontiguousarray(points, dtype=np.float32),
        "features": np.ascontiguousarray(features, dtype=np.float16),
        "part_names": json.dumps(list(part_names)),
        "part_masks": _as_masks(part_masks, len(part_names), len(points)),
        "meta": json.dumps({"schema_version": SCHEMA_VERSION, **meta}, sort_keys=True),
    }
    validate_record(record)
    return record


def _as_masks(part_masks: np.ndarray, num_parts: int, num_points: int) -> np.ndarray:
    masks = np.ascontiguousarray(part_masks, dtype=np.uint8)
    return masks.reshape(0, num_points) if masks.size == 0 and num_parts == 0 else masks


def validate_record(record: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first field that breaks the schema."""
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing or len(record) != len(RECORD_KEYS):
        raise ValueError(f"record keys {sorted(record)} differ from the schema {list(RECORD_KEYS)}")
    points, features, masks = record["points"], record["features"], record["part_masks"]
    n = points.shape[0] if points.ndim == 2 else -1
    if points.dtype != np.float32 or points.shape != (n, 3) or n < 1:
        raise ValueError(f"points must be float32 (N, 3), got {points.dtype} {points.shape}")
    if features.dtype != np.float16 or features.ndim != 2 or features.shape[0] != n:
        raise ValueError(f"features must be float16 ({n}, D), got {features.dtype} {features.shape}")
    if not np.isfinite(points).all() or not np.isfinite(features).all():
        raise ValueError("points or features hold NaN/inf")
    names = json.loads(record["part_names"])
    if masks.dtype != np.uint8 or masks.shape != (len(names), n):
        raise ValueError(f"part_masks must be uint8 ({len(names)}, {n}), got {masks.dtype} {masks.shape}")
    if len(set(names)) != len(names):
        raise ValueError(f"part names repeat: {names}")
    if json.loads(record["meta"]).get("schema_version") != SCHEMA_VERSION:
        raise ValueError("meta lacks the schema version")


def decode_record(item: dict[str, Any]) -> dict[str, Any]:
    """A store item with ``part_names`` as a list, ``meta`` as a dict and ``part_masks`` as bool."""
    out = dict(item)
    out["part_names"] = json.loads(item["part_names"])
    out["meta"] = json.loads(item["meta"])
    out["part_masks"] = np.asarray(item["part_masks"]).astype(bool)
    return out


# ------------------------------------------------------------------------------------------ atomic files
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; stores are shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``atomic_write_bytes`` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """``atomic_write_text`` of indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------------------- staging
def uid_to_filename(uid: str) -> str:
    """A filesystem-safe, reversible name for ``uid`` (uids may hold ``/``; one starting with ``.`` gets ``%2E``)."""
    name = urllib.parse.quote(uid, safe="")
    # Names starting with "." are temporary files being written (skipped by every listing): never a record's.
    return "%2E" + name[1:] if name.startswith(".") else name


class Staging:
    """Per-shape results of a run: finished records and failure notes, one file each, written atomically.

    Args:
        root: the staging folder (``<store>/.staging`` by default).
    """

    CONFIG = "config.json"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def record_path(self, uid: str) -> Path:
        return self.root / f"{uid_to_filename(uid)}.npz"

    def failure_path(self, uid: str) -> Path:
        return self.root / f"{uid_to_filename(uid)}.failed.json"

    def has_record(self, uid: str) -> bool:
        return self.record_path(uid).is_file()

    def has_failure(self, uid: str) -> bool:
        return self.failure_path(uid).is_file()

    def write_record(self, record: dict[str, Any]) -> Path:
        """Stage a validated record (uncompressed ``.npz``; strings as 0-d unicode arrays)."""
        validate_record(record)
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v) for k, v in record.items()})
        path = self.record_path(record["uid"])
        atomic_write_bytes(path, buf.getvalue())
        self.failure_path(record["uid"]).unlink(missing_ok=True)
        return path

    def read_record(self, uid: str) -> dict[str, Any]:
        """A staged record as a store item."""
        with np.load(self.record_path(uid), allow_pickle=False) as data:
            record = {k: data[k] for k in RECORD_KEYS}
        for key in ("uid", "category", "part_names", "meta"):
            record[key] = str(record[key])
        return record

    def read_fields(self, uid: str, keys: Sequence[str]) -> dict[str, Any]:
        """Some fields of a staged record, from one open of its file (the big arrays are not read)."""
        with np.load(self.record_path(uid), allow_pickle=False) as data:
            values = {k: data[k] for k in keys}
        return {k: str(v) if v.dtype.kind == "U" else v for k, v in values.items()}

    def read_field(self, uid: str, key: str) -> Any:
        """One field of a staged record (``.npz`` members load lazily, so this skips the big arrays)."""
        with np.load(self.record_path(uid), allow_pickle=False) as data:
            value = data[key]
        return str(value) if value.dtype.kind == "U" else value

    def write_failure(self, uid: str, path: str, reason: str) -> None:
        """Note that ``uid`` failed and why; a rerun skips it unless failures are retried."""
        atomic_write_json(self.failure_path(uid), {"uid": uid, "path": str(path), "reason": reason})

    def failures(self, uids: Iterable[str] | None = None) -> list[dict[str, str]]:
        """Failure notes, for ``uids`` (in that order) or all of them (sorted by uid)."""
        if uids is None:
            paths = sorted(self.root.glob("*.failed.json")) if self.root.is_dir() else []
            notes = [json.loads(p.read_text()) for p in paths]
            return sorted(notes, key=lambda n: n["uid"])
        return [json.loads(self.failure_path(u).read_text()) for u in uids if self.has_failure(u)]

    def clear_failures(self, uids: Iterable[str] | None = None) -> int:
        """Delete the failure notes of ``uids`` (default: all) to retry those shapes; returns how many."""
        if uids is None:
            paths = list(self.root.glob("*.failed.json")) if self.root.is_dir() else []
        else:
            paths = [p for p in map(self.failure_path, uids) if p.is_file()]
        for p in paths:
            p.unlink(missing_ok=True)
        return len(paths)

    def listing(self) -> tuple[set[str], set[str]]:
        """``(uids with a staged record, uids with a failure note)`` from one listing of the folder."""
        records: set[str] = set()
        failed: set[str] = set()
        if not self.root.is_dir():
            return records, failed
        with os.scandir(self.root) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):  # a temporary file being written
                    continue
                if name.endswith(".npz"):
                    records.add(urllib.parse.unquote(name.removesuffix(".npz")))
                elif name.endswith(".failed.json"):
                    failed.add(urllib.parse.unquote(name.removesuffix(".failed.json")))
        return records, failed

    def count_done(self) -> int:
        """Finished shapes, successes and failures (cheap enough to poll for a progress bar)."""
        if not self.root.is_dir():
            return 0
        with os.scandir(self.root) as entries:
            return sum(
                1 for e in entries if e.name.endswith((".npz", ".failed.json")) and not e.name.startswith(".")
            )

    def _fatal_path(self, node: int) -> Path:
        return self.root / f"fatal-node{node}.json"

    def write_fatal(self, reason: str, node: int = 0) -> None:
        """Note a run-wide failure of ``node`` (e.g. the teacher cannot load) for its parent process to raise.

        LitData's parent waits forever for a worker whose function raised, so workers report this way. Each
        node has its own note: one node's failure is not another's to clear.
        """
        atomic_write_json(self._fatal_path(node), {"reason": reason})

    def fatal(self, node: int = 0) -> str | None:
        """The run-wide failure a worker of ``node`` noted, if any."""
        path = self._fatal_path(node)
        return json.loads(path.read_text())["reason"] if path.is_file() else None

    def clear_fatal(self, node: int = 0) -> None:
        self._fatal_path(node).unlink(missing_ok=True)

    def bind_config(self, fingerprint: dict[str, Any]) -> None:
        """Tie the staged records to the settings that made them.

        Raises:
            RuntimeError: the folder holds records made with other settings (mixing them corrupts the store).
        """
        path = self.root / self.CONFIG
        if path.is_file():
            previous = json.loads(path.read_text())
            if previous != fingerprint:
                changed = sorted(
                    k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k)
                )
                raise RuntimeError(
                    f"{self.root} holds records made with different settings (changed: {changed}); "
                    "use a new output folder, or --overwrite to start again"
                )
            return
        atomic_write_json(path, fingerprint)


# -------------------------------------------------------------------------------------------- splits
def assign_split(uid: str, val_fraction: float, seed: int = 0) -> str:
    """``"val"`` for a stable pseudo-random ``val_fraction`` of uids, ``"train"`` otherwise.

    A hash of ``(seed, uid)`` decides, so a shape keeps its split when others are added or removed.
    """
    digest = hashlib.sha256(f"{seed}:{uid}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "little") / 2**64 < val_fraction else "train"


def read_uid_list(path: str | os.PathLike) -> list[str]:
    """Uids in a text file, one per line (blank lines and ``#`` comments ignored)."""
    lines = Path(path).read_text().splitlines()
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


def write_uid_list(path: str | os.PathLike, uids: Sequence[str]) -> None:
    """Atomically write uids one per line."""
    atomic_write_text(path, "".join(f"{u}\n" for u in uids))


# -------------------------------------------------------------------------------------------- reading
def open_split(store: str | os.PathLike, split: str = "train", **kwargs: Any):
    """A ``litdata.StreamingDataset`` over one split of a store (kwargs go to the dataset)."""
    import litdata

    return litdata.StreamingDataset(str(Path(store) / split), **kwargs)


def read_store_info(store: str | os.PathLike) -> dict[str, Any]:
    """``store_info.json``, checked for a schema version this code reads."""
    info = json.loads((Path(store) / STORE_INFO).read_text())
    if info.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{store}: schema version {info.get('schema_version')} != {SCHEMA_VERSION}")
    return info
