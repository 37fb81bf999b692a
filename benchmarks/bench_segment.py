"""Speed of inference in float32 and bfloat16: FLOPs, the matmul roofline, throughput, overhead, agreement.

    python benchmarks/bench_segment.py              # full-size model (the release's architecture)
    python benchmarks/bench_segment.py --quick      # fewer repeats
    python benchmarks/bench_segment.py --compile    # also torch.compile: compile time and gain

Every figure that has a target is a ratio taken in this one run. Timings that are compared are interleaved
(one repeat of each in turn, best of N), so a burst of other work on a shared machine hits all of them alike.

- network forward (tokenizer + transformer + text head) at B=32, achieved FLOP/s over the measured matmul
  roofline of the same dtype                                                    (target >= 0.60, bf16 and fp32)
- bf16 labels agree with fp32 labels on real shapes, per shape                  (target >= 0.99)
- single-cloud segment() with a cached TextBank / bare network forward           (target <= 1.30)
- grouping (FPS + kNN) / fp32 network forward at 2048 points                      (target <= 0.10)

Real shapes come from ``../shared/data`` (ShapeNetPart .txt, the KeypointNet chair .pcd and its mesh) or
``$PATCHALIGN3D_SHARED_DATA``; without them the bundled example meshes are used. Weights are random (seeded)
and text embeddings random unit vectors: random networks give many near-ties between parts, the hard case
for agreement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from patchalign3d.api import segment, segment_mesh
from patchalign3d.model import PatchAlign3D, group_points, patchalign3d_base
from patchalign3d.model.inference import inference_copy
from patchalign3d.precision import cpu_bf16_features, resolve_dtype
from patchalign3d.text import TextBank

SHAPENETPART_NAMES = {
    "04225987": ("wheel", "deck", "belt for foot"),
    "04379243": ("desktop", "leg or support", "drawer"),
}
CHAIR_NAMES = ("back", "seat", "leg", "arm")
TARGETS = [
    ("ratio_bf16_network_vs_bf16_roofline", ">=", 0.60),
    ("ratio_fp32_network_vs_fp32_roofline", ">=", 0.60),
    ("min_bf16_label_agreement", ">=", 0.99),
    ("ratio_segment_vs_network_fp32", "<=", 1.30),
    ("ratio_segment_vs_network_bf16", "<=", 1.30),
    ("ratio_grouping_vs_network", "<=", 0.10),
]


def race(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Best wall time in seconds of each function, timed in turn: repeat r of every function, then r + 1."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def matmul(dtype: torch.dtype, n: int = 2048, device: str = "cpu") -> tuple[Callable[[], object], int]:
    """A square ``n``-GEMM and its FLOPs: the practical matmul peak of the machine."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    return (lambda: a @ b), 2 * n**3


def network_flops(model: PatchAlign3D, num_points: int = 2048) -> int:
    """Matmul FLOPs of one cloud through the network (tokenizer, transformer, text head).

    Attention runs through PyTorch's math backend here so that its two matmuls are counted too.
    """
    pts = torch.randn(1, num_points, 3)
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        p = model.group(pts)
        model.embed_patches(model.encoder(p.neighborhood, p.centers))
    return counter.get_total_flops()


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    bf16 = "+".join(cpu_bf16_features()) or "no bf16 matmul ISA"
    return (
        f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, ISA {torch.backends.cpu.get_cpu_capability()}"
        f" ({bf16}), torch {torch.__version__}"
    )


def real_shapes(root: Path | None) -> list[tuple[str, object, tuple[str, ...]]]:
    """(name, points or mesh path, part names): the shared real shapes, else the bundled examples."""
    if root is not None and root.is_dir():
        from patchalign3d.data.io import load_points

        shapes = [
            (
                f"shapenetpart/{f.parent.name}/{f.stem[:8]}",
                np.loadtxt(f)[:, :3].astype(np.float32),
                SHAPENETPART_NAMES[f.parent.name],
            )
            for f in sorted((root / "shapenetpart").glob("*/*.txt"))
            if f.parent.name in SHAPENETPART_NAMES
        ]
        pcd = sorted((root / "keypointnet" / "pcds").rglob("*.pcd"))
        mesh = sorted((root / "keypointnet" / "models").rglob("model_normalized.obj"))
        shapes += [(f"keypointnet/{p.stem[:8]}.pcd", load_points(p), CHAIR_NAMES) for p in pcd[:1]]
        shapes += [(f"keypointnet/{p.parents[1].name[:8]}.obj", p, CHAIR_NAMES) for p in mesh[:1]]
        if shapes:
            return shapes
    from patchalign3d.examples import available_examples, example_path

    names = {"chair": CHAIR_NAMES, "airplane": ("body", "wing", "tail", "engine"), "mug": ("handle", "cup")}
    return [(f"example:{n}", example_path(n), names.get(n, ("top", "bottom"))) for n in available_examples()]


def label_agreement(model: PatchAlign3D, shapes, seed: int = 1) -> dict[str, float]:
    """Per shape: fraction of points (and, for meshes, vertices and faces) whose bf16 label equals fp32's."""
    vocab = sorted({n for _, _, names in shapes for n in names})
    g = torch.Generator().manual_seed(seed)
    bank = TextBank(
        vocab,
        F.normalize(torch.randn(len(vocab), model.text_dim, generator=g), dim=-1),
        {"text_dim": model.text_dim},
    )
    out = {}
    for name, shape, parts in shapes:
        if isinstance(shape, np.ndarray):
            a, b = (
                segment(shape, list(parts), model=model, text=bank, dtype=d) for d in ("float32", "bfloat16")
            )
            out[name] = float((a.labels == b.labels).mean())
        else:
            a, b = (
                segment_mesh(shape, list(parts), model=model, text=bank, dtype=d)
                for d in ("float32", "bfloat16")
            )
            out[name] = float((a.labels == b.labels).mean())
            out[name + " (faces)"] = float((a.face_labels == b.face_labels).mean())
            out[name + " (vertices)"] = float((a.vertex_labels == b.vertex_labels).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (minutes)")
    parser.add_argument("--data", type=Path, default=None, help="real shapes (default ../shared/data)")
    parser.add_argument(
        "--agreement-models",
        type=int,
        default=1,
        help="also measure agreement over this many random models x 2 text banks (a distribution)",
    )
    parser.add_argument("--json", default=None, help="write the figures here too")
    args = parser.parse_args()
    reps = 3 if args.quick else 6
    data = args.data or Path(
        os.environ.get("PATCHALIGN3D_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    torch.manual_seed(0)
    model = patchalign3d_base().eval()
    bf16 = inference_copy(model, torch.bfloat16)
    rng = np.random.default_rng(0)
    out: dict[str, object] = {"machine": machine(), "auto_dtype_here": str(resolve_dtype("auto", "cpu"))[6:]}
    flops = network_flops(model)
    out["network_gflops_per_cloud"] = flops / 1e9

    names = list(CHAIR_NAMES)
    bank = TextBank(names, F.normalize(torch.randn(4, model.text_dim), dim=-1), {"text_dim": model.text_dim})
    with torch.inference_mode():
        # Batched: both rooflines, the bare network and the whole segment() call, in both dtypes, interleaved.
        b = args.batch
        ptsb = torch.from_numpy(rng.normal(size=(b, 2048, 3)).astype(np.float32))
        pb = model.group(ptsb)
        clouds = list(ptsb.numpy())
        (mm32, mm_flops), (mm16, _) = matmul(torch.float32), matmul(torch.bfloat16)
        t = race(
            {
                "roof_fp32": mm32,
                "roof_bf16": mm16,
                "net_fp32": lambda: model.embed_patches(model.encoder(pb.neighborhood, pb.centers)),
                "net_bf16": lambda: bf16.embed_patches(bf16.encoder(pb.neighborhood, pb.centers)),
                "seg_fp32": lambda: segment(
                    clouds, names, model=model, text=bank, dtype="float32", batch_size=b
                ),
                "seg_bf16": lambda: segment(
                    clouds, names, model=model, text=bank, dtype="bfloat16", batch_size=b
                ),
            },
            reps,
        )
        for d in ("fp32", "bf16"):
            roof = mm_flops / t[f"roof_{d}"]
            out[f"matmul_{d}_gflops"] = roof / 1e9
            out[f"network_{d}_clouds_per_s_b{b}"] = b / t[f"net_{d}"]
            out[f"ratio_{d}_network_vs_{d}_roofline"] = b * flops / t[f"net_{d}"] / roof
            out[f"segment_{d}_clouds_per_s_b{b}"] = b / t[f"seg_{d}"]
            out[f"ratio_{d}_segment_vs_{d}_roofline"] = b * flops / t[f"seg_{d}"] / roof
        out["speedup_bf16_vs_fp32_network"] = t["net_fp32"] / t["net_bf16"]
        out["speedup_bf16_vs_fp32_segment"] = t["seg_fp32"] / t["seg_bf16"]

        # One cloud: bare network vs the whole segment() call (cached TextBank), and grouping.
        cloud = rng.normal(size=(2048, 3)).astype(np.float32)
        pts1 = torch.from_numpy(cloud)[None]
        p1 = model.group(pts1)
        t = race(
            {
                "net_fp32": lambda: model.embed_patches(model.encoder(p1.neighborhood, p1.centers)),
                "net_bf16": lambda: bf16.embed_patches(bf16.encoder(p1.neighborhood, p1.centers)),
                "seg_fp32": lambda: segment(cloud, names, model=model, text=bank, dtype="float32"),
                "seg_bf16": lambda: segment(cloud, names, model=model, text=bank, dtype="bfloat16"),
                "group": lambda: model.group(pts1),
            },
            reps * 2,
        )
        for d in ("fp32", "bf16"):
            out[f"network_{d}_one_cloud_ms"] = t[f"net_{d}"] * 1e3
            out[f"segment_{d}_one_cloud_ms"] = t[f"seg_{d}"] * 1e3
            out[f"ratio_segment_vs_network_{d}"] = t[f"seg_{d}"] / t[f"net_{d}"]
        out["grouping_2048_ms"] = t["group"] * 1e3
        out["ratio_grouping_vs_network"] = t["group"] / t["net_fp32"]
        for n in (10_000, 100_000, 1_000_000):
            big = torch.from_numpy(rng.normal(size=(1, n, 3)).astype(np.float32))
            g = race(
                {"g": lambda: group_points(big, 128, 32, skip_near_origin=True)}, 1 if n >= 10**6 else 2, 0
            )
            out[f"grouping_{n}_ms"] = g["g"] * 1e3

        if args.compile:
            out.update(compile_figures(model, pb, p1, b, reps))

    shapes = real_shapes(data)
    out["agreement_shapes"] = (
        "shared real shapes"
        if shapes[0][0].startswith(("shapenetpart", "keypointnet"))
        else "bundled examples"
    )
    agreement = label_agreement(model, shapes)
    out["bf16_label_agreement"] = agreement
    out["min_bf16_label_agreement"] = min(agreement.values())
    if args.agreement_models > 1:
        out.update(agreement_distribution(shapes, args.agreement_models))

    width = max(map(len, out))
    for k, v in out.items():
        if isinstance(v, dict):
            print(k)
            for name, a in v.items():
                print(f"  {name:<{width - 2}}  {a:.4f}")
        else:
            print(f"{k:<{width}}  {v:.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    for key, op, bound in TARGETS:
        ok = out[key] >= bound if op == ">=" else out[key] <= bound
        print(f"target {key} {op} {bound}: {'met' if ok else 'MISSED'} ({out[key]:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


def agreement_distribution(shapes, models: int) -> dict[str, float]:
    """Per-shape agreement over ``models`` random models x 2 text banks: how often a shape falls below 99 %."""
    values = []
    for seed in range(models):
        torch.manual_seed(seed)
        model = patchalign3d_base().eval()
        for text_seed in (1, 2):
            values += [v for k, v in label_agreement(model, shapes, text_seed).items() if "(" not in k]
    values = np.array(values)
    return {
        "agreement_runs": float(len(values)),
        "agreement_mean": float(values.mean()),
        "agreement_min": float(values.min()),
        "agreement_share_below_0.99": float((values < 0.99).mean()),
    }


def compile_figures(model: PatchAlign3D, pb, p1, b: int, reps: int) -> dict[str, float]:
    """torch.compile of the bf16 network: compile time for B clouds and for one, and the speed-up."""
    eager = inference_copy(model, torch.bfloat16)
    compiled = inference_copy(model, torch.bfloat16, compile=True)
    out = {}
    for tag, p in ((f"b{b}", pb), ("one_cloud", p1)):
        start = time.perf_counter()
        compiled.encoder(p.neighborhood, p.centers)
        out[f"compile_bf16_{tag}_s"] = time.perf_counter() - start
        t = race(
            {
                "eager": lambda: eager.encoder(p.neighborhood, p.centers),
                "compiled": lambda: compiled.encoder(p.neighborhood, p.centers),
            },
            reps if tag == "one_cloud" else max(2, reps - 2),
        )
        out[f"compiled_bf16_{tag}_ms"] = t["compiled"] * 1e3
        out[f"speedup_compiled_vs_eager_bf16_{tag}"] = t["eager"] / t["compiled"]
        # clouds needed before the compile time is paid back
        saved = (t["eager"] - t["compiled"]) / p.centers.shape[0]
        out[f"compile_break_even_clouds_{tag}"] = (
            out[f"compile_bf16_{tag}_s"] / saved if saved > 0 else float("inf")
        )
    return out


if __name__ == "__main__":
    main()
