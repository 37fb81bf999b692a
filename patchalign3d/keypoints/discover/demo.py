"""The demo's unsupervised-keypoint step: both methods on the held-out and seen test shapes.

- Held-out categories (``test_unseen``): each category's shapes are split by uid, the first half for fitting
  (StableKeypoints' embeddings; the regressor) and the second half for scoring.
- Seen categories (``test_seen``): the first shapes of the category in the training folder fit, the test
  shapes are scored.
- The diffuser is trained once on the demo's store with ``patchalign3d/configs/demo/diffuser.yaml`` (the LightningCLI, as
  ``lightning fit`` runs it), on the training categories only, so on held-out categories its keypoints are
  zero-shot.

The report lands in ``metrics.json`` as ``keypoints.unsupervised.<embeddings|diffuser>.<split>`` with ``das``,
``das_random``, ``regression_error``, ``regression_error_random`` (and correlation, forward and backward
scores, per-category figures); pictures go to ``pictures/keypoints_unsupervised/``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from patchalign3d.keypoints.discover.evaluate import (
    CategoryTask,
    diffuser_method,
    embeddings_method,
    evaluate_method,
)
from patchalign3d.keypoints.discover.pictures import consistency_png
from patchalign3d.keypoints.discover.shapes import load_category, shape_files

#: Keypoints per shape (KeyPointDiffuser's and StableKeypoints' usual 10).
DEMO_K = 10
#: Training-folder shapes per seen category that fit the embeddings and the regressor.
SEEN_FIT_SHAPES = 8
#: Seen categories the quick demo scores (its figures are a smoke run's anyway).
QUICK_SEEN_CATEGORIES = 3
#: Shapes per picture.
PICTURE_SHAPES = 4
METHODS = ("embeddings", "diffuser")
#: EmbeddingKeypoints settings of the full demo: half the library's optimisation steps and no test-time copies
#: (each copy is one more pass of the model per shape), for the demo's time on a shared machine; on an earlier
#: demo model they scored held-out DAS 0.96 against 0.92 with the defaults (BENCHMARKS.md, "Keypoints nobody named").
DEMO_EMBEDDINGS = {"steps": 50, "tta": 0}
#: The quick demo's: a smoke run.
QUICK_EMBEDDINGS = {"steps": 10, "augmentations": 1, "tta": 0}


def demo_tasks(roots: Mapping[str, str | os.PathLike], fit_shapes: int = SEEN_FIT_SHAPES) -> dict[str, list[CategoryTask]]:
    """``{"test_unseen": [...], "test_seen": [...]}`` category tasks from the demo's shape folders (splits whose
    folder is missing, and categories with too few annotated shapes, are left out)."""
    tasks: dict[str, list[CategoryTask]] = {}
    if "test_unseen" in roots and Path(roots["test_unseen"]).is_dir():
        tasks["test_unseen"] = []
        for category, paths in shape_files(roots["test_unseen"]).items():
            shapes = [s for s in load_category(paths) if len(s.annotated.ids)]
            half = len(shapes) // 2
            if half >= 1:
                tasks["test_unseen"].append(CategoryTask(category, shapes[:half], shapes[half:]))
    if "test_seen" in roots and "trainval" in roots and Path(roots["test_seen"]).is_dir():
        train_files = shape_files(roots["trainval"])
        tasks["test_seen"] = []
        for category, paths in shape_files(roots["test_seen"]).items():
            shapes = load_category(list(train_files.get(category, []))[:fit_shapes] + list(paths))
            fit, test = shapes[: len(shapes) - len(paths)], shapes[len(shapes) - len(paths):]
            fit, test = [s for s in fit if len(s.annotated.ids)], [s for s in test if len(s.annotated.ids)]
            if fit and test:
                tasks["test_seen"].append(CategoryTask(category, fit, test))
    return {split: t for split, t in tasks.items() if t}


def train_demo_diffuser(backbone: str | os.PathLike, store: str | os.PathLike, config: str | os.PathLike,
                        out: str | os.PathLike, *, seed: int = 0, max_steps: int | None = None):
    """``lightning fit -c patchalign3d/configs/demo/diffuser.yaml`` on the demo's store and model; the trained module."""
    from patchalign3d.lit.cli import cli_main

    root = Path(out) / "diffuser"
    args = ["fit", "-c", str(config), "--seed_everything", str(seed), "--model.init_args.backbone", str(backbone),
            "--data.init_args.store", str(store), "--trainer.default_root_dir", str(root)]
    if max_steps is not None:
        args += ["--trainer.max_steps", str(max_steps)]
    cli = cli_main(args)
    cli.trainer.save_checkpoint(root / "diffuser.ckpt")  # whatever step the run ended on
    return cli.model.eval()


def demo_unsupervised(
    backbone: str | os.PathLike,
    roots: Mapping[str, str | os.PathLike],
    store: str | os.PathLike,
    out: str | os.PathLike,
    *,
    config: str | os.PathLike,
    quick: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Both methods on the demo's test splits: ``{"embeddings": {split: figures}, "diffuser": {...}, "k",
    "smoke_run", "pictures"}``, or ``{"skipped": why}``.

    ``quick`` (the quick demo) trains the diffuser for a few steps and optimises the embeddings briefly: the
    figures are a smoke run's.
    """
    from patchalign3d.model.checkpoint import load_model

    out = Path(out)
    tasks = demo_tasks(roots, fit_shapes=2 if quick else SEEN_FIT_SHAPES)
    if not tasks:
        return {"skipped": "no shapes with keypoints in their sidecars (delete the demo's shapes/ folder to regenerate them)"}
    if quick:  # a smoke run: a few seen categories, short optimisation, a few diffuser steps
        tasks = {split: ts[:QUICK_SEEN_CATEGORIES] if split == "test_seen" else ts for split, ts in tasks.items()}
    model = load_model(backbone)
    # No wall times in the report: the demo times its steps, and metrics.json must be the same on every run.
    report: dict[str, Any] = {"k": DEMO_K, "smoke_run": quick, "pictures": []}
    options = QUICK_EMBEDDINGS if quick else DEMO_EMBEDDINGS
    diffuser = train_demo_diffuser(backbone, store, config, out, seed=seed, max_steps=4 if quick else None)
    methods = {"embeddings": embeddings_method(model, DEMO_K, seed=seed, **options), "diffuser": diffuser_method(diffuser)}
    for name, method in methods.items():
        report[name] = {split: evaluate_method(ts, method, DEMO_K, seed=seed, keep_predictions=True)
                        for split, ts in tasks.items()}
        for task in tasks.get("test_unseen", []):
            shown = task.test[:PICTURE_SHAPES]
            kps = report[name]["test_unseen"]["predictions"][task.category][:PICTURE_SHAPES]
            title = f"{name}: the same {DEMO_K} keypoints on held-out {task.category} shapes" + (" (smoke run)" if quick else "")
            path = consistency_png([(s.points, k) for s, k in zip(shown, kps)],
                                   out / "pictures" / "keypoints_unsupervised" / f"{name}_{task.category}.png",
                                   title=title, labels=[s.uid for s in shown])
            report["pictures"].append(str(path.relative_to(out)))
        for split_report in report[name].values():
            for key in ("predictions", "fit_seconds", "predict_seconds_per_shape"):
                split_report.pop(key)
    return report


def demo_unsupervised_lines(report: Mapping[str, Any]) -> list[str]:
    """Lines for the demo's ``results.md``."""
    if "skipped" in report:
        return ["", f"Unsupervised keypoints: not scored: {report['skipped']}"]
    smoke = " **Smoke run (quick demo): these figures mean nothing.**" if report["smoke_run"] else ""
    lines = ["", f"Unsupervised keypoints (K = {report['k']}, no names, no labels; mean over categories; random: K "
                 "uniformly drawn surface points per shape, same protocol; control: K places fixed in the frame of "
                 "one training shape, which knows nothing of a shape but its alignment). The demo's shapes are "
                 f"aligned, so the control scores about as well as the methods: these figures do not show that a "
                 f"method finds the same places.{smoke}", "",
             "| method | split | DAS | random | control | regression error | random | control | correlation |",
             "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    for method in METHODS:
        for split, r in report.get(method, {}).items():
            lines.append(f"| {method} | {split} | {fmt(r['das'])} | {fmt(r['das_random'])} | {fmt(r['das_control'])} "
                         f"| {fmt(r['regression_error'])} | {fmt(r['regression_error_random'])} "
                         f"| {fmt(r['regression_error_control'])} | {fmt(r['correlation'])} |")
    lines += [""] + [f"![{Path(p).stem}]({p})" for p in report["pictures"]]
    return lines
