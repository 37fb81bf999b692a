"""Finding the meshes of a run: input folders, files, globs and list files -> uid-sorted tasks -> splits."""

from __future__ import annotations

import contextlib
import glob
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import InputConfig, SplitConfig
from .labels import read_sidecar, sidecar_path
from .store import SPLITS, assign_split, read_uid_list


@dataclass(frozen=True)
class ShapeTask:
    """One mesh to process: its ``uid``, file ``path`` and ``category``."""

    uid: str
    path: str
    category: str = ""


def _expand(entry: str, patterns: Sequence[str]) -> tuple[Path, list[Path]]:
    """A config input entry as ``(root, files)``; ``root`` is what uids are relative to."""
    path = Path(entry)
    if path.is_dir():
        files = {Path(f) for pattern in patterns for f in glob.glob(str(path / pattern), recursive=True)}
        return path, sorted(f for f in files if f.is_file())
    if path.suffix.lower() == ".txt" and path.is_file():
        lines = read_uid_list(path)
        return path.parent, [p if p.is_absolute() else path.parent / p for p in map(Path, lines)]
    if path.is_file():
        return path.parent, [path]
    if glob.has_magic(entry):
        fixed = list(_leading_literal_parts(path))
        root = Path(*fixed) if fixed else Path(".")
        return root, sorted(Path(f) for f in glob.glob(entry, recursive=True) if Path(f).is_file())
    raise FileNotFoundError(
        f"input {entry!r} is neither a folder, a file, a list file nor a glob that matches"
    )


def _leading_literal_parts(path: Path) -> Iterator[str]:
    """The parts of a glob pattern before the first one with a wildcard."""
    for part in path.parts:
        if glob.has_magic(part):
            return
        yield part


def _task_for(file: Path, root: Path, config: InputConfig) -> ShapeTask:
    try:
        rel = file.relative_to(root)
    except ValueError:  # a list file may name meshes elsewhere
        rel = Path(file.name)
    uid = str(rel.with_suffix("").as_posix()) if config.uid == "relpath" else file.stem
    category = ""
    if config.category_level is not None and len(rel.parts) > config.category_level + 1:
        category = rel.parts[config.category_level]
    if sidecar_path(file).is_file():  # synthetic shapes carry their uid and category
        with contextlib.suppress(Exception):
            ann = read_sidecar(sidecar_path(file))
            uid, category = ann.uid or uid, ann.category or category
    return ShapeTask(uid=uid, path=str(file), category=category)


def discover(config: InputConfig) -> tuple[list[ShapeTask], list[dict[str, str]]]:
    """All meshes named by ``config``, sorted by uid, and problems found on the way.

    Returns:
        ``tasks`` (unique uids, sorted) and ``problems`` (``{"uid", "path", "reason"}``: missing files,
        duplicate uids). Unreadable files are found later, shape by shape.
    """
    if config.uid not in ("relpath", "stem"):
        raise ValueError(f"input.uid must be 'relpath' or 'stem', got {config.uid!r}")
    by_uid: dict[str, ShapeTask] = {}
    problems: list[dict[str, str]] = []
    for entry in config.paths:
        root, files = _expand(entry, config.patterns)
        for file in files:
            if not file.is_file():
                problems.append({"uid": file.stem, "path": str(file), "reason": "file not found"})
                continue
            task = _task_for(file, root, config)
            if task.uid in by_uid:
                reason = f"duplicate uid (also {by_uid[task.uid].path})"
                problems.append({"uid": task.uid, "path": task.path, "reason": reason})
                continue
            by_uid[task.uid] = task
    return [by_uid[u] for u in sorted(by_uid)], problems


def split_tasks(tasks: Sequence[ShapeTask], config: SplitConfig) -> dict[str, list[ShapeTask]]:
    """Tasks per split, each list in uid order."""
    if config.train_file or config.val_file:
        train = set(read_uid_list(config.train_file)) if config.train_file else set()
        val = set(read_uid_list(config.val_file)) if config.val_file else set()
        return {"train": [t for t in tasks if t.uid in train], "val": [t for t in tasks if t.uid in val]}
    out: dict[str, list[ShapeTask]] = {s: [] for s in SPLITS}
    for task in tasks:
        out[assign_split(task.uid, config.val_fraction, config.seed)].append(task)
    return out


def write_order(tasks: Sequence[ShapeTask], seed: int | None) -> list[ShapeTask]:
    """``tasks`` in the order their records are written: shuffled by a hash of ``(seed, uid)``, or as given.

    A hash rather than a permutation of positions: a shape keeps its place relative to the others when shapes
    are added or removed.
    """
    if seed is None:
        return list(tasks)

    def key(task: ShapeTask) -> bytes:
        return hashlib.sha256(f"write-order:{seed}:{task.uid}".encode()).digest()

    return sorted(tasks, key=key)
