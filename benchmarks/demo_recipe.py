"""The demo's recipe choices and its reported figures: levers on the validation split, then seeds on everything.

Three modes:

``tune``: each arm is ``patchalign3d demo --tune`` with some ``--set`` overrides; only the validation split of
the training categories is generated and scored (the held-out categories are never made, let alone looked
at), so every choice of the demo's recipe comes from shapes of the training categories alone. Arms that
change only stage 2 share their shapes, store and stage 1 with the base arm (same folder, same configs).

``seeds``: the demo exactly as a user runs it (no overrides), once per seed; prints the mean and spread of
every figure and the wall time. Run it under the shared lock on an otherwise idle machine.

``summary``: the same table from demo folders that already ran.

Usage::

    python benchmarks/demo_recipe.py tune --out /tmp/recipe --arms base rotate negatives-shape
    python benchmarks/demo_recipe.py seeds --out /tmp/seeds --seeds 0 1 2
    python benchmarks/demo_recipe.py summary /tmp/seeds/seed0 /tmp/seeds/seed1     # table of finished runs

Targets (the demo's): held-out categories >= 2x their chance mIoU (mean over bed and bicycle), seen
categories >= 60 mIoU, <= 20 minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

#: Levers tried on the validation split (name -> ``--set`` overrides). ``base`` is the demo as shipped.
ARMS: dict[str, list[str]] = {
    "base": [],
    "rotate": ["size.rotate=true"],
    "trainable-paper": ["stage2.model.init_args.trainable=paper"],
    "trainable-last2": ["stage2.model.init_args.trainable=last2"],
    "negatives-shape": ["stage2.model.init_args.negatives=shape"],
    "loss-release": ["stage2.model.init_args.loss=release"],
    "stage2-epochs-30": ["size.stage2_epochs=30"],
    "stage2-epochs-90": ["size.stage2_epochs=90"],
    "patches-128x16": ["stage1.model.init_args.arch_overrides={num_groups: 128, group_size: 16}",
                       "stage2.model.init_args.arch_overrides={num_groups: 128, group_size: 16}"],
}
#: Arms whose shapes differ from the base arm's get a folder of their own.
_OWN_SHAPES = ("size.rotate", "size.train_per_category", "size.val_per_category", "data.")


def _run_demo(out: Path, args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "patchalign3d.cli", "demo", "--out", str(out), *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads((out / "metrics.json").read_text())


def tune(out: Path, arms: list[str], extra: list[str]) -> list[dict]:
    rows = []
    for arm in arms:
        sets = ARMS[arm] + extra
        folder = out / (arm if any(s.startswith(_OWN_SHAPES) for s in ARMS[arm]) else "shared")
        m = _run_demo(folder, ["--tune", *[a for s in sets for a in ("--set", s)]])
        val = m["splits"]["val"]
        rows.append({"arm": arm, "set": sets, "val_miou": val["model"]["miou"], "val_chance": val["chance"]["miou"],
                     "minutes": m["seconds"]["total"] / 60})
        print(f"{arm}: val mIoU {rows[-1]['val_miou']:.1f} (chance {rows[-1]['val_chance']:.1f})", flush=True)
    print("\n| arm | overrides | val mIoU | val chance | minutes |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arm']} | `{' '.join(r['set']) or '(none)'}` | {r['val_miou']:.1f} | {r['val_chance']:.1f} | "
              f"{r['minutes']:.1f} |")
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
        "minutes": lambda m: m["seconds"]["total"] / 60,
    }
    summary = {}
    print(f"\n| figure | {' | '.join(f'seed {s}' for s in seed_list)} | mean | std |\n|---|{'---|' * len(seed_list)}---|---|")
    for name, get in figures.items():
        values = [get(m) for m in runs]
        mean, std = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
        summary[name] = {"values": values, "mean": mean, "std": std}
        fmt = "{:.2f}" if "/" in name else "{:.1f}"
        print(f"| {name} | {' | '.join(fmt.format(v) for v in values)} | {fmt.format(mean)} | {fmt.format(std)} |")
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("tune", help="levers on the validation split")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    t.add_argument("--set", dest="extra", action="append", default=[], help="added to every arm (e.g. size.*)")
    s = sub.add_parser("seeds", help="the demo as shipped, one run per seed")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r = sub.add_parser("summary", help="the table of finished runs (their metrics.json)")
    r.add_argument("runs", type=Path, nargs="+", help="demo output folders")
    args = p.parse_args()
    if args.mode == "tune":
        tune(args.out, args.arms, args.extra)
    elif args.mode == "seeds":
        seeds(args.out, args.seeds)
    else:
        summarise([json.loads((run / "metrics.json").read_text()) for run in args.runs])


if __name__ == "__main__":
    main()
