"""Verification of a store against its plan: ``python -m data_engine verify STORE`` and every publication.

A version is whole when every planned shape is in exactly one place (the list of its own split, in write
order, or the failures of ``report.json``), no other shape is anywhere, the item counts LitData reads back
equal the lists and ``store_info.json``, and the items LitData returns at both ends of each split (or, with
``deep``, every item) carry the listed uids.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from patchalign3d.store_check import check_store

from .runs import PLANS, planned_uids
from .store import REPORT, SPLITS, STORE_INFO, read_uid_list


class VerificationError(RuntimeError):
    """A built or published store does not match its plan or its own counts."""


def _read_back(split_dir: Path, listed: list[str], deep: bool) -> list[str]:
    """Problems of one split as LitData reads it: item count, and the uids at its ends (or of every item)."""
    import litdata

    if not listed:
        return [f"{split_dir.name} has items but lists none"] if (split_dir / "index.json").is_file() else []
    if not (split_dir / "index.json").is_file():
        return [f"{split_dir.name} lists {len(listed)} shapes but has no LitData index"]
    dataset = litdata.StreamingDataset(str(split_dir))
    count = len(dataset)
    if count != len(listed):
        return [f"{split_dir.name}: LitData reads {count} items, {split_dir.name}.txt lists {len(listed)}"]
    positions = range(count) if deep else sorted({0, count - 1})
    wrong = [(i, dataset[i]["uid"], listed[i]) for i in positions if dataset[i]["uid"] != listed[i]]
    return [f"{split_dir.name} item {i} is {got!r}, listed {want!r}" for i, got, want in wrong[:5]]


def verify_version(root: Path, plan: dict[str, Any], snapshot: Any = None, deep: bool = False) -> list[str]:
    """Problems of the store in ``root`` against ``plan`` (empty when it is whole).

    Args:
        root: a version folder (or a store made before versions).
        plan: the run's plan (:func:`.runs.make_plan`).
        snapshot: when given (a :class:`.publish.Snapshot`), the lists and failures must be exactly its own.
        deep: read every item back, not only the two ends of each split.
    """
    root = Path(root)
    planned = planned_uids(plan)
    split_of = {u: s for s, uids in planned.items() for u in uids}
    info = json.loads((root / STORE_INFO).read_text())
    report = json.loads((root / REPORT).read_text())
    listed = {s: read_uid_list(root / f"{s}.txt") if (root / f"{s}.txt").is_file() else [] for s in SPLITS}
    skipped = len(plan["problems"])  # report.json lists the files discovery skipped first, then failed shapes
    failed = [n["uid"] for n in report["failed"][skipped:]]
    problems = []
    if report["failed"][:skipped] != plan["problems"]:
        problems.append(f"{REPORT} does not list the {skipped} files discovery skipped")
    if info.get("run", {}).get("id") != plan["id"]:
        problems.append(f"{STORE_INFO} names plan {info.get('run', {}).get('id')}, the run's plan is {plan['id']}")
    places = Counter([u for s in SPLITS for u in listed[s]] + failed)
    twice = sorted(u for u, n in places.items() if n > 1)
    missing = sorted(set(split_of) - set(places))
    unplanned = sorted(set(places) - set(split_of))
    for what, uids in (("in more than one place", twice), ("missing", missing), ("not in the plan", unplanned)):
        if uids:
            problems.append(f"{len(uids)} shapes {what}: {uids[:5]}")
    for split in SPLITS:
        order = [u for u in planned[split] if u in set(listed[split])]
        if listed[split] != order:
            problems.append(f"{split}.txt is not the plan's {split} shapes in write order")
        if info.get("splits", {}).get(split, 0) != len(listed[split]):
            problems.append(f"{STORE_INFO} says {split} {info.get('splits', {}).get(split)}, "
                            f"{split}.txt lists {len(listed[split])}")  # fmt: skip
        problems += _read_back(root / split, listed[split], deep)
    if report.get("done") != sum(map(len, listed.values())):
        problems.append(f"{REPORT} says done {report.get('done')}, the lists hold {sum(map(len, listed.values()))}")
    if snapshot is not None:
        if listed != snapshot.written:
            problems.append("the lists differ from the staged records the store was built from")
        if failed != [n["uid"] for n in snapshot.failed]:
            problems.append("the failures differ from the staged failure notes the store was built from")
    return problems


def verify_store(store: str | Path, deep: bool = False) -> dict[str, Any]:
    """Verify a published store (``python -m data_engine verify``): counts, then the plan when it is known.

    Returns:
        ``{"root", "counts", "plan"}`` (``plan`` is ``None`` when the store carries none, e.g. a copy).

    Raises:
        FileNotFoundError: not a published store.
        patchalign3d.store_check.StoreMismatchError: item counts disagree with store_info.json or the lists.
        VerificationError: the store does not match its plan.
    """
    store = Path(store)
    root, counts = check_store(store)
    plan_id = json.loads((Path(root) / STORE_INFO).read_text()).get("run", {}).get("id")
    plan_path = store / PLANS / f"{plan_id}.json"
    if not plan_path.is_file():
        return {"root": root, "counts": counts, "plan": None}
    problems = verify_version(Path(root), json.loads(plan_path.read_text()), deep=deep)
    if problems:
        raise VerificationError(f"store {store} does not match its plan {plan_id}: " + "; ".join(problems))
    return {"root": root, "counts": counts, "plan": plan_id}
