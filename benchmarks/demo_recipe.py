"""The demo's recipe choices and its reported figures: levers on the validation split, then seeds on everything.

Three modes:

``tune``: each arm is ``patchalign3d demo --tune`` with some ``--set`` overrides; only the validation split of
the training categories is generated and scored (the held-out categories are never made, let alone looked
at), so every choice of the demo's recipe comes from shapes of the training categories alone. Arms that
change only stage 2 share their shapes, store and stage 1 (one folder per set of other overrides). ``a+b``
runs two arms' overrides together; ``--stage2-seed`` repeats arms with another stage-2 seed (same shapes,
store and stage 1) to see the run-to-run spread. Every finished arm is added to ``<out>/tune.json`` and the
table of all of them is printed.

``seeds``: the demo exactly as a user runs it (no overrides), once per seed; prints the mean and spread of
every figure and the wall time. Run it under the shared lock on an otherwise idle machine.

``summary``: the same table from demo folders that already ran.

Usage::

    python benchmarks/demo_recipe.py tune --out /tmp/recipe --arms base negatives-shape augment-up
    python benchmarks/demo_recipe.py tune --out /tmp/recipe --arms base negatives-shape --stage2-seed 1
    python benchmarks/demo_recipe.py tune --out /tmp/recipe --arms points-5000 points-5000+sampling-mask_aware
    python benchmarks/demo_recipe.py seeds --out /tmp/seeds --seeds 0 1 2
    python benchmarks/demo_recipe.py summary /tmp/seeds/seed0 /tmp/seeds/seed1     # table of finished runs

Targets (the demo's): held-out categories >= 2x their chance mIoU (mean over bed and bicycle), seen
categories >= 60 mIoU, <= 20 minutes.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

#: Levers tried on the validation split (name -> ``--set`` overrides). ``base`` is the demo as shipped.
ARMS: dict[str, list[str]] = {
    "base": [],
    # shapes turned about the up axis: the validation shapes turn too, so this changes the task as well
    "rotate-shapes": ["size.rotate=true"],
    # training-only rotations about the up axis (stage 2; with stage 1 too)
    "augment-up": ["stage2.data.init_args.rotate_deg=180"],
    "augment-up-both": ["stage1.data.init_args.rotate_deg=180", "stage2.data.init_args.rotate_deg=180"],
    "augment-release": ["stage2.data.init_args.augment=release"],
    "trainable-paper": ["stage2.model.init_args.trainable=paper"],
    "trainable-last2": ["stage2.model.init_args.trainable=last2"],
    "negatives-shape": ["stage2.model.init_args.negatives=shape"],
    "loss-release": ["stage2.model.init_args.loss=release"],
    "stage2-epochs-30": ["size.stage2_epochs=30"],
    "stage2-epochs-90": ["size.stage2_epochs=90"],
    "stage1-epochs-24": ["size.stage1_epochs=24"],
    "patches-128x16": ["stage1.model.init_args.arch_overrides={num_groups: 128, group_size: 16}",
                       "stage2.model.init_args.arch_overrides={num_groups: 128, group_size: 16}"],
    # The release's mask-aware sampling needs more stored points than it draws (with 2048 stored, both rules
    # take every point): compare points-5000 with points-5000+sampling-mask_aware.
    "points-5000": ["data.mesh.num_points=5000"],
    "sampling-mask_aware": ["stage2.data.init_args.sampling=mask_aware"],
}


def arm_overrides(arm: str) -> list[str]:
    """``"a+b"`` -> the overrides of ``a`` then ``b``."""
    unknown = [a for a in arm.split("+") if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown} in {arm!r}; known: {sorted(ARMS)}")
    return [s for a in arm.split("+") for s in ARMS[a]]


def _stage2_only(override: str) -> bool:
    return override.startswith(("stage2.", "size.stage2_epochs=", "size.num_pictures="))


def run_folder(out: Path, overrides: list[str]) -> Path:
    """Runs whose shapes, store and stage 1 are the same share a folder (the demo reuses what matches)."""
    rest = sorted(s for s in overrides if not _stage2_only(s))
    return out / (re.sub(r"[^A-Za-z0-9._=-]+", "-", "_".join(rest)).strip("-") if rest else "shared")


def stage2_seed_overrides(seed: int) -> list[str]:
    """Another seed for stage 2 alone (its initial head, shuffle order and point draws)."""
    return [f"stage2.seed_everything={seed}", f"stage2.data.init_args.seed={seed}"]


def _run_demo(out: Path, args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "patchalign3d.cli", "demo", "--out", str(out), *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads((out / "metrics.json").read_text())


def tune(out: Path, arms: list[str], extra: list[str], stage2_seed: int | None = None) -> dict[str, dict]:
    path = out / "tune.json"
    rows = json.loads(path.read_text()) if path.is_file() else {}
    for arm in arms:
        sets = arm_overrides(arm) + extra
        if stage2_seed is not None:
            sets += stage2_seed_overrides(stage2_seed)
        m = _run_demo(run_folder(out, sets), ["--tune", *[a for s in sets for a in ("--set", s)]])
        val = m["splits"]["val"]
        label = arm if stage2_seed is None else f"{arm}@stage2-seed{stage2_seed}"
        rows[label] = {"set": sets, "val_miou": val["model"]["miou"], "val_ciou": val["model"]["ciou"],
                       "val_chance": val["chance"]["miou"], "shapes": val["model"]["num_scored"],
                       "minutes": m["seconds"]["total"] / 60, "stage2_minutes": m["seconds"]["stage2"] / 60}
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=1))
        r = rows[label]
        print(f"{label}: val mIoU {r['val_miou']:.1f} (chance {r['val_chance']:.1f})", flush=True)
    print("\n| arm | overrides | val mIoU | val chance | stage 2 (min) | run (min) |")
    print("|---|---|---|---|---|---|")
    for label, r in rows.items():
        sets = " ".join(r["set"]) or "(none)"
        print(f"| {label} | `{sets}` | {r['val_miou']:.1f} | {r['val_chance']:.1f} | "
              f"{r['stage2_minutes']:.1f} | {r['minutes']:.1f} |")
    return rows


def seeds(out: Path, seed_list: list[int]) -> dict:
    runs = [_run_demo(out / f"seed{s}", ["--seed", str(s)]) for s in seed_list]
    summary = summarise(runs)
    (out / "seeds.json").write_text(json.dumps(summary, indent=1))
    return summary


def summarise(runs: list[dict]) -> dict:
    """Mean and spread over runs of every reported figure (prints a markdown table)."""
    seed_list = [m["seed"] for m in runs]
    figures = {
        "val mIoU": lambda m: m["splits"]["val"]["model"]["miou"],
        "test_seen mIoU": lambda m: m["splits"]["test_seen"]["model"]["miou"],
        "test_seen chance": lambda m: m["splits"]["test_seen"]["chance"]["miou"],
        "held-out mIoU (mean of bed, bicycle)": lambda m: m["heldout"]["model_miou"],
        "held-out chance": lambda m: m["heldout"]["chance_miou"],
        "held-out / chance": lambda m: m["heldout"]["ratio"],
        **{f"{c} mIoU": (lambda m, c=c: m["splits"]["test_unseen"]["categories"][c]["model_miou"]) for c in ("bed", "bicycle")},
        **{f"{c} chance": (lambda m, c=c: m["splits"]["test_unseen"]["categories"][c]["chance_miou"]) for c in ("bed", "bicycle")},
        "windmill mIoU (hard)": lambda m: m["splits"]["test_hard"]["categories"]["windmill"]["model_miou"],
        "windmill chance": lambda m: m["splits"]["test_hard"]["categories"]["windmill"]["chance_miou"],
        "windmill / chance": lambda m: m["splits"]["test_hard"]["categories"]["windmill"]["ratio"],
        "minutes": lambda m: m["seconds"]["total"] / 60,
    }
    if all(isinstance(m.get("keypoints"), dict) and "test_seen" in m["keypoints"] for m in runs):
        for split in ("test_seen", "test_unseen"):
            for method in ("zero_shot", "few_shot", "chance"):
                for t in ("0.05", "0.10"):
                    figures[f"keypoint IoU@{t} {split} {method}"] = (
                        lambda m, s=split, k=method, t=t: m["keypoints"][s]["iou"][k][t])
    summary = {}
    print(f"\n| figure | {' | '.join(f'seed {s}' for s in seed_list)} | mean | std |\n|---|{'---|' * len(seed_list)}---|---|")
    for name, get in figures.items():
        values = [get(m) for m in runs]
        if None in values:  # a figure some run could not score (e.g. keypoints of a quick run)
            continue
        mean, std = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
        summary[name] = {"values": values, "mean": mean, "std": std}
        fmt = "{:.2f}" if "/" in name else "{:.1f}"
        print(f"| {name} | {' | '.join(fmt.format(v) for v in values)} | {fmt.format(mean)} | {fmt.format(std)} |")
    return summary


def _arm(value: str) -> str:
    try:
        arm_overrides(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return value


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("tune", help="levers on the validation split")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--arms", nargs="+", default=["base"], type=_arm,
                   help=f"of {', '.join(ARMS)}; a+b combines")
    t.add_argument("--set", dest="extra", action="append", default=[], help="added to every arm (e.g. size.*)")
    t.add_argument("--stage2-seed", type=int, default=None,
                   help="seed of stage 2 alone (default: the demo's)")
    s = sub.add_parser("seeds", help="the demo as shipped, one run per seed")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r = sub.add_parser("summary", help="the table of finished runs (their metrics.json)")
    r.add_argument("runs", type=Path, nargs="+", help="demo output folders")
    args = p.parse_args(argv)
    if args.mode == "tune":
        tune(args.out, args.arms, args.extra, args.stage2_seed)
    elif args.mode == "seeds":
        seeds(args.out, args.seeds)
    else:
        summarise([json.loads((run / "metrics.json").read_text()) for run in args.runs])


if __name__ == "__main__":
    main()
