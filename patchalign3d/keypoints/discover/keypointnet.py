"""``patchalign3d evaluate keypointnet --detector discover-embeddings|discover-diffuser``: unsupervised keypoints
on KeypointNet, scored with DAS and regression error beside their random baselines.

Per category, the first ``fit_shapes`` shapes of the train split (with point clouds present) are the
training shapes (the embeddings are optimised on them; the regressor is fitted on them with their
annotations) and the chosen split is scored. Semantic ids are KeypointNet's own. Keypoint correlation needs
part labels per point, which KeypointNet's release does not have (KeyPointDiffuser brings ShapeNetPart's in
with ICP), so it is reported as null here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from patchalign3d.keypoints.discover.evaluate import (
    CategoryTask,
    diffuser_method,
    embeddings_method,
    evaluate_method,
)
from patchalign3d.keypoints.discover.metrics import Annotated
from patchalign3d.keypoints.discover.shapes import LabelledShape
from patchalign3d.keypoints.keypointnet import KeypointNet, KeypointNetShape

#: What KeyPointDiffuser claims on KeypointNet (``../shared/seeds/000_6ae066d57a4cfb03.txt``, its summary and
#: abstract; the per-category tables are not in that copy, so no figure is quoted).
PUBLISHED = ("KeyPointDiffuser (arXiv 2512.03450): the best DAS of the compared methods on 8 of 13 ShapeNet "
             "categories, 8 of 9 for keypoint correlation, '6 percentage points' more keypoint consistency than "
             "prior methods")


def as_labelled(shape: KeypointNetShape) -> LabelledShape:
    """A KeypointNet shape for the metrics: its cloud, no part labels, its keypoints by semantic id."""
    points = shape.points.astype(np.float32)
    annotated = Annotated(points[shape.point_indices], [str(int(s)) for s in shape.semantic_ids])
    return LabelledShape(uid=shape.key, category=shape.category, path=shape.pcd_path, points=points,
                         part_labels=np.full(len(points), -1, dtype=np.int64), part_names=[], annotated=annotated)


def evaluate_discovered(
    root: str | os.PathLike,
    *,
    categories: str | Sequence[str] | None = None,
    split: str = "test",
    model: Any = None,
    method: str = "embeddings",
    k: int = 10,
    diffuser: str | os.PathLike | None = None,
    fit_shapes: int = 20,
    limit: int | None = None,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Score ``method`` (``"embeddings"`` or ``"diffuser"``) on KeypointNet; the report, with its ``markdown``
    (:func:`patchalign3d.keypoints.benchmark.evaluate_keypointnet` writes the files).

    Args:
        diffuser: a KeyPointDiffuser checkpoint; without it, one is trained on each category's training shapes.
        fit_shapes: train-split shapes per category used for fitting.
        options: :class:`EmbeddingKeypoints` arguments, or :func:`fit_diffuser` ones for the diffuser.
    """
    from patchalign3d.api import _resolve_model

    if method not in ("embeddings", "diffuser"):
        raise ValueError(f"method must be 'embeddings' or 'diffuser', got {method!r}")
    scored = KeypointNet(root, categories, split)
    if len(scored) == 0:
        raise FileNotFoundError(f"no annotated shape of the {split} split has its point cloud under {Path(root) / 'pcds'}")
    tasks, skipped = [], {}
    for category in scored.categories:
        train = [as_labelled(s) for s in KeypointNet(root, [category], "train").shapes[:fit_shapes]]
        test = [as_labelled(s) for s in scored.shapes if s.category == category][:limit]
        if not train or not test:
            skipped[category] = "no train-split shapes with point clouds" if not train else f"no {split} shapes"
            continue
        tasks.append(CategoryTask(category, train, test))
    if not tasks:
        raise FileNotFoundError(f"no category has both train-split and {split}-split point clouds under {root}: {skipped}")
    if method == "embeddings":
        run = embeddings_method(_resolve_model(model), k, seed=seed, **options)
    elif diffuser is not None:
        from patchalign3d.keypoints.discover.diffuser import load_diffuser

        trained = load_diffuser(diffuser)
        k = int(trained.hparams.k)  # the random baseline and the report use the K it predicts
        run = diffuser_method(trained)
    else:
        from patchalign3d.keypoints.discover.data import fit_diffuser

        backbone = _resolve_model(model)
        run = lambda train: diffuser_method(fit_diffuser(backbone, [s.points for s in train], k=k, seed=seed, **options))(train)  # noqa: E731
    report = evaluate_method(tasks, run, k, seed=seed)
    report.update({"benchmark": "keypointnet", "detector": f"discover-{method}", "split": split, "root": str(root),
                   "fit_shapes": fit_shapes, "limit": limit, "skipped": skipped,
                   "missing": scored.missing, "num_missing": scored.num_missing,
                   "correlation_note": "null: KeypointNet has no per-point part labels",
                   "published": PUBLISHED})
    report["markdown"] = markdown_table(report)
    return report


def markdown_table(report: dict[str, Any]) -> str:
    """Per-category and mean DAS and regression error beside the random baseline."""
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"# KeypointNet, unsupervised keypoints: {report['detector']} (K = {report['k']})", "",
             f"Split `{report['split']}`; fitted on up to {report['fit_shapes']} train-split shapes per category. DAS: "
             "SkeletonMerger's forward and backward alignment, averaged; regression error: StableKeypoints' linear "
             "map, fraction of the bounding-box diagonal. Random: K uniformly drawn points per shape. Control: K "
             "places fixed in the frame of one training shape (no model; KeypointNet's shapes are aligned, so a "
             "method shows something only where it beats the control).", "",
             "| category | test shapes | DAS | random | control | regression error | random | control |",
             "|---|---|---|---|---|---|---|---|"]
    for cat, r in report["per_category"].items():
        lines.append(f"| {cat} | {r['test']} | {fmt(r['das'])} | {fmt(r['das_random'])} | {fmt(r['das_control'])} "
                     f"| {fmt(r['regression_error'])} | {fmt(r['regression_error_random'])} "
                     f"| {fmt(r['regression_error_control'])} |")
    lines.append(f"| **mean** | | **{fmt(report['das'])}** | {fmt(report['das_random'])} | {fmt(report['das_control'])} | "
                 f"**{fmt(report['regression_error'])}** | {fmt(report['regression_error_random'])} | "
                 f"{fmt(report['regression_error_control'])} |")
    lines += ["", f"Published: {report['published']}."]
    if report["skipped"]:
        lines += ["", "Not scored: " + "; ".join(f"{c} ({why})" for c, why in report["skipped"].items())]
    return "\n".join(lines) + "\n"
