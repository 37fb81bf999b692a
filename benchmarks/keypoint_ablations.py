"""Keypoint ablations behind the defaults of ``patchalign3d.keypoints`` (BENCHMARKS.md, "Keypoints").

    python benchmarks/keypoint_ablations.py lift --demo DEMO_DIR [--kpnet ../shared/data/keypointnet] [--split val]
    python benchmarks/keypoint_ablations.py refine --demo DEMO_DIR [--kpnet ...] [--split val]
    python benchmarks/keypoint_ablations.py absence --demo DEMO_DIR [--split val]
    python benchmarks/keypoint_ablations.py demo --demo DEMO_DIR

- ``lift``: lifting with the perfect (oracle) pointer and with the feature pointer, every setting on the same
  renders: one keypoint per name against every cluster over a weight share; equation 3's readings
  (votes, coverage, constant); the orthographic orbit against the pinhole orbit with poles.
- ``refine``: zero-shot (every shape) and few-shot (the shapes after each category's 3 support shapes) keypoints
  where their fields peak against moved up a plane fitted to 6, 12 or 24 patch centres
  (:func:`~patchalign3d.keypoints.peaks.refine_peaks`): the share of keypoints on patch centres and IoU at
  0.01 ... 0.10; and the oracle cap (every ground-truth keypoint's nearest patch centre, before and after the
  same refinement).
- ``absence``: zero-shot IoU and the names found absent for a sweep of ``min_probability``.
- ``demo``: the demo's keypoint step again (its test splits, every method, lifting included) on a finished demo
  folder's stage-2 checkpoint, as ``results.md`` shows it.

Demo shapes are those of ``patchalign3d demo --out DEMO_DIR`` (``shapes/<split>``, each category's first 3 shapes
the few-shot support, the rest scored), the model its stage-2 checkpoint; ``--kpnet`` adds the real KeypointNet
chair (its OBJ, ``.pcd`` and annotations in one frame). Figures are IoU in percent (KeypointNet's metric).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from patchalign3d.data.io import load_mesh
from patchalign3d.keypoints import (
    FeaturePointer,
    KeypointPrototypes,
    OraclePointer,
    detect_keypoints,
    lift_keypoints,
)
from patchalign3d.keypoints.keypointnet import KeypointNet, keypoint_names_for
from patchalign3d.keypoints.lifting import render_views
from patchalign3d.keypoints.metrics import THRESHOLDS, KeypointIoU
from patchalign3d.keypoints.peaks import refine_peaks, share_on_centers
from patchalign3d.keypoints.scores import resolve_text, zero_shot_scores
from patchalign3d.keypoints.synthetic import (
    DEMO_SPLITS,
    _load,
    _shapes_by_category,
    absent_lines,
    demo_keypoints,
    summary_lines,
)
from patchalign3d.model.checkpoint import load_model

SHOTS = 3


def demo_model(demo: Path):
    ckpts = sorted((demo / "stage2" / "checkpoints").glob("*.ckpt"))
    if not ckpts:
        sys.exit(f"no stage-2 checkpoint under {demo / 'stage2' / 'checkpoints'}: run `patchalign3d demo --out {demo}`")
    return load_model(ckpts[-1])  # the Lightning checkpoint: it carries the sigmoid's bias


def demo_shapes(demo: Path, split: str, limit: int | None = None):
    """``[(category, support shapes, query shapes)]`` of a demo split (categories with keypoints)."""
    out = []
    for category, paths in sorted(_shapes_by_category(demo / "shapes" / split).items()):
        shapes = [s for s in (_load(p, 2048, 0) for p in paths) if s is not None]
        if len(shapes) > SHOTS:
            out.append((category, shapes[:SHOTS], shapes[SHOTS:][:limit]))
    return out


def kpnet_chair(root: Path):
    """The real chair as a demo-like shape: its 2048-point cloud (coordinates as stored), ground truth per name."""
    shape = KeypointNet(root, "chair", "train")[0]
    names = keypoint_names_for("chair", shape.semantic_ids.tolist())
    gt: dict[str, list[int]] = {}
    for sem, idx in shape.keypoints_by_semantic_id().items():
        gt.setdefault(names[sem], []).extend(idx.tolist())
    points = shape.points.astype(np.float32)
    return {"uid": shape.model_id, "category": "chair (KeypointNet)", "points": points, "mesh": load_mesh(shape.mesh_path),
            "gt": {n: np.unique(v) for n, v in gt.items()}, "keypoints": {n: points[v] for n, v in gt.items()},
            "centre": np.zeros(3), "diag": 1.0}


def row(metric: KeypointIoU, thresholds=(0.01, 0.02, 0.05, 0.10)) -> str:
    mean = metric.compute()["mean"]
    return " | ".join(f"{100 * mean[THRESHOLDS.index(t)]:.1f}" for t in thresholds)


def lifted(shape, names, pointer, renders, **options) -> tuple[np.ndarray, int]:
    res = lift_keypoints(None, names, pointer, renders=renders, **options)
    found = [res.keypoints[n] for n in names if len(res.keypoints[n])]
    if not found:
        return np.zeros(0, np.int64), 0
    xyz = (np.concatenate(found) - shape["centre"]) / shape["diag"]
    return np.unique(cKDTree(shape["points"]).query(xyz)[1]), len(xyz)


LIFT_SETTINGS = {  # every other option at lift_keypoints' default (weighting "votes", share 0.05)
    "one per name": dict(all_clusters=False),
    "every cluster (share >= 0)": dict(min_cluster_share=0.0),
    "every cluster, share >= 0.02": dict(min_cluster_share=0.02),
    "every cluster, share >= 0.05 (default)": dict(min_cluster_share=0.05),
    "every cluster, share >= 0.10": dict(min_cluster_share=0.10),
    "every cluster, share >= 0.20": dict(min_cluster_share=0.20),
    "weighting: coverage": dict(weighting="coverage"),
    "weighting: constant": dict(weighting="constant"),
}
PINHOLE_SETTINGS = ("one per name", "every cluster, share >= 0.05 (default)", "weighting: coverage")


def ablate_lift(sets, model, bank, resolution: int, patch_size: int) -> None:
    for label, shapes in sets:
        print(f"\n#### {label}: {len(shapes)} shapes, {resolution} px, patch {patch_size} px\n")
        print("| pointer | rig | setting | keypoints | IoU@0.01 | 0.02 | 0.05 | 0.10 |\n|---|---|---|---|---|---|---|---|")
        pointers = {"oracle": None, "feature": FeaturePointer(model, bank) if model is not None else None}
        for rig in ("orthographic", "pinhole"):
            metrics = {(p, s): KeypointIoU() for p in pointers for s in LIFT_SETTINGS}
            counts = dict.fromkeys(metrics, 0)
            seconds = 0.0
            for category, shape, vocabulary in shapes:
                renders = render_views(shape["mesh"], views=26, resolution=resolution, rig=rig)
                seconds += renders.seconds
                gt = np.concatenate(list(shape["gt"].values()))
                for p, pointer in pointers.items():
                    if p == "feature" and pointer is None:
                        continue
                    pointer = pointer or OraclePointer(shape["keypoints"])
                    for s, opts in LIFT_SETTINGS.items():
                        if rig == "pinhole" and s not in PINHOLE_SETTINGS:
                            continue
                        pred, n = lifted(shape, vocabulary, pointer, renders, patch_size=patch_size, **opts)
                        metrics[p, s].update(category, shape["points"], pred, gt)
                        counts[p, s] += n
            for (p, s), m in metrics.items():
                if m.num_gt:
                    print(f"| {p} | {rig} | {s} | {counts[p, s]} | {row(m)} |")
            print(f"| | {rig} | rendering, per shape | {seconds / max(len(shapes), 1):.2f} s | | | | |")
        sys.stdout.flush()


FIT_SIZES = (6, 12, 24)  # patch centres each peak's plane is fitted to (12: the default)


def _placements(points, peaks, labels, centers, centre_scores, group_size) -> dict[str, np.ndarray]:
    """The peaks on their centres and refined with every plane size (a peak off the centres moves as well)."""
    out = {"centres": peaks}
    for size in FIT_SIZES:
        out[f"fit {size}"] = refine_peaks(points, peaks, labels, centers, centre_scores, patch_size=group_size,
                                          fit_centres=size)
    return out


def ablate_refine(sets, model, bank) -> None:
    print("\n| shapes | method | placement | on patch centres | IoU@0.01 | 0.02 | 0.03 | 0.04 | 0.05 | 0.10 |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    thresholds = (0.01, 0.02, 0.03, 0.04, 0.05, 0.10)
    group_size = model.config.group_size
    for label, groups in sets:
        metrics: dict[tuple[str, str], KeypointIoU] = {}
        on: dict[tuple[str, str], list[float]] = {}

        def score(method, category, s, gt, centers, placed):
            for placement, pred in placed.items():
                metrics.setdefault((method, placement), KeypointIoU()).update(category, s["points"], np.unique(pred), gt)
                on.setdefault((method, placement), []).append(share_on_centers(pred, centers))

        for category, support, queries in groups:
            protos = KeypointPrototypes(model, refine=False).fit([s["points"] for s in support],
                                                                 [s["gt"] for s in support]) if support else None
            for s in support + queries:  # zero-shot and the cap on every shape; few-shot on the queries
                names = list(s["gt"])
                gt = np.concatenate(list(s["gt"].values()))
                sc = zero_shot_scores(s["points"], names, model, bank)
                k = detect_keypoints(s["points"], names, model=model, text=bank, refine=False, min_probability=None)
                score("zero-shot", category, s, gt, sc.centers,
                      _placements(s["points"], k.indices, k.labels, sc.centers, sc.patch_cosines, group_size))
                if protos is not None and not any(s is x for x in support):
                    f = protos.predict(s["points"], [n for n in names if n in protos.support])
                    score("few-shot", category, s, gt, sc.centers,
                          _placements(s["points"], f.indices, f.labels, sc.centers, f.field[sc.centers], group_size))
                # the oracle cap: each ground-truth keypoint's nearest patch centre, then refined with the name's field
                labels = np.concatenate([np.full(len(v), names.index(n)) for n, v in s["gt"].items()])
                peaks = sc.centers[np.linalg.norm(s["points"][gt][:, None] - s["points"][sc.centers][None], axis=-1).argmin(1)]
                score("oracle cap", category, s, gt, sc.centers,
                      _placements(s["points"], peaks, labels, sc.centers, sc.patch_cosines, group_size))
        for (method, placement), m in metrics.items():
            if m.num_gt:
                print(f"| {label} | {method} | {placement} | {100 * np.nanmean(on[method, placement]):.0f} % | "
                      f"{row(m, thresholds)} |")
        sys.stdout.flush()


def ablate_absence(groups, model, bank) -> None:
    print("\n| min_probability | IoU@0.05 | IoU@0.10 | names asked | truly absent | found absent | rightly |\n|---|---|---|---|---|---|---|")
    for threshold in (None, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9):
        metric, counts = KeypointIoU(), np.zeros(4, int)
        for category, support, queries in groups:
            vocabulary = sorted({n for s in support + queries for n in s["gt"]})
            for s in support + queries:  # zero-shot needs no support: every shape is scored
                k = detect_keypoints(s["points"], vocabulary, model=model, text=bank, min_probability=threshold)
                metric.update(category, s["points"], np.unique(k.indices), np.concatenate(list(s["gt"].values())))
                truly = [n not in s["gt"] for n in vocabulary]
                found = [n in k.absent for n in vocabulary]
                counts += [len(vocabulary), sum(truly), sum(found), sum(t and f for t, f in zip(truly, found))]
        print(f"| {threshold} | {row(metric, (0.05, 0.10))} | " + " | ".join(map(str, counts)) + " |")
        sys.stdout.flush()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("lift", "refine", "absence", "demo"))
    p.add_argument("--demo", type=Path, default=None, help="a `patchalign3d demo --out` folder (model and shapes)")
    p.add_argument("--split", default="val", help="demo split of shapes (val: the one settings are chosen on)")
    p.add_argument("--kpnet", type=Path, default=None, help="a KeypointNet folder with the chair of shared/data")
    p.add_argument("--limit", type=int, default=None, help="query shapes per category")
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--patch-size", type=int, default=7)
    args = p.parse_args()
    t0 = time.perf_counter()
    model = demo_model(args.demo) if args.demo else None
    if args.what == "demo":
        if model is None:
            sys.exit("demo needs --demo (a finished demo folder)")
        sizes = json.loads((args.demo / "manifest.json").read_text())["shapes"]
        report = demo_keypoints(model, {s: args.demo / "shapes" / s for s in DEMO_SPLITS},
                                min(sizes["test_per_category"], sizes["heldout_per_category"]))
        print("\n".join([*summary_lines(report, DEMO_SPLITS), "", *absent_lines(report, DEMO_SPLITS)]))
        print(f"\n{time.perf_counter() - t0:.0f} s")
        return
    groups = demo_shapes(args.demo, args.split, args.limit) if args.demo else []
    every = sorted({n for _, sup, qs in groups for s in sup + qs for n in s["gt"]})
    chair = kpnet_chair(args.kpnet) if args.kpnet else None
    every += sorted(set(chair["gt"]) - set(every)) if chair else []
    bank = resolve_text(None, every, model) if model is not None and every else None
    if args.what == "lift":
        sets = []
        if chair:
            sets.append(("KeypointNet chair", [(chair["category"], chair, list(chair["gt"]))]))
        if groups:
            sets.append((f"demo {args.split}", [(c, s, sorted({n for x in sup + qs for n in x["gt"]}))
                                                for c, sup, qs in groups for s in (sup + qs)[:args.limit]]))
        ablate_lift(sets, model, bank, args.resolution, args.patch_size)
    elif args.what == "refine":
        if model is None:
            sys.exit("refine needs --demo (the model)")
        sets = [(f"demo {args.split}", groups)]
        if chair:
            sets.append(("KeypointNet chair (zero-shot only)", [(chair["category"], [], [chair])]))
        ablate_refine(sets, model, bank)
    else:
        if model is None:
            sys.exit("absence needs --demo (the model)")
        ablate_absence(groups, model, bank)
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
