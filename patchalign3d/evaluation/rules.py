"""Which publisher's rule each reported figure follows, in words and with the source file and line.

:func:`report_rules` lists the rules of one evaluation for its report (``report["rules"]``), so that a figure
can be compared with the table it should match. Line numbers refer to the repositories at the commits read:
the PatchAlign3D release fork (``dickoah/PatchAlign3D`` b269f6d9), Find3D (``ziqi-ma/Find3D`` f0801f75), PartSLIP++
(``zyc00/PartSLIP2`` 75dc0caa), COPS (``marco-garosi/COPS`` 749c595d) and ScanObjectNN (``hkust-vgd/scanobjectnn``
533e7e3b).
"""

from __future__ import annotations

from typing import Any

from patchalign3d.evaluation.dataset import EvalDataset
from patchalign3d.evaluation.protocols import Protocol, scores_encoded_only

__all__ = ["SOURCES", "report_rules", "rules_markdown"]

#: The publishers' code each rule follows.
SOURCES: dict[str, str] = {
    "release_iou": "dickoah/PatchAlign3D src/inference/eval.py:138-175 (compute_point_metrics)",
    "release_faust_iou": "dickoah/PatchAlign3D src/inference/eval.py:178-202 (compute_point_metrics_generic)",
    "release_ciou": "dickoah/PatchAlign3D src/inference/eval.py:288-296",
    "release_draw": "dickoah/PatchAlign3D src/datasets/shapenet.py:97-101",
    "find3d_iou": "ziqi-ma/Find3D model/evaluation/core.py:82-91",
    "find3d_zero_logit": "ziqi-ma/Find3D model/evaluation/core.py:44",
    "find3d_prompt_loop": "ziqi-ma/Find3D model/evaluation/core.py:83",
    "find3d_topk_verbatim": "ziqi-ma/Find3D model/data/data.py:411-414",
    "find3d_subset_flag": "ziqi-ma/Find3D model/evaluation/benchmark/eval_benchmark.py:129,132",
    "find3d_h5_glob": "ziqi-ma/Find3D model/data/data.py:358",
    "find3d_headline": "ziqi-ma/Find3D model/evaluation/benchmark/eval_benchmark.py:41-42,98-102,113-117",
    "cops_iou": "marco-garosi/COPS source/metrics/compute_metrics.py:166-184 (mean_iou)",
    "cops_scanobjectnn": "marco-garosi/COPS data/ScanObjectNN.py:28-44,117-122; tests/utils/get_dataset.py:23",
    "partslip_average": "zyc00/PartSLIP2 eval/semantic_eval.py:26-39",
}

_IOU = {
    "release": ("mean IoU over the parts present in the shape's ground truth", "release_iou"),
    "find3d": ("mean IoU over the parts present in the prediction or the ground truth", "find3d_iou"),
    "pointbert": ("mean IoU over all the shape's labels, a label with an empty union scoring 1", "cops_iou"),
    "partslip": ("mean IoU over the parts present in the ground truth, unlabelled points counted", "partslip_average"),
}


def _rule(figure: str, rule: str, source: str | None = None) -> dict[str, str]:
    out = {"figure": figure, "rule": rule}
    if source:
        out["source"] = SOURCES[source]
    return out


def report_rules(protocol: Protocol, data: EvalDataset, unlabelled: str) -> list[dict[str, str]]:
    """The rules of one evaluation, one ``{"figure", "rule", "source"}`` per choice that moves a figure."""
    text, key = _IOU[protocol.metric]
    if protocol.metric == "pointbert" and data.dataset.name == "faust":
        key = "release_faust_iou"
    rules = [
        _rule("per-shape IoU", f"{text} ({protocol.metric} convention)", key),
        _rule("miou", "mean of the per-shape IoUs over the scored shapes"),
        _rule("ciou", "mean over categories of their shapes' mean IoU")
        if protocol.ciou == "categories"
        else _rule(
            "ciou",
            f"the release's: per category, the mean of the category's mean in each batch of "
            f"{protocol.ciou_batch_size} shapes in the release's loader order, then the mean over categories",
            "release_ciou",
        ),
        _rule(
            "partslip_miou",
            "PartSLIP's: per part, the mean IoU over the shapes whose ground truth has it, points of no part "
            "counted whatever the unlabelled rule; then the mean over the category's parts; then over categories",
            "partslip_average",
        ),
        _rule(
            "unlabelled points",
            "a point of no part that is predicted as a part enlarges that part's union"
            if unlabelled == "count"
            else "points of no part are left out of every IoU",
        ),
        _rule("no-part answer", "on: a point whose every logit is at most 0 is no part (a zero logit column first)",
              "find3d_zero_logit")
        if protocol.none_if_negative
        else _rule("no-part answer", "off: every point takes one of the candidate parts"),
        _scored_points(protocol),
    ]
    table = data.table
    rules.append(_rule("headline", {"miou": "miou, the mean over shapes", "ciou": "ciou, the mean over categories",
                                     "partslip_miou": "partslip_miou, PartSLIP's part-first average"}[protocol.headline_figure],
                       "find3d_headline" if protocol.preset == "find3d" and protocol.headline else None))
    if table.verbatim:
        rules.append(_rule(
            "prompts",
            f"{table.name}: Find3D's sentences, not decorated by the prompt template; encoded as this package "
            f"encodes every prompt (lowercased, punctuation removed, averaged over the text templates "
            f"{protocol.text_templates!r}), where Find3D passes each sentence once to its own tokenizer",
            "find3d_topk_verbatim",
        ))
    else:
        rules.append(_rule("prompts", f"{table.name} table decorated by {protocol.prompt_template!r}"))
    if data.unscored:
        listed = "; ".join(f"{c}: {', '.join(p)}" for c, p in sorted(data.unscored.items()))
        rules.append(_rule("unscored parts", f"parts with no prompt are never predicted nor scored ({listed})",
                           "find3d_prompt_loop"))
    if protocol.subset == "find3d":
        rules.append(_rule("shapes", "Find3D's published subset (its --subset flag)", "find3d_subset_flag"))
    else:
        rules.append(_rule("shapes", "every shape of the split"))
    if data.find3d is not None:
        rules.append(_rule("Find3D row order", data.find3d.order, "find3d_h5_glob"))
    for name, value in data.dataset.choices().items():
        if isinstance(value, dict) and "rule" in value:
            rules.append({"figure": f"dataset: {name}", **value})
    return rules


def _scored_points(protocol: Protocol) -> dict[str, str]:
    if protocol.points is None:
        what = "every point of the file"
    else:
        draw = "with replacement" if protocol.replace else "without replacement unless too few"
        what = f"{protocol.points} points drawn {draw}, seeded per shape (seed {protocol.seed})"
    if protocol.normalize_before_sampling:
        what += ", the whole cloud normalised before the draw"
    if scores_encoded_only(protocol):
        what += (
            f"; under membership_release only the {protocol.max_points} points the encoder sees (a point it never "
            "encodes would get all-zero logits)"
        )
        return _rule("scored points", what, "release_draw")
    return _rule("scored points", what, "release_draw" if protocol.normalize_before_sampling else None)


def rules_markdown(rules: list[dict[str, Any]]) -> str:
    """The rules as a markdown list (for the report's table)."""
    return "\n".join(
        f"- {r['figure']}" + (f" = {r['value']}" if "value" in r else "") + f": {r['rule']}"
        + (f" [{r['source']}]" if r.get("source") else "")
        for r in rules
    )
