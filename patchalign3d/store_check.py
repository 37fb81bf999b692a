"""Is a store whole? The check every reader runs when it opens a store (training, ``inspect``, ``verify``).

The data engine publishes a store as one folder ``<store>/.versions/<version>/`` and makes it visible by
pointing the symlink ``<store>/current`` at it; ``train/``, ``val/``, their uid lists, ``report.json`` and
``store_info.json`` at the top of the store are fixed links through ``current``, so the store path people
always used keeps working. A reader resolves ``current`` once (:func:`published_root`) and reads everything
from that version: a publication that lands meanwhile cannot mix two versions under it.

:func:`check_store` compares the item count of each split (what LitData reads from ``index.json``) with
``store_info.json`` and the split's uid list, and refuses a store where they disagree. Standard library only
(fsspec for remote stores), so both ``data_engine`` (which writes stores) and ``patchalign3d.lit`` (which
reads them) import it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["CURRENT", "STORE_INFO", "StoreMismatchError", "check_store", "published_root", "split_item_count"]

#: The symlink that makes one published version of a store visible.
CURRENT = "current"
STORE_INFO = "store_info.json"
SPLITS = ("train", "val")


class StoreMismatchError(ValueError):
    """A store's item counts disagree with its ``store_info.json`` or uid lists (it is not a whole store)."""


def _is_remote(store: str) -> bool:
    return "://" in store


def _read_text(path: str) -> str | None:
    """A file's text, or ``None`` when it does not exist (local path or fsspec URL)."""
    try:
        if _is_remote(path):
            import fsspec

            with fsspec.open(path, "r") as f:
                return f.read()
        return Path(path).read_text()
    except FileNotFoundError:
        return None


def published_root(store: str | os.PathLike) -> str:
    """The folder that holds the store's files: the version ``<store>/current`` points at, else ``store``.

    Remote stores (URLs) and stores written by hand have no ``current`` link: they are their own root.
    """
    store = str(store).rstrip("/")
    link = Path(store) / CURRENT
    if not _is_remote(store) and link.is_symlink():
        return str(link.resolve())
    return store


def split_item_count(root: str, split: str) -> int | None:
    """Items in ``<root>/<split>`` as LitData counts them (the chunk sizes in ``index.json``); ``None`` if absent."""
    text = _read_text(f"{root}/{split}/index.json")
    if text is None:
        return None
    return sum(int(chunk["chunk_size"]) for chunk in json.loads(text)["chunks"])


def _list_length(root: str, split: str) -> int | None:
    text = _read_text(f"{root}/{split}.txt")
    if text is None:
        return None
    return sum(1 for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))


def check_store(store: str | os.PathLike) -> tuple[str, dict[str, int]]:
    """Check that every split holds as many items as ``store_info.json`` and its uid list say.

    Args:
        store: a store folder (or URL).

    Returns:
        ``(root, counts)``: the published version's folder (read everything from it) and items per split.

    Raises:
        FileNotFoundError: no ``store_info.json``.
        StoreMismatchError: ``current`` points at a version that is gone, or a split's item count differs from ``store_info.json`` or its ``<split>.txt``.
    """
    link = Path(str(store)) / CURRENT
    if not _is_remote(str(store)) and link.is_symlink() and not link.exists():
        raise StoreMismatchError(
            f"{link} points to {os.readlink(link)}, which does not exist (deleted, or not copied with the store): "
            f"republish it from its records with `python -m data_engine publish {store}`"
        )
    root = published_root(store)
    text = _read_text(f"{root}/{STORE_INFO}")
    if text is None:
        raise FileNotFoundError(f"{root}/{STORE_INFO} not found: {store} is not a published store")
    info: dict[str, Any] = json.loads(text)
    declared = info.get("splits") or {}
    counts, problems = {}, []
    for split in sorted(set(SPLITS) | set(declared)):
        items = split_item_count(root, split) or 0
        counts[split] = items
        listed = _list_length(root, split)
        if split in declared and int(declared[split]) != items:
            problems.append(f"{split} holds {items} items but {STORE_INFO} says {declared[split]}")
        if listed is not None and listed != items:
            problems.append(f"{split} holds {items} items but {split}.txt lists {listed}")
    if problems:
        raise StoreMismatchError(
            f"store {store} is not whole: {'; '.join(problems)}. Republish it from its records with "
            f"`python -m data_engine publish {store}` (or rebuild it with precompute)"
        )
    return root, counts
