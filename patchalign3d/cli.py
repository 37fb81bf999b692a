"""Console scripts ``patchalign3d`` and ``lightning``. Argument parsing only: the work happens elsewhere.

``patchalign3d fit|validate|test|predict ...`` and ``lightning ...`` are the LightningCLI of
:mod:`patchalign3d.lit.cli`; ``segment``, ``export``, ``evaluate`` and ``demo`` are subcommands of their own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
OWN_SUBCOMMANDS = ("segment", "export", "evaluate", "keypoints", "demo")


def _segment_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="patchalign3d segment",
        description="Label every point (and, for meshes, every vertex and face) of a shape with one of the given part names.",
    )
    p.add_argument("shape", help="a shape file (.ply .obj .glb .off .pcd .npz .txt) or 'example:NAME' for a bundled shape")
    p.add_argument("--parts", required=True, help='comma-separated part names, e.g. "seat,back,leg"')
    p.add_argument("--checkpoint", default=None, help="released .pt, Lightning .ckpt or Hub repo id (default: the release on the Hub)")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--text-bank", default=None, help="a saved TextBank (.pt) holding the part names")
    text.add_argument("--text-encoder", default=None, help="'minilm', 'openclip:MODEL/PRETRAINED' or 'hf:NAME' (default: as trained)")
    p.add_argument("--out", default=None, help="output .npz (all arrays) or .ply (points coloured by part)")
    p.add_argument("--png", default=None, help="also write a picture of the result")
    p.add_argument("--assign", default="nearest", choices=("nearest", "membership", "interpolate"))
    p.add_argument("--up-axis", default="y", choices=("y", "z"))
    p.add_argument("--no-normalize", action="store_true", help="do not centre and scale to the unit sphere")
    p.add_argument("--max-points", type=int, default=2048, help="encode at most this many points (0: all)")
    p.add_argument("--num-points", type=int, default=2048, help="points sampled on a mesh's surface")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--trust-pickle", action="store_true", help="allow checkpoints that need full unpickling")
    return p


def _resolve_shape(shape: str) -> Path:
    if shape.startswith("example:"):
        from patchalign3d.examples import example_path

        return example_path(shape.split(":", 1)[1])
    return Path(shape)


def segment_main(argv: Sequence[str]) -> int:
    args = _segment_parser().parse_args(argv)
    import patchalign3d as pa
    from patchalign3d.data.io import load_geometry

    names = [n.strip() for n in args.parts.split(",")]
    model = pa.load_model(args.checkpoint, trust_pickle=args.trust_pickle)
    text = pa.TextBank.load(args.text_bank) if args.text_bank else args.text_encoder
    opts = dict(model=model, text=text, normalize=not args.no_normalize, up_axis=args.up_axis, assign=args.assign,
                device=args.device, dtype=args.dtype)
    path = _resolve_shape(args.shape)
    geom = load_geometry(path)
    if hasattr(geom, "faces") and len(geom.faces):
        seg = pa.segment_mesh(geom, names, num_points=args.num_points, **opts)
    else:
        seg = pa.segment(path, names, max_points=args.max_points or None, **opts)
    counts = {n: int((seg.labels == k).sum()) for k, n in enumerate(seg.part_names)}
    print(f"{path.name}: {len(seg.labels)} points -> " + ", ".join(f"{n}: {c}" for n, c in counts.items()))
    if args.out:
        print(f"wrote {seg.save(args.out)}")
    if args.png:
        print(f"wrote {seg.to_png(args.png, title=path.name)}")
    return 0


def export_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="patchalign3d export", description="Write a stage-2 checkpoint in the released format.")
    p.add_argument("checkpoint", help="a stage-2 Lightning .ckpt (or any source load_model reads)")
    p.add_argument("out", help="output .pt (keys exactly model/proj/temp)")
    p.add_argument("--trust-pickle", action="store_true")
    args = p.parse_args(argv)
    from patchalign3d.model.checkpoint import export_checkpoint

    print(f"wrote {export_checkpoint(args.checkpoint, args.out, trust_pickle=args.trust_pickle)}")
    return 0


def _lightning(argv: Sequence[str]) -> int:
    from patchalign3d.lit.cli import cli_main

    cli_main(list(argv))
    return 0


def _usage() -> str:
    return (
        "usage: patchalign3d {segment,export,evaluate,keypoints,demo,fit,validate,test,predict} ...\n\n"
        "  segment   label a shape's points with part names\n"
        "  export    convert a stage-2 checkpoint to the released format\n"
        "  evaluate  benchmark a checkpoint (shapenetpart, faust, objaverse, partnet, keypointnet)\n"
        "  keypoints find named keypoints on a shape (zero-shot, few-shot or lifted from rendered views)\n"
        "  demo      the embedded default, end to end on a CPU\n"
        "  fit|validate|test|predict   training (LightningCLI), e.g. patchalign3d fit -c configs/stage1.yaml\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``patchalign3d`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "segment":
        return segment_main(rest)
    if command == "export":
        return export_main(rest)
    if command == "evaluate" and rest[:1] == ["keypointnet"]:
        from patchalign3d.keypoints.commands import keypointnet_main

        return keypointnet_main(rest[1:])
    if command == "evaluate":
        from patchalign3d.evaluation.runner import evaluate_main

        return evaluate_main(rest)
    if command == "keypoints":
        from patchalign3d.keypoints.commands import keypoints_main

        return keypoints_main(rest)
    if command == "demo":
        from patchalign3d.demo import demo_main

        return demo_main(rest)
    if command in LIGHTNING_SUBCOMMANDS or command.startswith("-"):
        return _lightning(argv)
    print(f"patchalign3d: unknown command {command!r}\n\n" + _usage(), file=sys.stderr)
    return 2


def lightning_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightning`` command (``lightning fit -c configs/stage1.yaml``)."""
    return _lightning(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
