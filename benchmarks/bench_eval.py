"""Evaluation throughput: shapes per second through ``evaluate()``, and the share of time outside the model.

    python benchmarks/bench_eval.py                      # release architecture, 48 ShapeNetPart-sized shapes
    python benchmarks/bench_eval.py --quick              # 16 shapes
    python benchmarks/bench_eval.py --root PATH --split test --limit 64   # on a real ShapeNetPart copy
    python benchmarks/bench_eval.py --benchmark scanobjectnn --points 20000   # raw ScanObjectNN-layout scans

The shapes are written to a temporary folder in the real ShapeNetPart layout (one ``.txt`` per shape, about
2,500 points, as in ``shapenetcore_partanno_segmentation_benchmark_v0_normal``), or in ScanObjectNN's raw layout
with parts (float32 ``.bin`` and ``_part.bin``, every point scored), so file reading and parsing are measured too. "Model forward" is the time spent inside the network's methods (``group``, the encoder,
``embed_patches``, ``patch_logits``, ``point_logits``); everything else (reading files, drawing points,
normalising, batching, label mapping, IoU) is "outside". Target: outside <= 20 % of the evaluation time.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from patchalign3d.data import build_dataset
from patchalign3d.data.scanobjectnn import PACKAGED_PART_LABELS, SCANOBJECTNN_CATEGORIES, read_part_xml
from patchalign3d.data.shapenetpart import SHAPENETPART_OFFSETS, SHAPENETPART_PARTS, SHAPENETPART_SYNSETS
from patchalign3d.evaluation import Protocol, benchmark_protocol, evaluate
from patchalign3d.model import patchalign3d_base, patchalign3d_tiny


def write_synthetic_shapenetpart(root: Path, num_shapes: int, points: int, seed: int = 0) -> Path:
    """ShapeNetPart-layout folder with ``num_shapes`` random shapes spread over the 16 categories (test split)."""
    rng = np.random.default_rng(seed)
    cats = list(SHAPENETPART_PARTS)
    (root / "train_test_split").mkdir(parents=True, exist_ok=True)
    (root / "synsetoffset2category.txt").write_text(
        "".join(f"{c}\t{SHAPENETPART_SYNSETS[c]}\n" for c in cats)
    )
    entries = []
    for i in range(num_shapes):
        cat = cats[i % len(cats)]
        n = int(points + rng.integers(-200, 200))
        xyz = rng.normal(size=(n, 3)) * np.array([1.0, 0.5, 0.3])
        normals = rng.normal(size=(n, 3))
        label = SHAPENETPART_OFFSETS[cat] + rng.integers(0, len(SHAPENETPART_PARTS[cat]), n)
        folder = root / SHAPENETPART_SYNSETS[cat]
        folder.mkdir(exist_ok=True)
        np.savetxt(folder / f"shape{i:04d}.txt", np.column_stack([xyz, normals, label]), fmt="%.6f")
        entries.append(f"shape_data/{SHAPENETPART_SYNSETS[cat]}/shape{i:04d}")
    for split in ("train", "val"):
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text("[]")
    (root / "train_test_split" / "shuffled_test_file_list.json").write_text(json.dumps(entries))
    return root


def write_synthetic_scanobjectnn(root: Path, num_shapes: int, points: int, seed: int = 0) -> Path:
    """ScanObjectNN raw-layout folder (``object_dataset_complete_with_parts_/``) with ``num_shapes`` random test
    scans over the 15 categories, part ids drawn from each category's XML."""
    rng = np.random.default_rng(seed)
    data = root / "object_dataset_complete_with_parts_"
    lines = []
    for i in range(num_shapes):
        cid = i % len(SCANOBJECTNN_CATEGORIES)
        cat = SCANOBJECTNN_CATEGORIES[cid]
        ids = np.array(sorted(read_part_xml(PACKAGED_PART_LABELS / f"{cat}_meta.xml")), np.float32)
        n = int(points + rng.integers(-points // 10, points // 10))
        table = rng.normal(size=(n, 11)).astype(np.float32)
        part = np.stack([np.zeros(n, np.float32), rng.choice(ids, n)], axis=1)
        (data / cat).mkdir(parents=True, exist_ok=True)
        for suffix, body in ((".bin", table), ("_part.bin", part)):
            np.concatenate([[np.float32(n)], body.reshape(-1)]).astype("<f4").tofile(data / cat / f"scan{i:04d}{suffix}")
        lines.append(f"scan{i:04d}.bin\t{cid}\tt")
    (data / "split_new.txt").write_text("\n".join(lines) + "\n")
    return root


class ForwardTimer:
    """Adds up wall time spent inside the model's forward stages (synchronising CUDA around each)."""

    STAGES = ("group", "embed_patches", "patch_logits", "point_logits")

    def __init__(self, model: torch.nn.Module) -> None:
        self.stages: dict[str, float] = {}
        self._cuda = next(model.parameters()).is_cuda
        for name in self.STAGES:
            setattr(model, name, self._wrap(getattr(model, name), name))
        model.encoder.forward = self._wrap(model.encoder.forward, "encoder")

    @property
    def seconds(self) -> float:
        return sum(self.stages.values())

    def _sync(self) -> None:
        if self._cuda:
            torch.cuda.synchronize()

    def _wrap(self, fn, stage: str):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            self._sync()
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            self._sync()
            self.stages[stage] = self.stages.get(stage, 0.0) + time.perf_counter() - t
            return out

        return timed


def run(
    root: Path,
    model: torch.nn.Module,
    protocol: Protocol,
    *,
    device: str,
    batch_size: int,
    split: str,
    limit: int | None,
    benchmark: str = "shapenetpart",
) -> dict:
    text_dim = model.text_dim
    opts = {"split": split, "limit": limit}
    names = sorted({p for parts in build_dataset(benchmark, root, **opts).category_parts().values() for p in parts})
    g = torch.Generator().manual_seed(0)
    text = {n: torch.nn.functional.normalize(torch.randn(text_dim, generator=g), dim=0) for n in names}
    run = functools.partial(evaluate, benchmark, root, model=model, text=text, protocol=protocol,
                            device=device, batch_size=batch_size)
    # warm-up on a few shapes (first-call allocations, thread pools)
    run(dataset_options={**opts, "limit": min(batch_size, limit or batch_size)})
    timer = ForwardTimer(model)
    t = time.perf_counter()
    report = run(dataset_options=opts)
    total = time.perf_counter() - t
    n = report["dataset"]["num_shapes"]
    return {
        "shapes": n,
        "seconds": round(total, 3),
        "shapes_per_second": round(n / total, 2),
        "forward_seconds": round(timer.seconds, 3),
        "outside_share": round(1 - timer.seconds / total, 4),
        "stages": {k: round(v, 3) for k, v in timer.stages.items()},
        "miou": report["metric"]["miou"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("base", "tiny"), default="base")
    p.add_argument("--benchmark", choices=("shapenetpart", "scanobjectnn"), default="shapenetpart")
    p.add_argument("--shapes", type=int, default=48)
    p.add_argument(
        "--points", type=int, default=None, help="points per synthetic shape (default: ShapeNetPart's ~2,500, "
        "ScanObjectNN 20,000)"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--root", default=None, help="a real copy of the benchmark instead of synthetic shapes")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = (patchalign3d_base() if args.model == "base" else patchalign3d_tiny()).eval().to(args.device)
    shapes = 16 if args.quick else args.shapes
    print(
        f"# bench_eval: {args.model} model, device {args.device}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}"
    )
    sonn = args.benchmark == "scanobjectnn"
    points = args.points or (20000 if sonn else 2500)
    write = write_synthetic_scanobjectnn if sonn else write_synthetic_shapenetpart
    protocols = (
        (("paper protocol (COPS's: every point scored, 2048 encoded)", benchmark_protocol("scanobjectnn")),)
        if sonn
        else (
            ("paper protocol (2048 drawn, with replacement)", benchmark_protocol("shapenetpart")),
            ("--points all (every point labelled, 2048 encoded)", Protocol(points=None)),
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else write(Path(tmp) / args.benchmark, shapes, points)
        limit = args.limit if args.root else None
        for label, proto in protocols:
            r = run(
                root,
                model,
                proto,
                device=args.device,
                batch_size=args.batch_size,
                split=args.split,
                limit=limit,
                benchmark=args.benchmark,
            )
            verdict = "OK" if r["outside_share"] <= 0.20 else "ABOVE TARGET"
            print(
                f"{label}: {r['shapes']} shapes in {r['seconds']} s = {r['shapes_per_second']} shapes/s; "
                f"model forward {r['forward_seconds']} s; outside the forward {100 * r['outside_share']:.1f} % "
                f"(target <= 20 %: {verdict})\n    forward stages (s): {r['stages']}"
            )


if __name__ == "__main__":
    main()
