"""Per-shape time of the data engine, split into load, sample, render, teacher, back-project and write.

    python benchmarks/bench_data_engine.py                 # both backends, Find3D settings, CPU
    python benchmarks/bench_data_engine.py --quick         # 224 px renders and teacher, fewer shapes
    python benchmarks/bench_data_engine.py --demo --backends raycast --teacher-dtypes float32 bfloat16
                                                           # the demo's settings, teacher in both precisions

Find3D settings by default (5000 points, 10 orthographic views of 500 px, teacher at 518 px) with a small
random teacher (ViT-S/14 DINOv2, ``pretrained=False``) on the CPU. Shapes are procedural meshes written to a
temporary folder (so ``load`` reads real files), plus the ShapeNet chair from ``../shared/data`` when present.

``--demo`` uses ``patchalign3d/configs/data/demo.yaml``'s sizes (2048 points, 6 views of 112 px, teacher at 112 px).
Several ``--teacher-dtypes`` are measured in turn in one run (bf16 is autocast; ``auto`` = what the
hardware runs natively).

Target: everything except the teacher forward takes <= 30 % of the per-shape time at 10 views
(printed per backend as ``non-teacher share``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import torch

from data_engine.cameras import make_rig
from data_engine.pipeline import StageTimer, load_config, process_mesh
from data_engine.render import make_renderer
from data_engine.store import Staging
from data_engine.teachers import Teacher

STAGES = ("load", "sample", "render", "teacher", "backproject", "write")
TARGET = 0.30
KEYPOINTNET = "keypointnet/models/03001627/88382b877be91b2a572f8e1c1caad99e/models/model_normalized.obj"


def bench_shapes(folder: Path, count: int) -> list[Path]:
    """Procedural part-labelled meshes (chairs, bicycles, ...) and the real ShapeNet chair if present."""
    from data_engine.synthetic import write_dataset

    categories = ["chair", "bicycle", "cart", "human", "airplane", "table"][: max(1, count)]
    paths = write_dataset(folder, categories=categories, shapes_per_category=1)[:count]
    real = Path(__file__).resolve().parents[2] / "shared" / "data" / KEYPOINTNET
    return paths + ([real] if real.is_file() else [])


def run_backend(
    backend: str, paths: list[Path], args: argparse.Namespace, staging: Staging, teacher_dtype: str = "float32"
) -> dict[str, float]:
    """Mean seconds per shape and stage for one render backend (after one warm-up shape)."""
    config = load_config(
        None,
        [
            f"render.backend={backend}",
            f"camera.num_views={args.views}",
            f"camera.resolution={args.resolution}",
            f"mesh.num_points={args.points}",
            "teacher.name=vit_small_patch14_dinov2",
            "teacher.pretrained=false",
            f"teacher.img_size={args.img_size}",
            "teacher.device=cpu",
            f"teacher.dtype={teacher_dtype}",
        ],
    )
    torch.manual_seed(0)
    teacher, renderer, rig = Teacher(config.teacher), make_renderer(config.render), make_rig(config.camera)

    def one(path: Path) -> dict[str, float]:
        timer = StageTimer()
        record = process_mesh(path, config, teacher=teacher, renderer=renderer, rig=rig, timer=timer)
        with timer("write"):
            staging.write_record(record)
        return timer.seconds

    one(paths[0])  # warm-up: first-call allocations, GL context, thread pools
    runs = [one(p) for p in paths for _ in range(args.repeats)]
    return {stage: statistics.mean(r.get(stage, 0.0) for r in runs) for stage in STAGES}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backends", nargs="+", default=["raycast", "pyrender"])
    parser.add_argument("--views", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=500)
    parser.add_argument("--img-size", type=int, default=518)
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument(
        "--shapes", type=int, default=2, help="procedural shapes (plus the real chair if present)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="224 px renders and teacher, 2 shapes")
    parser.add_argument("--demo", action="store_true", help="the demo's sizes (patchalign3d/configs/data/demo.yaml)")
    parser.add_argument("--teacher-dtypes", nargs="+", default=["float32"],
                        choices=["auto", "float32", "bfloat16"], help="teacher precisions, measured in turn")
    parser.add_argument("--json", default=None, help="write the figures here too")
    args = parser.parse_args()
    if args.quick:
        args.resolution, args.img_size, args.shapes = 224, 224, 2
    if args.demo:
        args.views, args.resolution, args.img_size, args.points = 6, 112, 112, 2048

    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"{args.views} views, {args.resolution} px renders, teacher vit_small_patch14_dinov2 (random) at "
        f"{args.img_size} px, {args.points} points"
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = bench_shapes(Path(tmp) / "shapes", args.shapes)
        print(f"{len(paths)} shapes: {', '.join(p.stem for p in paths)}\n")
        header = (
            "backend/teacher dtype " + "".join(f"{s:>12}" for s in STAGES) + f"{'total':>10}{'non-teacher share':>20}"
        )
        print(header)
        for backend in args.backends:
            for dtype in args.teacher_dtypes:
                staging = Staging(Path(tmp) / f"staging-{backend}-{dtype}")
                seconds = run_backend(backend, paths, args, staging, dtype)
                total = sum(seconds.values())
                share = (total - seconds["teacher"]) / total
                verdict = "ok" if share <= TARGET else "OVER"
                label = f"{backend}/{dtype}"
                print(
                    f"{label:<22}"
                    + "".join(f"{seconds[s]:>11.3f}s" for s in STAGES)
                    + f"{total:>9.2f}s{share:>14.1%} ({verdict})",
                    flush=True,
                )
                results[label] = {**seconds, "total": total, "non_teacher_share": share}
    print(f"\ntarget: non-teacher share <= {TARGET:.0%} of per-shape time at {args.views} views")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
