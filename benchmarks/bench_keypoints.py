"""Speed of keypoint detection per shape, each mode as a ratio to one segment() call on the same shape.

    python benchmarks/bench_keypoints.py            # full-size model (the release's architecture, random weights)
    python benchmarks/bench_keypoints.py --quick    # fewer repeats, 12 views for lifting

Figures, all taken in this one run on one procedural chair (mesh; 2048 surface points); segment(), zero-shot
and few-shot are timed round-robin (best of the rounds) so that a busy spell of the machine hits them alike:
- zero-shot detect_keypoints / segment(), at point resolution (default) and on patch centres (refine=False)
  (target <= 1.5)
- few-shot KeypointPrototypes.predict / segment(), where its field peaks (default) and moved up the local plane
  (refine=True) (fit on 3 shapes excluded, reported apart)
- lifting (FeaturePointer, ZeroKey's 26 views) / segment(), split into render, pointer, back-projection and
  clustering
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from data_engine.synthetic import make_shape
from patchalign3d.api import segment
from patchalign3d.keypoints import FeaturePointer, KeypointPrototypes, detect_keypoints
from patchalign3d.model import patchalign3d_base
from patchalign3d.text import TextBank

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks, also when imported
from bench_segment import race

NAMES = ["leg end", "seat corner", "top corner of the chair back"]


def best_of(fn, repeats: int, warmup: int = 1) -> tuple[float, object]:
    """Best wall time over ``repeats`` runs (the run least disturbed by other tenants) and the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 5 if args.quick else 15
    views = 12 if args.quick else 26
    torch.manual_seed(0)
    model = patchalign3d_base().eval()
    g = torch.Generator().manual_seed(0)
    bank = TextBank(NAMES, torch.nn.functional.normalize(torch.randn(len(NAMES), 1280, generator=g), dim=-1), {})
    shape = make_shape("chair", 0)
    points = detect_keypoints(shape.mesh, NAMES[:1], model=model, text=bank).points  # the 2048 surface samples

    support = [make_shape("chair", s) for s in (1, 2, 3)]
    anns = [{"leg end": np.asarray(s.keypoints["leg end"], np.float32),
             "seat corner": np.asarray(s.keypoints["seat corner"], np.float32)} for s in support]
    protos = KeypointPrototypes(model)
    t_fit, _ = best_of(lambda: protos.fit([s.mesh for s in support], anns), 1, warmup=0)
    refined = KeypointPrototypes(model, refine=True)
    refined.support, refined.instances, refined.num_shapes = protos.support, protos.instances, protos.num_shapes
    # random weights: every name "present" (the absence test is one comparison, not worth timing apart)
    opts = dict(model=model, text=bank, min_probability=None)
    best = race({
        "segment": lambda: segment(points, NAMES, model=model, text=bank),
        "zero_shot": lambda: detect_keypoints(points, NAMES, **opts),
        "zero_shot_centres": lambda: detect_keypoints(points, NAMES, refine=False, **opts),
        "few_shot": lambda: protos.predict(points),
        "few_shot_refined": lambda: refined.predict(points),
    }, repeats)
    t_seg, t_zero, t_few = best["segment"], best["zero_shot"], best["few_shot"]
    t_zero_c, t_few_r = best["zero_shot_centres"], best["few_shot_refined"]
    zero, few = detect_keypoints(points, NAMES, **opts), protos.predict(points)

    pointer = FeaturePointer(model, bank)
    t_lift, lifted = best_of(
        lambda: detect_keypoints(shape.mesh, NAMES[:2], mode="lift", pointer=pointer,
                                 views=views, resolution=512), 1, warmup=0)
    split = lifted.info["seconds"]

    figures = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "segment_s": t_seg,
        "zero_shot_s": t_zero, "zero_shot_ratio": t_zero / t_seg,
        "zero_shot_centres_s": t_zero_c, "zero_shot_centres_ratio": t_zero_c / t_seg,
        "few_shot_predict_s": t_few, "few_shot_ratio": t_few / t_seg, "few_shot_fit_3_shapes_s": t_fit,
        "few_shot_refined_s": t_few_r, "few_shot_refined_ratio": t_few_r / t_seg,
        "lift_s": t_lift, "lift_ratio": t_lift / t_seg, "lift_views": views, "lift_resolution": 512,
        "lift_split_s": split, "lift_names": 2,
        "keypoints_found": {"zero_shot": len(zero), "few_shot": len(few), "lift": len(lifted)},
    }
    print(json.dumps(figures, indent=1))
    print(f"\nsegment() one shape: {t_seg * 1e3:.1f} ms")
    print(f"zero-shot at point resolution (default): {t_zero * 1e3:.1f} ms = {t_zero / t_seg:.2f} x segment "
          "(target <= 1.5)")
    print(f"zero-shot on patch centres: {t_zero_c * 1e3:.1f} ms = {t_zero_c / t_seg:.2f} x segment")
    print(f"few-shot predict (default): {t_few * 1e3:.1f} ms = {t_few / t_seg:.2f} x segment "
          f"(fit on 3 shapes: {t_fit:.2f} s)")
    print(f"few-shot predict, refine=True: {t_few_r * 1e3:.1f} ms = {t_few_r / t_seg:.2f} x segment")
    print(f"lift ({views} views, 512 px, 2 names, FeaturePointer): {t_lift:.2f} s = {t_lift / t_seg:.0f} x segment; "
          + ", ".join(f"{k} {v:.2f} s ({v / sum(split.values()):.0%})" for k, v in split.items()))


if __name__ == "__main__":
    main()
