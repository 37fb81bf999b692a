"""Stage-2 recipe ablations on the demo's validation split: SigLIP negatives and training-point sampling.

Arms (stage 2 only; every arm starts from the same stage-1 checkpoint):

* ``negatives``: every patch scored against all part names of the batch (``batch``) or only its shape's own
  (``shape``, as released);
* ``sampling``: a uniform random 2048 points per step (``random``) or the release's mask-aware FPS subset
  (``mask_aware``, at least 32 points per part, fixed per shape).

Everything else is the demo's (``patchalign3d/demo.py`` and ``configs/demo/``): the same procedural shapes and
splits, data-engine settings, stage 1, stage-2 settings and epochs, and the same evaluation (mIoU on the
validation shapes, ``release`` IoU convention). One change: the store keeps 5000 points per shape (Find3D's
count, which the release draws its 2048 from); with the demo's 2048 stored points both samplings would take
every point and the sampling arms would be the same run.

Usage::

    flock /work/cpu-heavy.lock python benchmarks/ablate_stage2.py --out ablation_out
    python benchmarks/ablate_stage2.py --out ablation_out --arms batch-random shape-random   # reuses shapes,
                                                                                             # store, stage 1
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import yaml

from patchalign3d import demo

REPO = Path(__file__).resolve().parents[1]
ARMS = {
    "batch-random": {"negatives": "batch", "sampling": "random"},
    "shape-random": {"negatives": "shape", "sampling": "random"},
    "batch-mask_aware": {"negatives": "batch", "sampling": "mask_aware"},
    "shape-mask_aware": {"negatives": "shape", "sampling": "mask_aware"},
}
STORE_POINTS = 5000


def build_store(out: Path, roots: dict[str, Path], teacher: dict) -> Path:
    """The demo's store settings (configs/data/demo.yaml and its splits), with 5000 points per shape."""
    from data_engine import load_config, precompute

    config = load_config(REPO / "configs" / "data" / "demo.yaml")
    config.input.paths = [str(roots["trainval"])]
    config.output = str(out / "store")
    config.mesh.num_points = STORE_POINTS
    config.split.train_file = str(out / "shapes" / "train.txt")
    config.split.val_file = str(out / "shapes" / "val.txt")
    config.teacher.name, config.teacher.pretrained = teacher["name"], teacher["pretrained"]
    precompute(config, progress=True)
    return Path(config.output)


def stage_config(name: str, root: Path, store: Path, epochs: int, text: dict, init_from: Path | None,
                 switches: dict | None = None, seed: int | None = None) -> Path:  # fmt: skip
    """``configs/demo/<name>.yaml`` with this run's folder, store, epochs, text encoder, switches and seed."""
    cfg = yaml.safe_load((REPO / "configs" / "demo" / f"{name}.yaml").read_text())
    if seed is not None:
        cfg["seed_everything"] = seed
    cfg["trainer"].update(default_root_dir=str(root), max_epochs=epochs, logger=False, enable_progress_bar=False)
    for cb in cfg["trainer"].get("callbacks", []):
        if cb["class_path"].endswith("ModelCheckpoint"):
            cb["init_args"]["dirpath"] = str(root / "checkpoints")
    cfg["data"]["init_args"]["store"] = str(store)
    if init_from is not None:
        cfg["model"]["init_args"].update(init_from=str(init_from), text_encoder=text["spec"], text_dim=text["dim"])
    for key, value in (switches or {}).items():
        section = "model" if key == "negatives" else "data"
        cfg[section]["init_args"][key] = value
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="ablation_out")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seed", type=int, default=0, help="seed of the shapes, the store and stage 1")
    parser.add_argument("--stage2-seed", type=int, default=0,
                        help="seed_everything of stage 2 (another value repeats the arms to see the run-to-run spread)")
    parser.add_argument("--quick", action="store_true", help="the demo's --quick sizes (a smoke test, not a result)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from patchalign3d.model.checkpoint import export_checkpoint, load_model

    out = Path(args.out).resolve()
    size, teacher, text = demo.QUICK if args.quick else demo.FULL, demo.choose_teacher(), demo.choose_text_encoder()
    torch.manual_seed(args.seed)
    roots = demo.generate_shapes(out, size, args.seed)
    store = build_store(out, roots, teacher)
    ckpt1 = out / "stage1" / "checkpoints" / "last.ckpt"
    if not ckpt1.is_file():
        ckpt1 = demo.train_stage("stage1", stage_config("stage1", out / "stage1", store, size.stage1_epochs, text, None))
    results_path = out / "ablation.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for arm in args.arms:
        t0 = time.perf_counter()
        name = arm if args.stage2_seed == 0 else f"{arm}@seed{args.stage2_seed}"
        root = out / name
        config = stage_config("stage2", root, store, size.stage2_epochs, text, ckpt1, ARMS[arm], args.stage2_seed)
        ckpt2 = demo.train_stage("stage2", config)
        model = load_model(export_checkpoint(ckpt2, root / "model.pt"))
        val = demo.evaluate_split("val", roots["val"], model, root, num_pictures=0)
        results[name] = {**ARMS[arm], "seed": args.stage2_seed, "val_miou": val["model"]["miou"], "val_ciou": val["model"]["ciou"],
                        "shapes": val["model"]["num_scored"], "stage2_seconds": time.perf_counter() - t0}  # fmt: skip
        results_path.write_text(json.dumps(results, indent=1))
        print(f"[ablation] {name}: val mIoU {results[name]['val_miou']:.1f}", flush=True)
    meta = {"teacher": teacher, "text_encoder": text, "store_points": STORE_POINTS, "size": size.__dict__}
    results_path.write_text(json.dumps({**results, "_setup": meta}, indent=1))
    print("| arm | negatives | sampling | val mIoU | val cIoU | stage 2 + eval (s) |")
    print("|---|---|---|---|---|---|")
    for arm, r in results.items():
        if not arm.startswith("_"):
            print(f"| {arm} | {r['negatives']} | {r['sampling']} | {r['val_miou']:.1f} | {r['val_ciou']:.1f} | "
                  f"{r['stage2_seconds']:.0f} |")


if __name__ == "__main__":
    main()
