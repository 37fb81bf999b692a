"""The embedded default, end to end on a CPU: ``patchalign3d demo [--out DIR] [--quick]``.

procedural part-labelled meshes -> data engine (renders, teacher features, labels) -> store -> stage 1 ->
stage 2 -> zero-shot evaluation on unseen shapes of the training categories and on held-out categories.

Each step runs the same code as the real thing (``data_engine.precompute``, the LightningCLI with the
``configs/demo/`` settings, ``patchalign3d.evaluation.evaluate``); the demo only chooses sizes and paths and
writes the configs it used next to the results. Nothing is downloaded: the real DINOv2 teacher and OpenCLIP
text tower are used when their weights are already cached, otherwise a randomly initialised teacher and
the offline MiniLM text encoder, and the summary says which.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_TEACHER = "vit_small_patch14_dinov2.lvd142m"
OPENCLIP_REPO = "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"
#: Targets of the demo (issue 5): mIoU on unseen shapes of training categories, and the wall time.
TARGET_SEEN_MIOU = 60.0
TARGET_MINUTES = 20.0


@dataclass(frozen=True)
class DemoSize:
    """How much the demo generates and trains."""

    train_per_category: int
    val_per_category: int
    test_per_category: int
    heldout_per_category: int
    stage1_epochs: int
    stage2_epochs: int
    num_pictures: int = 2


FULL = DemoSize(train_per_category=40, val_per_category=4, test_per_category=8, heldout_per_category=20,
                stage1_epochs=12, stage2_epochs=60)
QUICK = DemoSize(train_per_category=8, val_per_category=2, test_per_category=2, heldout_per_category=4,
                 stage1_epochs=2, stage2_epochs=4, num_pictures=1)


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _configs_dir() -> Path:
    configs = REPO_ROOT / "configs"
    if not (configs / "demo" / "stage1.yaml").is_file():
        raise FileNotFoundError(
            f"the demo reads its settings from configs/demo/ of a source checkout; not found under {configs}. "
            "Run it from a clone of the repository (pip install -e .)."
        )
    return configs


def _cached(repo_id: str, filenames: Sequence[str]) -> bool:
    """Whether any of ``filenames`` of a Hub repo is in the local cache (never downloads)."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in filenames)


def choose_teacher() -> dict[str, Any]:
    """The real DINOv2 ViT-S/14 weights when cached, else the same network with random weights."""
    pretrained = _cached(f"timm/{DEMO_TEACHER}", ["model.safetensors", "pytorch_model.bin"])
    return {"name": DEMO_TEACHER, "pretrained": pretrained}


def choose_text_encoder() -> dict[str, Any]:
    """OpenCLIP ViT-bigG-14 (the release's) when its weights are cached, else the offline MiniLM."""
    if _cached(OPENCLIP_REPO, ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]):
        return {"spec": "openclip:ViT-bigG-14/laion2b_s39b_b160k", "dim": 1280}
    return {"spec": "minilm", "dim": 384}


# -- steps ------------------------------------------------------------------------------------------------
def generate_shapes(out: Path, size: DemoSize, seed: int) -> dict[str, Path]:
    """Train/val shapes of the training categories, and test shapes of seen and held-out categories."""
    from data_engine.synthetic import HELDOUT_CATEGORIES, TRAIN_CATEGORIES, write_dataset

    roots = {"trainval": out / "shapes" / "trainval", "val": out / "shapes" / "val",
             "test_seen": out / "shapes" / "test_seen", "test_unseen": out / "shapes" / "test_unseen"}
    per = size.train_per_category + size.val_per_category
    paths = write_dataset(roots["trainval"], TRAIN_CATEGORIES, per, seed=seed, progress=True)
    # Distinct seeds make distinct shapes: the test shapes were never seen in any form during training.
    write_dataset(roots["test_seen"], TRAIN_CATEGORIES, size.test_per_category, seed=seed + 1, progress=True)
    write_dataset(roots["test_unseen"], HELDOUT_CATEGORIES, size.heldout_per_category, seed=seed + 2, progress=True)
    # The last val_per_category shapes of each category are the validation split; the val folder links them
    # so the evaluation can read them as a benchmark too.
    train, val = [], []
    for p in sorted(paths):
        index = int(p.stem.rsplit("_", 1)[1])
        (val if index >= size.train_per_category else train).append(p)
    roots["val"].mkdir(parents=True, exist_ok=True)
    for p in val:
        dest = roots["val"] / p.parent.name
        dest.mkdir(exist_ok=True)
        for f in (p, p.with_name(p.stem + ".parts.json")):
            if not (dest / f.name).exists():
                shutil.copy2(f, dest / f.name)
    (out / "shapes" / "train.txt").write_text("".join(f"{p.stem}\n" for p in train))
    (out / "shapes" / "val.txt").write_text("".join(f"{p.stem}\n" for p in val))
    return roots


def build_store(out: Path, roots: dict[str, Path], teacher: dict[str, Any]) -> tuple[Path, dict]:
    from data_engine.pipeline import load_config, precompute

    config = load_config(_configs_dir() / "data" / "demo.yaml")
    config.input.paths = [str(roots["trainval"])]
    config.input.uid = "stem"
    config.input.category_level = 0
    config.output = str(out / "store")
    config.split.train_file = str(out / "shapes" / "train.txt")
    config.split.val_file = str(out / "shapes" / "val.txt")
    config.teacher.name = teacher["name"]
    config.teacher.pretrained = teacher["pretrained"]
    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "configs" / "data.yaml").write_text(yaml.safe_dump(asdict(config), sort_keys=False))
    summary = precompute(config, progress=True)
    if not summary["written"].get("train"):
        raise RuntimeError(f"the data engine wrote no training shapes; see {out / 'store' / 'report.json'}")
    return Path(config.output), summary


def _stage_config(name: str, out: Path, store: Path, epochs: int, text: dict[str, Any], init_from: Path | None) -> Path:
    """``configs/demo/<name>.yaml`` with this run's paths, epochs and text encoder filled in."""
    cfg = yaml.safe_load((_configs_dir() / "demo" / f"{name}.yaml").read_text())
    root = out / name
    cfg["trainer"]["default_root_dir"] = str(root)
    cfg["trainer"]["max_epochs"] = epochs
    for cb in cfg["trainer"].get("callbacks", []):
        if cb["class_path"].endswith("ModelCheckpoint"):
            cb["init_args"]["dirpath"] = str(root / "checkpoints")
    logger = cfg["trainer"].get("logger")
    if isinstance(logger, dict):
        logger["init_args"]["save_dir"] = str(root)
    cfg["data"]["init_args"]["store"] = str(store)
    if init_from is not None:
        cfg["model"]["init_args"]["init_from"] = str(init_from)
        cfg["model"]["init_args"]["text_encoder"] = text["spec"]
        cfg["model"]["init_args"]["text_dim"] = text["dim"]
    path = out / "configs" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_stage(name: str, config: Path) -> Path:
    from patchalign3d.lit.cli import cli_main

    cli_main(["fit", "-c", str(config)])
    ckpt = Path(yaml.safe_load(config.read_text())["trainer"]["default_root_dir"]) / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise RuntimeError(f"{name} finished without writing {ckpt}")
    return ckpt


def chance_baseline(dataset) -> dict[str, float]:
    """Every point labelled with its category's most frequent part (counted on these very shapes, which
    favours the baseline), scored with the same ``release`` convention."""
    from patchalign3d.evaluation.metrics import shape_iou

    from collections import Counter

    shapes = list(dataset)
    # Shapes of one category may lack optional parts, so count by name, not by label index.
    counts: dict[str, Counter] = {}
    for s in shapes:
        labelled = s.labels[s.labels >= 0]
        counts.setdefault(s.category, Counter()).update(
            {s.part_names[k]: int(n) for k, n in enumerate(np.bincount(labelled, minlength=len(s.part_names)))})
    per_cat: dict[str, list[float]] = {}
    for s in shapes:
        top = counts[s.category].most_common(1)[0][0]
        pred = np.full(len(s.labels), s.part_names.index(top) if top in s.part_names else -1)
        iou = shape_iou(pred, s.labels, len(s.part_names), "release")
        if not math.isnan(iou):
            per_cat.setdefault(s.category, []).append(iou * 100)
    all_ious = [v for vs in per_cat.values() for v in vs]
    return {"miou": float(np.mean(all_ious)), "ciou": float(np.mean([np.mean(v) for v in per_cat.values()])),
            "per_category": {c: float(np.mean(v)) for c, v in per_cat.items()}}


def evaluate_split(name: str, root: Path, model, out: Path, num_pictures: int) -> dict[str, Any]:
    from patchalign3d.data import LabelledMeshes
    from patchalign3d.evaluation import evaluate

    dataset = LabelledMeshes(root, num_points=2048, seed=0)
    report = evaluate(dataset, model=model, json_path=out / "eval" / f"{name}.json",
                      markdown_path=out / "eval" / f"{name}.md", png_dir=out / "pictures" / name,
                      num_pictures=num_pictures, progress=True)
    return {"model": report["metric"], "chance": chance_baseline(dataset), "report": report}


def write_summary(out: Path, results: dict[str, Any]) -> Path:
    lines = ["# patchalign3d demo results", "",
             f"Teacher: `{results['teacher']['name']}` ({'pretrained' if results['teacher']['pretrained'] else 'RANDOM weights'}); "
             f"text encoder: `{results['text_encoder']['spec']}`; {results['machine']}.", "",
             "| split | shapes | model mIoU | model cIoU | chance mIoU | chance cIoU |", "|---|---|---|---|---|---|"]
    for split in ("val", "test_seen", "test_unseen"):
        r = results["splits"][split]
        lines.append(f"| {split} | {r['model']['num_scored']} | {r['model']['miou']:.1f} | {r['model']['ciou']:.1f} | "
                     f"{r['chance']['miou']:.1f} | {r['chance']['ciou']:.1f} |")
    lines += ["", "Per category (mIoU, model / chance):", ""]
    for split in ("test_seen", "test_unseen"):
        r = results["splits"][split]
        for row in r["report"]["per_category"]:
            cat = row["category"]
            lines.append(f"- {split} / {cat}: {row['miou']:.1f} / {r['chance']['per_category'].get(cat, float('nan')):.1f}")
    lines += ["", "Wall time per step (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["seconds"].items()), ""]
    lines += [f"Targets: test_seen mIoU >= {TARGET_SEEN_MIOU:.0f}: {results['targets']['seen_miou']}; "
              f"test_unseen beats chance: {results['targets']['unseen_beats_chance']}; "
              f"<= {TARGET_MINUTES:.0f} min: {results['targets']['time']}."]
    path = out / "results.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_demo(out: str | os.PathLike = "demo_out", quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Run every step; returns the metrics written to ``<out>/metrics.json``."""
    import torch

    from patchalign3d.model.checkpoint import export_checkpoint, load_model

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    size = QUICK if quick else FULL
    teacher, text = choose_teacher(), choose_text_encoder()
    if not teacher["pretrained"]:
        _say(f"DINOv2 weights ({DEMO_TEACHER}) are not cached: the teacher is RANDOMLY INITIALISED. Stage 1 then "
             "distils random features of the renders: the pipeline is real, the teacher is not.")
    if text["spec"] == "minilm":
        _say("OpenCLIP ViT-bigG-14 weights are not cached: part names are encoded with the offline MiniLM model.")
    torch.manual_seed(seed)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    def step(name: str, fn, *args):
        _say(f"step: {name}")
        t = time.perf_counter()
        result = fn(*args)
        seconds[name] = time.perf_counter() - t
        return result

    roots = step("generate", generate_shapes, out, size, seed)
    store, store_summary = step("data_engine", build_store, out, roots, teacher)
    ckpt1 = step("stage1", train_stage, "stage1", _stage_config("stage1", out, store, size.stage1_epochs, text, None))
    ckpt2 = step("stage2", train_stage, "stage2", _stage_config("stage2", out, store, size.stage2_epochs, text, ckpt1))
    exported = export_checkpoint(ckpt2, out / "patchalign3d_demo.pt")
    model = load_model(exported)
    splits = {}
    for split in ("val", "test_seen", "test_unseen"):
        splits[split] = step(f"evaluate_{split}", evaluate_split, split, roots[split], model, out, size.num_pictures)
    from patchalign3d.keypoints.synthetic import demo_keypoints, demo_report_lines

    keypoints = step("keypoints", demo_keypoints, model, roots, size.test_per_category)
    total = time.perf_counter() - t0
    seen, unseen = splits["test_seen"], splits["test_unseen"]
    results = {
        "quick": quick, "seed": seed, "size": asdict(size), "teacher": teacher, "text_encoder": text,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "seconds": {**seconds, "total": total},
        "store": {"path": str(store), "written": {k: len(v) for k, v in store_summary["written"].items()},
                  "failed": len(store_summary["failed"])},
        "checkpoints": {"stage1": str(ckpt1), "stage2": str(ckpt2), "released_format": str(exported)},
        "splits": {k: {"model": v["model"], "chance": v["chance"],
                       "report": {"per_category": v["report"]["per_category"]}} for k, v in splits.items()},
        "keypoints": keypoints,
        "targets": {
            "seen_miou": bool(seen["model"]["miou"] >= TARGET_SEEN_MIOU),
            "unseen_beats_chance": bool(unseen["model"]["miou"] > unseen["chance"]["miou"]),
            "time": bool(total <= TARGET_MINUTES * 60),
        },
    }
    (out / "metrics.json").write_text(json.dumps(results, indent=1))
    table = write_summary(out, results)
    with table.open("a") as f:
        f.write("\n".join(demo_report_lines(keypoints)) + "\n")
    _say("done in {:.1f} min".format(total / 60))
    for split in ("val", "test_seen", "test_unseen"):
        m, c = splits[split]["model"], splits[split]["chance"]
        _say(f"{split:>11}: mIoU {m['miou']:.1f} (chance {c['miou']:.1f}), cIoU {m['ciou']:.1f} (chance {c['ciou']:.1f})")
    print("\n".join(demo_report_lines(keypoints)[1:]), flush=True)
    _say(f"metrics: {out / 'metrics.json'}; table: {table}; pictures: {out / 'pictures'}; model: {exported}")
    return results


def demo_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="patchalign3d demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_out", help="output folder; a rerun reuses its generated shapes and store records")
    p.add_argument("--quick", action="store_true", help="about two minutes instead of about ten (smaller data, fewer epochs)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    # The demo only uses weights already on disk; offline mode makes the hub libraries say so at once instead
    # of trying the network (it must be set before huggingface_hub is imported, which happens below).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_demo(args.out, quick=args.quick, seed=args.seed)
    return 0
