"""Another version of ``patchalign3d/api.py`` against this one, in one process, interleaved: same answers, same speed?

    git show main:patchalign3d/api.py > /tmp/api_main.py
    python benchmarks/bench_api_ab.py /tmp/api_main.py            # best of 8 rounds

For refactors of the inference path. The other file is loaded beside this checkout's package (it must import
only names the package still has), both versions run the same calls on the same full-size model (random
seeded weights, a random text bank), their outputs must be identical, and each call's CPU time on one thread
is taken (best of N, the versions in turn, each first in every other round), so that other jobs on a shared machine change the ratio least.
Figures: ``other/this`` per call; 1.00 means no change.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

import patchalign3d.api as this_api
from patchalign3d.model import patchalign3d_base
from patchalign3d.text import TextBank

NAMES = ["back", "seat", "leg", "arm"]


def load_other(path: str):
    spec = importlib.util.spec_from_file_location("patchalign3d_api_other", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", help="path of the other api.py")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    other = load_other(args.other)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = patchalign3d_base().eval()
    rng = np.random.default_rng(0)
    bank = TextBank(NAMES, F.normalize(torch.randn(len(NAMES), model.text_dim), dim=-1), {"text_dim": model.text_dim})
    one = rng.normal(size=(2048, 3)).astype(np.float32)
    many = list(rng.normal(size=(8, 2048, 3)).astype(np.float32))

    calls: dict[str, Callable[[object], object]] = {
        "segment, 1 cloud, fp32": lambda api: api.segment(one, NAMES, model=model, text=bank).point_logits,
        "segment, 1 cloud, bf16": lambda api: api.segment(one, NAMES, model=model, text=bank, dtype="bfloat16").point_logits,
        "segment, 8 clouds, fp32": lambda api: np.stack([s.point_logits for s in api.segment(many, NAMES, model=model, text=bank)]),
        "point_features, 1 cloud": lambda api: api.point_features(one, model=model).embeddings,
    }
    best = {(name, v): float("inf") for name in calls for v in ("other", "this")}
    with torch.inference_mode():
        for name, call in calls.items():
            if not np.array_equal(call(other), call(this_api)):
                raise SystemExit(f"{name}: the two versions give different outputs")
        for r in range(args.rounds):
            for name, call in calls.items():
                pair = [("other", other), ("this", this_api)]
                for version, api in pair if r % 2 == 0 else pair[::-1]:  # neither always runs first
                    start = time.process_time()
                    call(api)
                    best[name, version] = min(best[name, version], time.process_time() - start)
    print(f"outputs identical; CPU time on one thread, best of {args.rounds}")
    for name in calls:
        a, b = best[name, "other"], best[name, "this"]
        print(f"{name:<26} other {a * 1e3:8.1f} ms   this {b * 1e3:8.1f} ms   this/other {b / a:.3f}")


if __name__ == "__main__":
    main()
