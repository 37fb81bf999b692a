"""What is in a store, before spending GPU-days on it: ``python -m data_engine inspect STORE``.

Prints shapes per split and category, the part vocabulary with how many shapes carry each name, a histogram of
the seen fraction (share of a shape's points that at least one view sees), and the failures and warnings of
``report.json``; draws a PNG contact sheet of a few records: each shape's points coloured by the first three
principal components of their teacher features, beside the same points coloured by part label.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from patchalign3d.store_check import check_store, split_item_count

from .store import REPORT, SPLITS, STORE_INFO, decode_record, open_split, read_store_info

__all__ = ["contact_sheet", "feature_colors", "format_summary", "summarize_store"]

#: Bins of the seen-fraction histogram when a store's info does not carry one.
_BINS = 10


def _split_length(store: Path, split: str) -> int:
    return split_item_count(str(store), split) or 0


def _stats_from_items(store: Path) -> dict[str, Any]:
    """The statistics the data engine writes into ``store_info.json``, gathered from the items (older stores)."""
    categories: dict[str, Counter] = {}
    parts: Counter = Counter()
    seen = []
    for split in SPLITS:
        n = _split_length(store, split)
        categories[split] = Counter()
        if not n:
            continue
        dataset = open_split(store, split)
        for i in range(n):
            item = dataset[i]
            categories[split][str(item["category"])] += 1
            parts.update(json.loads(item["part_names"]))
            fraction = json.loads(item["meta"]).get("seen_fraction")
            if fraction is not None:
                seen.append(fraction)
    counts, edges = np.histogram(seen, bins=_BINS, range=(0.0, 1.0))
    return {"categories": {s: dict(sorted(c.items())) for s, c in categories.items()},
            "part_counts": dict(sorted(parts.items())),
            "seen_fraction": {"bin_edges": edges.tolist(), "counts": counts.tolist()}}  # fmt: skip


def summarize_store(store: str | os.PathLike) -> dict[str, Any]:
    """Everything ``inspect`` prints, as a dict (``info``, ``splits``, ``stats``, ``failed``, ``warnings``, and
    ``root``: the published version it was read from).

    Raises:
        FileNotFoundError: ``store`` is not a finished store (no ``store_info.json``).
        patchalign3d.store_check.StoreMismatchError: its item counts disagree with store_info.json or its lists.
    """
    store = Path(store)
    try:
        root, counts = check_store(store)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{store / STORE_INFO} not found: {store} is not a finished store (a run that has not published yet "
            "has none; see python -m data_engine precompute and publish)"
        ) from None
    root = Path(root)
    info = read_store_info(root)
    report = json.loads((root / REPORT).read_text()) if (root / REPORT).is_file() else {}
    stats = info.get("stats") or _stats_from_items(root)
    return {
        "store": str(store),
        "root": str(root),
        "info": {k: v for k, v in info.items() if k not in ("stats", "config", "part_names")},
        "splits": {s: counts.get(s, 0) for s in SPLITS},
        "stats": stats,
        "failed": report.get("failed", []),
        "warnings": report.get("warnings", []),
    }


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in rows]  # fmt: skip


def format_summary(summary: dict[str, Any], max_rows: int = 40) -> str:
    """The summary as text for a terminal."""
    info, stats, splits = summary["info"], summary["stats"], summary["splits"]
    teacher = f"{info.get('teacher')} ({'pretrained' if info.get('pretrained') else 'RANDOM weights'})"
    order = info.get("write_order") or {}
    lines = [
        f"store {summary['store']}",
        f"  teacher {teacher}, {info.get('feature_dim')}-d features; views: {info.get('views')} of "
        f"{info.get('resolution')} px; {info.get('num_points')} points per shape",
        f"  written {'in shuffled order, seed ' + str(order.get('seed')) if order.get('shuffled') else 'in uid order'}"
        f"; computed by {info.get('run', {}).get('nodes', 1)} node(s), plan {info.get('run', {}).get('id')}",
        "",
        "shapes per split: " + ", ".join(f"{s} {n}" for s, n in splits.items()),
    ]
    cats = sorted({c for per in stats["categories"].values() for c in per})
    if cats:
        rows = [["category", *SPLITS]] + [
            [c or "(none)", *(str(stats["categories"].get(s, {}).get(c, 0)) for s in SPLITS)] for c in cats
        ]
        lines += [f"categories ({len(cats)}):", *_table(rows[: max_rows + 1])]
        if len(rows) > max_rows + 1:
            lines.append(f"  ... and {len(rows) - max_rows - 1} more")
    parts = sorted(stats["part_counts"].items(), key=lambda kv: (-kv[1], kv[0]))
    lines += ["", f"part vocabulary ({len(parts)} names; shapes carrying each):"]
    lines += _table([["name", "shapes"]] + [[n, str(c)] for n, c in parts[:max_rows]])
    if len(parts) > max_rows:
        lines.append(f"  ... and {len(parts) - max_rows} more")
    hist = stats["seen_fraction"]
    top = max(hist["counts"]) or 1
    lines += ["", "seen fraction (share of a shape's points that some view sees):"]
    for lo, hi, n in zip(hist["bin_edges"][:-1], hist["bin_edges"][1:], hist["counts"]):
        lines.append(f"  {lo:.1f}-{hi:.1f} | {'#' * round(30 * n / top):<30} {n}")
    for name in ("failed", "warnings"):
        notes = summary[name]
        lines += ["", f"{name} ({len(notes)}):" if notes else f"{name}: none"]
        lines += [f"  {n['uid']}: {n['reason']}" for n in notes[:max_rows]]
        if len(notes) > max_rows:
            lines.append(f"  ... and {len(notes) - max_rows} more (report.json)")
    return "\n".join(lines)


def feature_colors(features: np.ndarray) -> np.ndarray:
    """``(N, D)`` features -> ``(N, 3)`` RGB in [0, 1]: their first three principal components, each stretched
    between its 2nd and 98th percentile."""
    x = np.asarray(features, dtype=np.float32)
    x = x - x.mean(0)
    _, vectors = np.linalg.eigh(x.T @ x)
    comps = x @ vectors[:, ::-1][:, :3]
    lo, hi = np.percentile(comps, 2, axis=0), np.percentile(comps, 98, axis=0)
    return np.clip((comps - lo) / np.maximum(hi - lo, 1e-8), 0.0, 1.0)


def _point_labels(masks: np.ndarray) -> np.ndarray:
    """``(K, N)`` bool -> ``(N,)`` first label of each point, -1 for none."""
    if masks.shape[0] == 0:
        return np.full(masks.shape[1], -1)
    return np.where(masks.any(0), masks.argmax(0), -1)


def contact_sheet(
    store: str | os.PathLike, path: str | os.PathLike, split: str = "train", num_records: int = 6, dpi: int = 90
) -> Path:
    """A PNG of the first ``num_records`` records of ``split`` (in write order, so a mix of categories).

    Each record is two panels: points coloured by the PCA of their features, and by part label (grey: none).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from patchalign3d.viz import draw_cloud, label_colors, part_colors

    store = Path(store)
    n = min(num_records, _split_length(store, split))
    if n == 0:
        raise ValueError(f"split {split!r} of {store} holds no records to draw")
    dataset = open_split(store, split)
    fig = plt.figure(figsize=(7.0, 2.8 * n))
    for row in range(n):
        rec = decode_record(dataset[row])
        pts = np.asarray(rec["points"], dtype=np.float64)[:, [0, 2, 1]]  # y-up store -> z-up matplotlib
        names, labels = rec["part_names"], _point_labels(rec["part_masks"])
        panels = [(feature_colors(rec["features"]), "teacher features (PCA)"),
                  (label_colors(labels, len(names)) / 255.0, "part labels")]  # fmt: skip
        for col, (colors, title) in enumerate(panels):
            ax = fig.add_subplot(n, 2, 2 * row + col + 1, projection="3d")
            seen = rec["meta"].get("seen_fraction")
            head = f"{rec['uid']} ({rec['category'] or 'no category'})" + (f", seen {seen:.0%}" if seen else "")
            draw_cloud(ax, pts, colors, f"{head}\n{title}" if col == 0 else title, size=2.0)
            ax.title.set_fontsize(8)
        if names:
            handles = [Patch(color=c, label=name) for c, name in zip(part_colors(len(names)), names)]
            fig.axes[-1].legend(handles=handles, loc="center left", bbox_to_anchor=(0.95, 0.5), fontsize=7,
                                frameon=False)  # fmt: skip
    fig.subplots_adjust(left=0.0, right=0.8, bottom=0.0, top=0.95, wspace=0.0, hspace=0.2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
