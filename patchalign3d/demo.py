"""The embedded default, end to end on a CPU: ``patchalign3d demo [--out DIR] [--quick] [--seed S]``.

procedural part-labelled meshes -> data engine (renders, teacher features, labels) -> store -> stage 1 ->
stage 2 -> zero-shot evaluation on unseen shapes of the training categories, on held-out categories made of
parts the training categories also have, and on a held-out category that shares almost no part names.

The same command on the same machine gives the same figures: shapes, the data engine, the loaders and their
workers, and training are seeded by ``--seed`` (Lightning's deterministic mode is on); only the wall times
differ from run to run. ``--set`` changes any setting for an experiment; ``--tune`` makes and scores the
validation split of the training categories only (the held-out categories are not even generated), which is
what every choice of the demo's recipe was made on.

Each step runs the same code as the real thing (``data_engine.precompute``, the LightningCLI with the
``patchalign3d/configs/demo/`` settings, ``patchalign3d.evaluation.evaluate``); the demo only chooses sizes and paths and
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
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from patchalign3d.command_line import EXIT_STATUS_HELP, run_command
from patchalign3d.output_paths import check_output_folder

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from data_engine.config import DataEngineConfig

DEMO_TEACHER = "vit_small_patch14_dinov2.lvd142m"
OPENCLIP_REPO = "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"
#: Targets of the demo: mIoU on unseen shapes of training categories, held-out categories' mIoU as a multiple
#: of their chance mIoU (mean over the held-out categories), and the wall time.
TARGET_SEEN_MIOU = 60.0
TARGET_HELDOUT_RATIO = 2.0
TARGET_MINUTES = 20.0
#: Evaluated splits: name -> what it holds (the hard category is reported on its own, not in the mean).
SPLITS = {
    "val": "validation shapes of the training categories",
    "test_seen": "new shapes of the training categories",
    "test_unseen": "held-out categories made of parts the training categories also have",
    "test_hard": "a held-out category that shares almost no part names with training",
}


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
    rotate: bool = False  # turn every shape by a random angle about the up axis


FULL = DemoSize(train_per_category=32, val_per_category=4, test_per_category=8, heldout_per_category=20,
                stage1_epochs=12, stage2_epochs=60)
# Small enough that the tests run it twice (determinism); its figures mean nothing.
QUICK = DemoSize(train_per_category=4, val_per_category=1, test_per_category=1, heldout_per_category=2,
                 stage1_epochs=2, stage2_epochs=3, num_pictures=1)
#: Wall minutes of a whole run on a 2-core CPU, for --help, the summary and the README (how and when measured:
#: BENCHMARKS.md, "The demo").
FULL_MINUTES = 8
QUICK_MINUTES = 2
#: Printed and written wherever a quick run's figures appear.
SMOKE_RUN_NOTE = (f"SMOKE RUN (--quick): too few shapes and epochs to learn anything, so these figures only show that "
                  f"every step runs. `patchalign3d demo --out demo_out` (about {FULL_MINUTES} minutes on 2 cores) "
                  "gives figures that mean something.")


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def demo_config(name: str) -> Traversable:
    """A config the demo ships inside the package (``"demo/stage1.yaml"``, ``"data/demo.yaml"``), read through
    ``importlib.resources`` so that an installed wheel has it as a source checkout does."""
    config = resources.files("patchalign3d").joinpath("configs", *name.split("/"))
    if not config.is_file():
        raise FileNotFoundError(f"the demo's config {name} is missing from the installed package; reinstall patchalign3d")
    return config


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


# -- settings ---------------------------------------------------------------------------------------------
def parse_settings(pairs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["stage2.model.init_args.trainable=paper", "size.stage2_epochs=40"]`` -> ``{section: {key: value}}``.

    Sections: ``size`` (a :class:`DemoSize` field), ``data`` (a data-engine setting, dotted), ``stage1`` and
    ``stage2`` (a dotted path into ``patchalign3d/configs/demo/stage<N>.yaml``). Values are read as YAML (``40``, ``true``,
    ``[a, b]``).
    """
    settings: dict[str, dict[str, Any]] = {"size": {}, "data": {}, "stage1": {}, "stage2": {}}
    fields = {f for f in DemoSize.__dataclass_fields__}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        section, _, rest = key.partition(".")
        if not sep or not rest or section not in settings:
            raise ValueError(f"--set {pair!r}: expected SECTION.KEY=VALUE with SECTION one of {sorted(settings)}")
        if section == "size" and rest not in fields:
            raise ValueError(f"--set {pair!r}: size has no field {rest!r}; fields: {sorted(fields)}")
        settings[section][rest] = raw if section == "data" else yaml.safe_load(raw)
    if settings["data"]:
        _check_data_settings(settings["data"])
    return settings


def _check_data_settings(overrides: dict[str, str]) -> None:
    """A ``data.*`` key or value the data engine does not take is refused before any shape is made."""
    from omegaconf.errors import OmegaConfBaseException

    from data_engine.config import load_config

    try:
        with resources.as_file(demo_config("data/demo.yaml")) as path:
            load_config(path, [f"{k}={v}" for k, v in overrides.items()])
    except OmegaConfBaseException as err:
        raise ValueError(f"--set data.{getattr(err, 'full_key', '')}: {str(err).splitlines()[0]}") from None


def _set_dotted(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for name in parents:
        cfg = cfg.setdefault(name, {})
    cfg[last] = value


# -- steps ------------------------------------------------------------------------------------------------
def _reset_if_changed(out: Path, manifest: dict[str, Any]) -> None:
    """Shapes and store records are reused by a rerun into the same folder only if they were made the same way."""
    path = out / "manifest.json"
    if path.is_file() and json.loads(path.read_text()) != manifest:
        _say(f"{out} holds shapes made with other settings: generating them again")
        for name in ("shapes", "store", "stage1", "stage2"):
            shutil.rmtree(out / name, ignore_errors=True)
    path.write_text(json.dumps(manifest, indent=1))


def generate_shapes(out: Path, size: DemoSize, seed: int, tune: bool = False) -> dict[str, Path]:
    """Train/val shapes of the training categories, and test shapes of seen and held-out categories
    (with ``tune``, train/val only)."""
    from data_engine.synthetic import (
        HARD_HELDOUT_CATEGORIES,
        HELDOUT_CATEGORIES,
        TRAIN_CATEGORIES,
        write_dataset,
    )

    roots = {"trainval": out / "shapes" / "trainval", "val": out / "shapes" / "val",
             "test_seen": out / "shapes" / "test_seen", "test_unseen": out / "shapes" / "test_unseen",
             "test_hard": out / "shapes" / "test_hard"}
    per = size.train_per_category + size.val_per_category
    paths = write_dataset(roots["trainval"], TRAIN_CATEGORIES, per, seed=seed, progress=True, rotate=size.rotate)
    if not tune:
        # Distinct seeds make distinct shapes: the test shapes were never seen in any form during training.
        tests = {"test_seen": (TRAIN_CATEGORIES, size.test_per_category, 1),
                 "test_unseen": (HELDOUT_CATEGORIES, size.heldout_per_category, 2),
                 "test_hard": (HARD_HELDOUT_CATEGORIES, size.heldout_per_category, 3)}
        for name, (categories, count, offset) in tests.items():
            write_dataset(roots[name], categories, count, seed=seed + offset, progress=True, rotate=size.rotate)
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


def data_config(out: Path, teacher: dict[str, Any], overrides: dict[str, str]) -> DataEngineConfig:
    """``patchalign3d/configs/data/demo.yaml`` with this run's folders, splits, teacher and ``data.*`` overrides."""
    from data_engine.pipeline import load_config

    with resources.as_file(demo_config("data/demo.yaml")) as path:
        config = load_config(path, [f"{k}={v}" for k, v in overrides.items()])
    config.input.paths = [str(out / "shapes" / "trainval")]
    config.input.uid = "stem"
    config.input.category_level = 0
    config.output = str(out / "store")
    config.split.train_file = str(out / "shapes" / "train.txt")
    config.split.val_file = str(out / "shapes" / "val.txt")
    config.teacher.name = teacher["name"]
    config.teacher.pretrained = teacher["pretrained"]
    return config


def build_store(out: Path, config: DataEngineConfig) -> tuple[Path, dict]:
    from data_engine.pipeline import precompute

    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "configs" / "data.yaml").write_text(yaml.safe_dump(asdict(config), sort_keys=False))
    summary = precompute(config, progress=True)
    if not summary["written"].get("train"):
        raise RuntimeError(f"the data engine wrote no training shapes; see {out / 'store' / 'report.json'}")
    return Path(config.output), summary


def _stage_config(name: str, out: Path, store: Path, epochs: int, text: dict[str, Any], init_from: Path | None,
                  seed: int, overrides: dict[str, Any]) -> Path:
    """``patchalign3d/configs/demo/<name>.yaml`` with this run's paths, epochs, seed, text encoder and overrides filled in."""
    cfg = yaml.safe_load(demo_config(f"demo/{name}.yaml").read_text())
    root = out / name
    cfg["seed_everything"] = seed
    cfg["trainer"]["default_root_dir"] = str(root)
    cfg["trainer"]["max_epochs"] = epochs
    for cb in cfg["trainer"].get("callbacks", []):
        if cb["class_path"].endswith("ModelCheckpoint"):
            cb["init_args"]["dirpath"] = str(root / "checkpoints")
    logger = cfg["trainer"].get("logger")
    if isinstance(logger, dict):
        logger["init_args"]["save_dir"] = str(root)
    cfg["data"]["init_args"]["store"] = str(store)
    cfg["data"]["init_args"]["seed"] = seed  # the shuffle order
    if init_from is not None:
        cfg["model"]["init_args"]["init_from"] = str(init_from)
        cfg["model"]["init_args"]["text_encoder"] = text["spec"]
        cfg["model"]["init_args"]["text_dim"] = text["dim"]
    for dotted, value in overrides.items():
        _set_dotted(cfg, dotted, value)
    path = out / "configs" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_stage(name: str, config: Path, reuse: bool = False) -> Path:
    """Train one stage with the LightningCLI; with ``reuse``, keep a finished run of the very same config
    (training is deterministic, so it would give the same weights)."""
    from patchalign3d.lit.cli import cli_main

    root = Path(yaml.safe_load(config.read_text())["trainer"]["default_root_dir"])
    ckpt, used = root / "checkpoints" / "last.ckpt", root / "config_used.yaml"
    if reuse and ckpt.is_file() and used.is_file() and used.read_text() == config.read_text():
        _say(f"{name}: reusing {ckpt} (same config, same store)")
        return ckpt
    # A previous run's last.ckpt would make Lightning write last-v1.ckpt and leave the stale one where we read.
    shutil.rmtree(root, ignore_errors=True)
    cli_main(["fit", "-c", str(config)])
    if not ckpt.is_file():
        raise RuntimeError(f"{name} finished without writing {ckpt}")
    shutil.copy2(config, used)
    return ckpt


def chance_baseline(dataset) -> dict[str, Any]:
    """Every point labelled with its own shape's largest part (an oracle for that one choice, so it favours
    the baseline), scored with the same ``release`` convention as the model."""
    from patchalign3d.evaluation.metrics import shape_iou

    per_cat: dict[str, list[float]] = {}
    for s in dataset:
        labelled = s.labels[s.labels >= 0]
        if not labelled.size:
            continue
        pred = np.full(len(s.labels), np.bincount(labelled, minlength=len(s.part_names)).argmax())
        iou = shape_iou(pred, s.labels, len(s.part_names), "release")
        if not math.isnan(iou):
            per_cat.setdefault(s.category, []).append(iou * 100)
    all_ious = [v for vs in per_cat.values() for v in vs]
    return {"miou": float(np.mean(all_ious)), "ciou": float(np.mean([np.mean(v) for v in per_cat.values()])),
            "per_category": {c: float(np.mean(v)) for c, v in per_cat.items()}}


def evaluate_split(name: str, root: Path, model, out: Path, num_pictures: int, by_category: bool = False,
                   smoke: bool = False) -> dict[str, Any]:
    """Model and chance on one split; with ``by_category`` also each category alone, with its own best and
    worst pictures under ``pictures/<split>/<category>/``. ``smoke``: the split's table opens with
    :data:`SMOKE_RUN_NOTE` (a quick demo's figures)."""
    from patchalign3d.data import LabelledMeshes
    from patchalign3d.evaluation import evaluate

    dataset = LabelledMeshes(root, num_points=2048, seed=0)
    report = evaluate(dataset, model=model, json_path=out / "eval" / f"{name}.json",
                      markdown_path=out / "eval" / f"{name}.md",
                      png_dir=None if by_category else out / "pictures" / name,
                      num_pictures=num_pictures, progress=True)
    if smoke:
        table = out / "eval" / f"{name}.md"
        table.write_text(f"{SMOKE_RUN_NOTE}\n\n{table.read_text()}")
    result = {"model": report["metric"], "chance": chance_baseline(dataset), "report": report, "categories": {}}
    for category in dataset.categories if by_category else ():
        subset = LabelledMeshes(root, num_points=2048, seed=0, categories=[category])
        sub = evaluate(subset, model=model, png_dir=out / "pictures" / name / category, num_pictures=1)
        chance = result["chance"]["per_category"][category]
        result["categories"][category] = {
            "shapes": sub["metric"]["num_scored"], "model_miou": sub["metric"]["miou"], "chance_miou": chance,
            "ratio": sub["metric"]["miou"] / chance,
            "part_names": sorted({n for r in subset.records for n in r.part_names}),
            "pictures": [str(Path(p).relative_to(out)) for p in sub["pictures"]],
        }
    return result


def heldout_mean(split: dict[str, Any]) -> dict[str, float]:
    """Mean over the split's categories of model and chance mIoU, and their ratio (the transfer target)."""
    cats = split["categories"].values()
    model = float(np.mean([c["model_miou"] for c in cats]))
    chance = float(np.mean([c["chance_miou"] for c in cats]))
    return {"model_miou": model, "chance_miou": chance, "ratio": model / chance}


def _training_part_names(out: Path) -> set[str]:
    names: set[str] = set()
    for side in (out / "shapes" / "trainval").rglob("*.parts.json"):
        names.update(json.loads(side.read_text())["part_names"])
    return names


def write_summary(out: Path, results: dict[str, Any]) -> Path:
    """``results.md``: the splits against chance, each held-out category with its pictures, the targets."""
    splits = results["splits"]
    lines = ["# patchalign3d demo results", "",
             f"Seed {results['seed']}{' (quick)' if results['quick'] else ''}. Teacher: `{results['teacher']['name']}` "
             f"({'pretrained' if results['teacher']['pretrained'] else 'RANDOM weights'}); text encoder: "
             f"`{results['text_encoder']['spec']}`; {results['machine']}.", "",
             *([f"> **{SMOKE_RUN_NOTE}**", ""] if results["quick"] else []),
             "Chance: every point labelled with its own shape's largest part. IoU: the `release` convention, all "
             "2048 points of each shape.", "",
             "| split | what | shapes | model mIoU | chance mIoU | model / chance |", "|---|---|---|---|---|---|"]
    for split, r in splits.items():
        m, c = r["model"]["miou"], r["chance"]["miou"]
        lines.append(f"| {split} | {SPLITS[split]} | {r['model']['num_scored']} | {m:.1f} | {c:.1f} | {m / c:.2f} |")
    trained = _training_part_names(out)
    for split, title in (("test_unseen", "Held-out categories"), ("test_hard", "The hard held-out category")):
        if split not in splits:
            continue
        lines += ["", f"## {title}", "", "| category | shapes | model mIoU | chance mIoU | model / chance | part names (*new*: never a training name) |",
                  "|---|---|---|---|---|---|"]
        for cat, r in splits[split]["categories"].items():
            names = ", ".join(n if n in trained else f"*{n}*" for n in r["part_names"])
            lines.append(f"| {cat} | {r['shapes']} | {r['model_miou']:.1f} | {r['chance_miou']:.1f} | "
                         f"{r['ratio']:.2f} | {names} |")
        if split == "test_unseen":
            h = results["heldout"]
            target = "smoke run: no target" if results["quick"] else f"target >= {TARGET_HELDOUT_RATIO:.0f}"
            lines += ["", f"Mean over the held-out categories: model {h['model_miou']:.1f}, chance {h['chance_miou']:.1f}, "
                          f"ratio **{h['ratio']:.2f}** ({target})."]
        for cat, r in splits[split]["categories"].items():
            lines += ["", f"{cat}: best and worst shape (prediction beside ground truth)", ""]
            lines += [f"![{cat} {Path(p).stem}]({p})" for p in r["pictures"]]
    lines += ["", "## Seen categories (test_seen, mIoU model / chance)", ""]
    r = splits["test_seen"] if "test_seen" in splits else splits["val"]
    for row in r["report"]["per_category"]:
        cat = row["category"]
        lines.append(f"- {cat}: {row['miou']:.1f} / {r['chance']['per_category'].get(cat, float('nan')):.1f}")
    lines += ["", "Wall time per step (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["seconds"].items()), ""]
    if results["quick"]:
        lines += ["Targets: a smoke run is not scored against the full demo's targets."]
    else:
        lines += ["Targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in results["targets"].items()) + "."]
    path = out / "results.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _targets(splits: dict[str, Any], heldout: dict[str, float] | None, total: float) -> dict[str, bool]:
    targets = {}
    if "test_seen" in splits:
        targets[f"test_seen mIoU >= {TARGET_SEEN_MIOU:.0f}"] = bool(splits["test_seen"]["model"]["miou"] >= TARGET_SEEN_MIOU)
    if heldout is not None:
        targets[f"held-out mIoU >= {TARGET_HELDOUT_RATIO:.0f} x chance"] = bool(heldout["ratio"] >= TARGET_HELDOUT_RATIO)
    targets[f"<= {TARGET_MINUTES:.0f} min"] = bool(total <= TARGET_MINUTES * 60)
    return targets


def run_demo(out: str | os.PathLike = "demo_out", quick: bool = False, seed: int = 0, tune: bool = False,
             settings: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run every step; returns the metrics written to ``<out>/metrics.json``.

    Args:
        out: output folder (a rerun with the same settings reuses its shapes and store records).
        quick: the smoke run (:data:`SMOKE_RUN_NOTE`: every step on little data, figures not meaningful).
        seed: seeds the shapes, the data engine, the loaders and training.
        tune: generate and score only the training categories' validation split (for choosing settings).
        settings: overrides from :func:`parse_settings`.
    """
    import torch

    from data_engine.pipeline import records_fingerprint
    from patchalign3d.model.checkpoint import export_checkpoint, load_model

    settings = settings or parse_settings([])
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    size = replace(QUICK if quick else FULL, **settings["size"])
    teacher, text = choose_teacher(), choose_text_encoder()
    if not teacher["pretrained"]:
        _say(f"DINOv2 weights ({DEMO_TEACHER}) are not cached: the teacher is RANDOMLY INITIALISED. Stage 1 then "
             "distils random features of the renders: the pipeline is real, the teacher is not.")
    if text["spec"] == "minilm":
        _say("OpenCLIP ViT-bigG-14 weights are not cached: part names are encoded with the offline MiniLM model.")
    shapes = {k: v for k, v in asdict(size).items() if k.endswith("_per_category") or k == "rotate"}
    store_config = data_config(out, teacher, settings["data"])
    # The records' own fingerprint, so a store of an older data engine (other camera angles, say) is remade
    # instead of refused.
    _reset_if_changed(out, {"seed": seed, "shapes": shapes, "store": records_fingerprint(store_config)})
    torch.manual_seed(seed)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    def step(name: str, fn, *args, **kwargs):
        _say(f"step: {name}")
        t = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds[name] = time.perf_counter() - t
        return result

    roots = step("generate", generate_shapes, out, size, seed, tune)
    store, store_summary = step("data_engine", build_store, out, store_config)
    ckpt1 = step("stage1", train_stage, "stage1", _stage_config(
        "stage1", out, store, size.stage1_epochs, text, None, seed, settings["stage1"]), reuse=True)
    ckpt2 = step("stage2", train_stage, "stage2", _stage_config(
        "stage2", out, store, size.stage2_epochs, text, ckpt1, seed, settings["stage2"]))
    exported = export_checkpoint(ckpt2, out / "patchalign3d_demo.pt")
    model = load_model(exported)
    splits = {}
    for split in ("val",) if tune else tuple(SPLITS):
        splits[split] = step(f"evaluate_{split}", evaluate_split, split, roots[split], model, out, size.num_pictures,
                             by_category=split in ("test_unseen", "test_hard"), smoke=quick)
    keypoints = None
    if not tune:  # keypoints are scored on test splits, which tuning never looks at
        from patchalign3d.keypoints.discover.demo import demo_unsupervised, demo_unsupervised_lines
        from patchalign3d.keypoints.synthetic import demo_keypoints, demo_report_lines

        keypoints = step("keypoints", demo_keypoints, model, roots, min(size.test_per_category, size.heldout_per_category))
        with resources.as_file(demo_config("demo/diffuser.yaml")) as diffuser_config:
            keypoints["unsupervised"] = step("unsupervised_keypoints", demo_unsupervised, exported, roots, store, out,
                                             quick=quick, seed=seed, config=diffuser_config)
    total = time.perf_counter() - t0
    heldout = heldout_mean(splits["test_unseen"]) if "test_unseen" in splits else None
    results = {
        "quick": quick, "tune": tune, "seed": seed, "size": asdict(size), "settings": settings,
        "teacher": teacher, "text_encoder": text,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "seconds": {**seconds, "total": total},
        "store": {"path": str(store), "written": {k: len(v) for k, v in store_summary["written"].items()},
                  "failed": len(store_summary["failed"])},
        "checkpoints": {"stage1": str(ckpt1), "stage2": str(ckpt2), "released_format": str(exported)},
        "splits": {k: {"model": v["model"], "chance": v["chance"], "categories": v["categories"],
                       "report": {"per_category": v["report"]["per_category"]}} for k, v in splits.items()},
        "keypoints": keypoints,
        "heldout": heldout,
        "targets": _targets(splits, heldout, total),
    }
    (out / "metrics.json").write_text(json.dumps(results, indent=1))
    table = write_summary(out, results)
    if keypoints is not None:
        with table.open("a") as f:
            f.write("\n".join(demo_report_lines(keypoints) + demo_unsupervised_lines(keypoints["unsupervised"])) + "\n")
    _say(f"done in {total / 60:.1f} min")
    if quick:
        _say(SMOKE_RUN_NOTE)
    for split, r in splits.items():
        m, c = r["model"], r["chance"]
        _say(f"{split:>11}: mIoU {m['miou']:.1f} (chance {c['miou']:.1f}), cIoU {m['ciou']:.1f} (chance {c['ciou']:.1f})")
    if heldout is not None:
        _say(f"held-out categories: mIoU {heldout['model_miou']:.1f} = {heldout['ratio']:.2f} x chance"
             + (" (smoke run: meaningless)" if quick else ""))
    if keypoints is not None:
        print("\n".join(demo_report_lines(keypoints)[1:]), flush=True)
    _say(f"metrics: {out / 'metrics.json'}; table: {table}; pictures: {out / 'pictures'}; model: {exported}")
    return results


def demo_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="patchalign3d demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"A run takes about {FULL_MINUTES} minutes on a 2-core CPU (--quick: about "
                                       f"{QUICK_MINUTES}). {EXIT_STATUS_HELP.capitalize()}.")
    p.add_argument("--out", default="demo_out", help="output folder; a rerun reuses its generated shapes and store records")
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run: about {QUICK_MINUTES} minutes instead of about {FULL_MINUTES} on 2 cores; every step "
                        "runs on little data, so its figures mean nothing")
    p.add_argument("--seed", type=int, default=0, help="seeds shapes, data engine, loaders and training (default 0)")
    p.add_argument("--tune", action="store_true",
                   help="make and score only the validation split of the training categories (for choosing settings)")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change a setting: size.stage2_epochs=40, size.rotate=true, data.camera.num_views=8, "
                        "stage2.model.init_args.trainable=paper, ... (repeatable)")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        settings = parse_settings(args.settings)
    except ValueError as err:
        p.error(str(err))
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    # The demo only uses weights already on disk; offline mode makes the hub libraries say so at once instead
    # of trying the network (it must be set before huggingface_hub is imported, which happens below).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return run_command("patchalign3d demo", lambda: _run(args, settings))


def _run(args: argparse.Namespace, settings: dict[str, dict[str, Any]]) -> int:
    check_output_folder(args.out, "--out")
    run_demo(args.out, quick=args.quick, seed=args.seed, tune=args.tune, settings=settings)
    return 0
