"""Everything that matters on a GPU, in one run of a few minutes: inference, grouping, teacher, training, memory.

    python benchmarks/bench_gpu.py --out gpu_bench             # on a CUDA machine (under 5 minutes)
    python benchmarks/bench_gpu.py --tiny --device cpu --out t  # the same code, tiny sizes (the test's run)

Measures, each with the peak accelerator memory it needed:

1. the measured matmul roofline in fp32 and bf16 (square GEMMs);
2. ``segment()`` throughput in fp32 and bf16 at batch 1 / 32 / 256 (2048-point clouds, full-size model,
   random weights), and the bare network forward at the same batches against the roofline of its dtype;
3. grouping (FPS + kNN, 128 x 32) for 2k to 10^6 points;
4. the data-engine teacher (ViT-B/14 DINOv2 at 518 px, random weights) in images/s, fp32 and bf16 autocast;
5. stage-1 and stage-2 training steps/s at batch 32 with ``bf16-mixed`` on a synthetic store.

Writes ``<out>/gpu_bench.json`` and ``<out>/gpu_bench.md`` (the markdown table for BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks, also when imported

from bench_segment import network_flops
from bench_train import PART_NAMES, StepTimer, ensure_store

from patchalign3d.api import segment
from patchalign3d.model import group_points, patchalign3d_base, patchalign3d_tiny
from patchalign3d.model.inference import inference_copy
from patchalign3d.text import TextBank


@dataclass(frozen=True)
class Sizes:
    """What one run measures; ``FULL`` for a GPU, ``TINY`` for a CPU smoke run."""

    arch: str = "base"
    batches: tuple[int, ...] = (1, 32, 256)
    cloud_points: int = 2048
    grouping_points: tuple[int, ...] = (2_048, 10_000, 100_000, 1_000_000)
    gemm: int = 8192
    teacher: str = "vit_base_patch14_dinov2"
    teacher_px: int = 518
    teacher_batch: int = 16
    train_arch: str = "base"
    train_batch: int = 32
    train_shapes: int = 400
    train_points: int = 2048  # stored per shape (768-d fp16 features: 1.2 GB in all)
    train_steps: int = 10
    train_workers: int = 2
    repeats: int = 5


FULL = Sizes()
TINY = Sizes(
    arch="tiny",
    batches=(1, 4),
    cloud_points=256,
    grouping_points=(256, 2_048),
    gemm=256,
    teacher="vit_small_patch14_dinov2",
    teacher_px=56,
    teacher_batch=2,
    train_arch="tiny",
    train_batch=4,
    train_shapes=24,
    train_points=256,
    train_steps=2,
    train_workers=0,
    repeats=1,
)


class Meter:
    """Best-of-N wall time of a callable, with device synchronisation, and the peak memory it needed."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> float | None:
        """Peak allocated accelerator memory since :meth:`reset_peak` (None on a CPU: not tracked)."""
        return torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None

    def time(self, fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, float | None]:
        self.reset_peak()
        for _ in range(warmup):
            fn()
        self.sync()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            self.sync()
            best = min(best, time.perf_counter() - start)
        return best, self.peak_mib()


def bench_roofline(m: Meter, s: Sizes) -> dict[str, float]:
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(s.gemm, s.gemm, dtype=dtype, device=m.device)
        b = torch.randn(s.gemm, s.gemm, dtype=dtype, device=m.device)
        t, _ = m.time(lambda: a @ b, s.repeats)
        out[f"matmul_{name}_tflops"] = 2 * s.gemm**3 / t / 1e12
    return out


def bench_inference(m: Meter, s: Sizes, roofline: dict[str, float]) -> list[dict]:
    torch.manual_seed(0)
    model = (patchalign3d_base() if s.arch == "base" else patchalign3d_tiny()).eval().to(m.device)
    flops = network_flops(model.cpu(), s.cloud_points)
    model.to(m.device)
    names = ["seat", "back", "leg", "arm"]
    bank = TextBank(names, F.normalize(torch.randn(4, model.text_dim), dim=-1), {"text_dim": model.text_dim})
    rng = np.random.default_rng(0)
    rows = []
    for batch in s.batches:
        clouds = rng.normal(size=(batch, s.cloud_points, 3)).astype(np.float32)
        pts = torch.from_numpy(clouds).to(m.device)
        with torch.inference_mode():
            patches = model.group(pts)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            net = inference_copy(model, dtype)

            def forward(net=net):
                with torch.inference_mode():
                    net.embed_patches(net.encoder(patches.neighborhood, patches.centers))

            t_net, mem_net = m.time(forward, s.repeats)
            t_seg, mem_seg = m.time(
                lambda dtype=dtype: segment(
                    list(clouds),
                    names,
                    model=model,
                    text=bank,
                    dtype=dtype,
                    batch_size=batch,
                    device=m.device,
                ),
                max(1, s.repeats // 2),
            )
            achieved = batch * flops / t_net / 1e12
            rows.append(
                {
                    "batch": batch,
                    "dtype": name,
                    "network_clouds_per_s": batch / t_net,
                    "network_tflops": achieved,
                    "ratio_network_vs_roofline": achieved / roofline[f"matmul_{name}_tflops"],
                    "segment_clouds_per_s": batch / t_seg,
                    "peak_mib_network": mem_net,
                    "peak_mib_segment": mem_seg,
                }
            )
    return rows


def bench_grouping(m: Meter, s: Sizes) -> list[dict]:
    rows = []
    rng = np.random.default_rng(1)
    for n in s.grouping_points:
        pts = torch.from_numpy(rng.normal(size=(1, n, 3)).astype(np.float32)).to(m.device)
        t, mem = m.time(
            lambda: group_points(pts, 128, 32, skip_near_origin=True),
            1 if n >= 10**6 else max(1, s.repeats // 2),
        )
        rows.append({"points": n, "ms": t * 1e3, "peak_mib": mem})
    return rows


def bench_teacher(m: Meter, s: Sizes) -> list[dict]:
    from data_engine.teachers import Teacher, TeacherConfig

    torch.manual_seed(0)
    rows = []
    images = np.random.default_rng(2).integers(
        0, 256, (s.teacher_batch, s.teacher_px, s.teacher_px, 3), dtype=np.uint8
    )
    for dtype in ("float32", "bfloat16"):
        teacher = Teacher(
            TeacherConfig(
                name=s.teacher,
                pretrained=False,
                img_size=s.teacher_px,
                batch_size=s.teacher_batch,
                device=str(m.device),
                dtype=dtype,
            )
        )
        t, mem = m.time(lambda: teacher.patch_features(images), max(1, s.repeats // 2))
        rows.append(
            {
                "teacher": s.teacher,
                "px": s.teacher_px,
                "dtype": dtype,
                "images_per_s": s.teacher_batch / t,
                "peak_mib": mem,
            }
        )
    return rows


def bench_training(m: Meter, s: Sizes, workdir: Path) -> list[dict]:
    from lightning import Trainer

    from patchalign3d.lit import Stage1Module, Stage2Module, StoreDataModule

    # One LitData writer forked from here for tiny runs (spawned writers import everything again: ~10 s each).
    store = ensure_store(
        workdir / "store",
        s.train_shapes,
        s.train_points,
        768,
        workers=max(1, s.train_workers),
        start_method="fork" if s.train_workers == 0 else None,
    )
    bank = workdir / "bank.pt"
    torch.save(
        {
            "keys": PART_NAMES,
            "emb": F.normalize(torch.randn(len(PART_NAMES), 1280), dim=-1),
            "meta": {"text_dim": 1280, "backend": "random"},
        },
        bank,
    )
    precision = "bf16-mixed"
    rows = []
    for stage in (1, 2):
        common = dict(arch=s.train_arch, lr_encoder=1e-4, lr_head=1e-4)
        module = (
            Stage1Module(**common, teacher_dim=None)
            if stage == 1
            else Stage2Module(**common, text_dim=1280, text_bank=str(bank), trainable="paper")
        )
        dm = StoreDataModule(
            str(store),
            batch_size=s.train_batch,
            num_points=min(2048, s.train_points),
            num_workers=s.train_workers,
            with_features=stage == 1,
            with_labels=stage == 2,
        )
        timer = StepTimer()
        trainer = Trainer(
            accelerator="gpu" if m.device.type == "cuda" else "cpu",
            devices=1,
            precision=precision,
            max_steps=s.train_steps + 3,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            callbacks=[timer],
        )
        m.reset_peak()
        trainer.fit(module, datamodule=dm)
        steps = timer.steps[1:] or timer.steps
        rows.append(
            {
                "stage": stage,
                "arch": s.train_arch,
                "batch": s.train_batch,
                "precision": precision,
                "steps_per_s": 1 / float(np.mean(steps)),
                "data_wait_pct": 100 * sum(timer.waits[1:]) / max(sum(steps), 1e-9),
                "peak_mib": m.peak_mib(),
            }
        )
    return rows


def markdown(result: dict) -> str:
    """The tables of one run, for BENCHMARKS.md."""

    def mib(v: float | None) -> str:
        return "n/a" if v is None else f"{v:,.0f}"

    r = result["roofline"]
    lines = [
        f"Machine: {result['machine']}. Sizes: `{result['sizes']['arch']}` model, "
        f"{result['sizes']['cloud_points']}-point clouds.",
        "",
        f"Matmul roofline ({result['sizes']['gemm']}² GEMM): fp32 {r['matmul_fp32_tflops']:.3g} TFLOP/s, "
        f"bf16 {r['matmul_bf16_tflops']:.3g} TFLOP/s.",
        "",
        "| batch | dtype | network clouds/s | network TFLOP/s | **/ roofline** | segment() clouds/s | peak MiB (network / segment) |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in result["inference"]:
        lines.append(
            f"| {x['batch']} | {x['dtype']} | {x['network_clouds_per_s']:.1f} | {x['network_tflops']:.3g} | "
            f"**{x['ratio_network_vs_roofline']:.2f}** | {x['segment_clouds_per_s']:.1f} | "
            f"{mib(x['peak_mib_network'])} / {mib(x['peak_mib_segment'])} |"
        )
    lines += ["", "| grouping points | ms | peak MiB |", "|---|---|---|"]
    lines += [f"| {x['points']:,} | {x['ms']:.1f} | {mib(x['peak_mib'])} |" for x in result["grouping"]]
    lines += ["", "| teacher | px | dtype | images/s | peak MiB |", "|---|---|---|---|---|"]
    lines += [
        f"| {x['teacher']} | {x['px']} | {x['dtype']} | {x['images_per_s']:.1f} | {mib(x['peak_mib'])} |"
        for x in result["teacher"]
    ]
    lines += [
        "",
        "| stage | arch | batch | precision | steps/s | data wait % | peak MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {x['stage']} | {x['arch']} | {x['batch']} | {x['precision']} | {x['steps_per_s']:.2f} | "
        f"{x['data_wait_pct']:.1f} | {mib(x['peak_mib'])} |"
        for x in result["training"]
    ]
    lines += ["", f"Total wall time {result['wall_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=Path("gpu_bench"), help="folder for gpu_bench.json and .md"
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny sizes: a smoke run of the same code (CPU tests)"
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["inference", "grouping", "teacher", "training"]
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(
            "no CUDA device here: run it on a GPU machine, or pass --device cpu (with --tiny for a quick check)"
        )
    sizes = TINY if args.tiny else FULL
    m = Meter(device)
    start = time.perf_counter()
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine()
    )
    result: dict = {
        "machine": f"{name}, torch {torch.__version__}",
        "device": str(device),
        "sizes": asdict(sizes),
    }
    result["roofline"] = bench_roofline(m, sizes)
    sections = {
        "inference": lambda: bench_inference(m, sizes, result["roofline"]),
        "grouping": lambda: bench_grouping(m, sizes),
        "teacher": lambda: bench_teacher(m, sizes),
    }
    for key, fn in sections.items():
        result[key] = [] if key in args.skip else fn()
        print(f"[bench_gpu] {key} done at {time.perf_counter() - start:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        result["training"] = [] if "training" in args.skip else bench_training(m, sizes, Path(tmp))
    result["wall_s"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_bench.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (args.out / "gpu_bench.md").write_text(table)
    print(table)
    return result


if __name__ == "__main__":
    main()
