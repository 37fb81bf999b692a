"""Unsupervised keypoints: fit time per method, and prediction per shape as a ratio to one segment() call.

    python benchmarks/bench_discover.py --demo demo_out            # the demo's model, store and shapes
    python benchmarks/bench_discover.py --demo demo_out --demo-step  # also the demo's whole added step, timed alone
    python benchmarks/bench_discover.py                             # release-size architecture, random weights

Figures, all from this one run:
- embeddings fit: EmbeddingKeypoints.fit on 10 procedural beds (the demo's settings: 100 steps);
- diffuser fit: with --demo, ``lightning fit -c patchalign3d/configs/demo/diffuser.yaml`` on the demo's store (what the demo
  runs); without, fit_diffuser on the 10 beds for 150 steps;
- per shape, timed round-robin with segment() on the same 2048 points (best of the rounds, so that a busy spell
  of a shared machine hits them alike): embeddings predict (tta 1, the default, and tta 0) and diffuser predict;
- with --demo-step: the demo's unsupervised-keypoint step (both methods, every split, pictures) on the demo's
  folders, which is the time the demo adds;
- with --demo: the fixed-positions control on the demo's splits (K places fixed in the frame of one training
  shape, no model at all): what the shapes' alignment alone scores.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from data_engine.synthetic import make_shape
from patchalign3d.api import segment
from patchalign3d.keypoints.detect import as_shape
from patchalign3d.keypoints.discover import EmbeddingKeypoints, fit_diffuser
from patchalign3d.keypoints.discover.demo import DEMO_K, demo_tasks, demo_unsupervised, train_demo_diffuser
from patchalign3d.keypoints.discover.evaluate import evaluate_method, fixed_positions_method
from patchalign3d.model import patchalign3d_base
from patchalign3d.model.checkpoint import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks, also when imported
from bench_segment import race

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", default=None, help="a finished `patchalign3d demo --out DIR` folder")
    parser.add_argument("--demo-step", action="store_true", help="also time the demo's whole unsupervised step")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    demo = Path(args.demo) if args.demo else None
    if demo is not None:
        backbone = demo / "patchalign3d_demo.pt"
        model = load_model(backbone)
    else:
        model = patchalign3d_base().eval()
    beds = [as_shape(make_shape("bed", s).mesh, seed=0).points for s in range(11)]
    bank = np.random.default_rng(0).normal(size=(3, model.text_dim)).astype(np.float32)

    t = time.perf_counter()
    finder = EmbeddingKeypoints(model, 10).fit(beds[:10])
    fit_embeddings = time.perf_counter() - t
    finder_tta0 = EmbeddingKeypoints(model, 10, tta=0)
    finder_tta0.embeddings, finder_tta0.selected = finder.embeddings, finder.selected

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if demo is not None:
            diffuser = train_demo_diffuser(backbone, demo / "store", REPO / "patchalign3d" / "configs" / "demo" / "diffuser.yaml", tmp)
        else:
            diffuser = fit_diffuser(model, beds[:10], max_steps=150, recon_points=512)
    fit_diffuser_s = time.perf_counter() - t

    points = beds[10]
    best = race({
        "segment": lambda: segment(points, ["a", "b", "c"], model=model, text=bank),
        "embeddings": lambda: finder.predict(points),
        "embeddings_tta0": lambda: finder_tta0.predict(points),
        "diffuser": lambda: diffuser.predict(points),
    }, args.repeats)
    figures = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "model": str(backbone) if demo is not None else "patchalign3d_base (random weights)",
        "fit_s": {"embeddings_10_beds": round(fit_embeddings, 2),
                  "diffuser": round(fit_diffuser_s, 2),
                  "diffuser_on": "the demo store (patchalign3d/configs/demo/diffuser.yaml)" if demo is not None else "10 beds, 150 steps"},
        "segment_s": round(best["segment"], 4),
        "predict_s": {k: round(v, 4) for k, v in best.items() if k != "segment"},
        "predict_ratio_to_segment": {k: round(v / best["segment"], 2) for k, v in best.items() if k != "segment"},
    }
    roots = {name: demo / "shapes" / name for name in ("trainval", "test_seen", "test_unseen")} if demo else {}
    if demo is not None:
        keys = ("das", "das_random", "regression_error", "regression_error_random", "correlation", "correlation_random")
        figures["fixed_positions_control"] = {
            split: {k: r[k] for k in keys} for split, r in
            ((split, evaluate_method(tasks, fixed_positions_method(DEMO_K), DEMO_K)) for split, tasks in demo_tasks(roots).items())}
    if args.demo_step and demo is not None:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            report = demo_unsupervised(backbone, roots, demo / "store", tmp,
                                       config=REPO / "patchalign3d" / "configs" / "demo" / "diffuser.yaml")
            figures["demo_step_s"] = round(time.perf_counter() - t, 1)
        figures["demo_step_figures"] = {m: {s: {k: v for k, v in r.items() if k != "per_category"}
                                            for s, r in report[m].items()} for m in ("embeddings", "diffuser")}
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
