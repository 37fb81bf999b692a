"""Reports of an evaluation: JSON-ready figures, the markdown table and pictures of the best and worst shapes."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patchalign3d.evaluation.averaging import partslip_average, release_batch_ciou
from patchalign3d.evaluation.dataset import EvalDataset
from patchalign3d.evaluation.metrics import IoUSummary
from patchalign3d.evaluation.protocols import Protocol
from patchalign3d.evaluation.rules import report_rules, rules_markdown

__all__ = ["build_report", "markdown_table", "render_extremes", "environment"]


def _pct(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def build_report(
    summary: IoUSummary, data: EvalDataset, *, name: str, root: Any, protocol: Protocol, unlabelled: str
) -> dict[str, Any]:
    """The figures of an evaluation as JSON-ready data (IoUs in percent; ``None`` = not scored).

    ``metric`` holds mIoU, cIoU (by the protocol's ``ciou`` rule; both rules' values beside it), PartSLIP's
    part-first average ``partslip_miou`` and which of them is the ``headline``; ``rules`` says which publisher's
    rule each figure follows (:func:`~patchalign3d.evaluation.rules.report_rules`).
    """
    partslip = partslip_average(summary, lambda i: (data.record(i).category, data.record(i).part_names))
    positions = data.release_positions()[summary.shape_index] if len(data) else []
    ciou_batches = release_batch_ciou(summary.shape_category, summary.shape_iou, positions, protocol.ciou_batch_size)
    ciou = ciou_batches if protocol.ciou == "release-batches" else summary.ciou
    per_part: dict[str, dict[str, list[float]]] = {}
    for shape_idx, part_idx, iou in summary.part_rows:
        rec = data.record(int(shape_idx))
        per_part.setdefault(rec.category, {}).setdefault(rec.part_names[int(part_idx)], []).append(iou)
    per_category = []
    for cat in data.categories:
        stats = summary.per_category.get(cat)
        parts = {p: _pct(float(np.mean(v))) for p, v in per_part.get(cat, {}).items()}
        per_category.append(
            {
                "category": cat,
                "num_shapes": stats["num_shapes"] if stats else 0,
                "miou": _pct(stats["miou"]) if stats else None,
                "partslip_miou": _pct(partslip.per_category.get(cat)),
                "parts": parts,
            }
        )
    shapes = [
        {"index": int(i), "uid": data.record(int(i)).uid, "category": data.categories[int(c)], "iou": _pct(v)}
        for i, c, v in zip(summary.shape_index, summary.shape_category, summary.shape_iou)
    ]
    report: dict[str, Any] = {
        "benchmark": name,
        "root": None if root is None else str(root),
        "dataset": {
            "type": type(data.dataset).__name__,
            "split": getattr(data.dataset, "split", None),
            "num_shapes": len(data),
            "categories": data.categories,
            # a partial copy scored with missing="skip": what was left out
            "missing": data.dataset.missing_policy,
            "skipped": [{"uid": uid, "absent": path} for uid, path in data.dataset.skipped],
            "find3d_subset_absent": data.subset_absent,
            "choices": data.dataset.choices(),
        },
        "protocol": {
            **protocol.to_dict(),
            "prompt_table": data.table.to_dict(),
            "unlabelled_effective": unlabelled,
            "prompt_collisions": data.collisions,
            "find3d_files": data.find3d.to_dict() if data.find3d is not None else None,
        },
        "metric": {
            "convention": summary.convention,
            "unit": "percent",
            "miou": _pct(summary.miou),
            "ciou": _pct(ciou),
            "ciou_rule": protocol.ciou,
            "ciou_categories": _pct(summary.ciou),
            "ciou_release_batches": _pct(ciou_batches),
            "partslip_miou": _pct(partslip.miou),
            "headline": protocol.headline_figure,
            "num_shapes": summary.num_shapes,
            "num_scored": summary.num_scored,
        },
        "per_category": per_category,
        "shapes": shapes,
        "rules": report_rules(protocol, data, unlabelled),
    }
    report["markdown"] = markdown_table(report)
    return report


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def markdown_table(report: Mapping[str, Any]) -> str:
    """One row per category (shapes, mIoU, per-part IoU), then the instance and class averages."""
    m = report["metric"]
    scored_cats = sum(1 for r in report["per_category"] if r["miou"] is not None)
    skipped = report["dataset"].get("skipped") or []
    lines = [
        f"**{report['benchmark']}** — IoU convention `{m['convention']}`, "
        f"{m['num_scored']}/{m['num_shapes']} shapes scored"
        + (f" ({len(skipped)} absent from this copy, left out)" if skipped else ""),
        "",
        "| category | shapes | mIoU | parts (IoU) |",
        "|---|---:|---:|---|",
    ]
    for row in report["per_category"]:
        parts = ", ".join(f"{p} {_fmt(v)}" for p, v in row["parts"].items())
        lines.append(f"| {row['category']} | {row['num_shapes']} | {_fmt(row['miou'])} | {parts} |")
    ciou_label = "class avg" if m.get("ciou_rule", "categories") == "categories" else "release per-batch avg"
    lines.append(f"| **mIoU** (instance avg) | {m['num_scored']} | **{_fmt(m['miou'])}** | |")
    lines.append(f"| **cIoU** ({ciou_label}) | {scored_cats} categories | **{_fmt(m['ciou'])}** | |")
    if "partslip_miou" in m:
        lines.append(
            f"| **PartSLIP mIoU** (per part, then category) | {scored_cats} categories | "
            f"**{_fmt(m['partslip_miou'])}** | |"
        )
    if report.get("rules"):
        lines += ["", rules_markdown(report["rules"])]
    return "\n".join(lines)


def render_extremes(
    data: EvalDataset,
    summary: IoUSummary,
    preds: Mapping[int, np.ndarray],
    out_dir: str | os.PathLike,
    k: int,
) -> list[str]:
    """Draw the ``k`` best and ``k`` worst scored shapes (prediction beside ground truth)."""
    from patchalign3d.viz import render_segmentation_png

    scored = [(float(v), int(i)) for i, v in zip(summary.shape_index, summary.shape_iou) if not math.isnan(v)]
    scored.sort()
    worst, best = scored[:k], scored[::-1][:k]
    out, paths = Path(out_dir), []
    for tag, chosen in (("best", best), ("worst", worst)):
        for rank, (iou, idx) in enumerate(chosen, 1):
            it = data[idx]
            safe = it.uid.replace("/", "_").replace(os.sep, "_")
            path = out / f"{tag}{rank:02d}_{safe}.png"
            render_segmentation_png(
                it.points,
                preds[idx].astype(np.int64),
                it.part_names,
                path,
                title=f"{it.category} {it.uid}: IoU {iou:.1f}",
                true_labels=it.labels,
                up_axis=data.protocol.up_axis,
            )
            paths.append(str(path))
    return paths


def environment() -> dict[str, str]:
    import patchalign3d

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "patchalign3d": getattr(patchalign3d, "__version__", "?"),
        "platform": platform.platform(),
    }

