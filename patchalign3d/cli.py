"""Console scripts ``patchalign3d`` and ``lightning``. Argument parsing only: the work happens elsewhere.

``patchalign3d fit|validate|test|predict ...`` and ``lightning ...`` are the LightningCLI of
:mod:`patchalign3d.lit.cli`; ``segment``, ``export``, ``evaluate`` and ``demo`` are subcommands of their own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from patchalign3d.command_line import EXIT_FAILURE, EXIT_STATUS_HELP, run_command
from patchalign3d.errors import UsageError

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
OWN_SUBCOMMANDS = ("segment", "export", "evaluate", "keypoints", "demo", "app")


def _segment_parser() -> argparse.ArgumentParser:
    from patchalign3d.batch import BATCH_FORMATS
    from patchalign3d.outputs import COLOR_MODES, PART_FILE_SUFFIXES
    from patchalign3d.precision import DEFAULT_DTYPE, DTYPE_NAMES

    p = argparse.ArgumentParser(
        prog="patchalign3d segment",
        description="Label every point (and, for meshes, every vertex and face) of shapes with one of the given part "
        "names. One shape: --out is a file. Several shapes, a folder or a glob: --out is a folder, with one "
        "output per shape and report.json. Every output path is checked before the model loads.",
        epilog=f"{EXIT_STATUS_HELP.capitalize()}; with several shapes, 1 also when any shape failed.",
    )
    p.add_argument("shapes", nargs="+", metavar="SHAPE",
                   help="shape files (.ply .obj .glb .gltf .off .stl .pcd .npz .npy .txt .xyz .pts), folders (searched "
                   "recursively), glob patterns (quote them: 'shapes/**/*.glb'), or 'example:NAME' for a bundled shape")
    names = p.add_mutually_exclusive_group(required=True)
    names.add_argument("--parts", help='comma-separated part names, e.g. "seat,back,leg"; double-quote a name that '
                       """holds a comma: 'seat,"back, upper",leg'""")
    names.add_argument("--parts-file", help="a text file with one part name per line (instead of --parts)")
    p.add_argument("--checkpoint", default=None,
                   help="released .pt, Lightning .ckpt, save_pretrained folder or Hub repo id (default: the release on the Hub)")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--text-bank", default=None, help="a saved TextBank (.pt) holding the part names")
    text.add_argument("--text-encoder", default=None, help="'minilm', 'openclip:MODEL/PRETRAINED' or 'hf:NAME' (default: as trained)")
    p.add_argument("--out", default=None,
                   help="one shape: .glb/.gltf/.obj (meshes: one node per part, + .json), .ply or .npz; several: a folder")
    p.add_argument("--formats", default="auto",
                   help=f"several shapes: comma-separated {','.join(BATCH_FORMATS)} (auto: glb for meshes, ply for clouds)")
    p.add_argument("--colors", default="input", choices=COLOR_MODES,
                   help="mesh outputs: keep the input's colours/UVs/materials (parts without any get their part colour), "
                   "or colour every part")
    p.add_argument("--split-dir", default=None, help="also write one file per part of each mesh into this folder")
    p.add_argument("--split-format", default="glb", choices=[s[1:] for s in PART_FILE_SUFFIXES])
    p.add_argument("--png", default=None, help="one shape: also write a picture of the result (.png)")
    p.add_argument("--assign", default="nearest", choices=("nearest", "membership", "interpolate"))
    p.add_argument("--up-axis", default="y", choices=("y", "z"))
    p.add_argument("--no-normalize", action="store_true", help="do not centre and scale to the unit sphere")
    p.add_argument("--max-points", type=int, default=2048, help="encode at most this many points (0: all)")
    p.add_argument("--num-points", type=int, default=2048, help="points sampled on a mesh's surface")
    p.add_argument("--batch-size", type=int, default=16, help="shapes per forward pass")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=DEFAULT_DTYPE, choices=DTYPE_NAMES,
                   help="'auto': bf16 where the hardware runs it natively (default %(default)s)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a PyTorch checkpoint that needs full unpickling (only for files you trust)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _resolve_shape(shape: str) -> Path:
    if shape.startswith("example:"):
        from patchalign3d.examples import example_path

        return example_path(shape.split(":", 1)[1])
    return Path(shape)


def _is_batch(shapes: Sequence[str]) -> bool:
    import glob

    one = shapes[0]
    return len(shapes) > 1 or Path(one).is_dir() or (not Path(one).exists() and glob.has_magic(one))


def segment_main(argv: Sequence[str]) -> int:
    args = _segment_parser().parse_args(argv)
    return run_command("patchalign3d segment", lambda: _segment_many(args) if _is_batch(args.shapes) else _segment_one(args))


def _part_names(args: argparse.Namespace) -> list[str]:
    from patchalign3d.command_line import parse_names, read_names_file

    return read_names_file(args.parts_file, "--parts-file") if args.parts_file else parse_names(args.parts, "--parts")


def _model_and_text(args: argparse.Namespace):
    """The text source first (a bad --text-bank is found before the model loads), then the model."""
    import patchalign3d as pa

    text = args.text_encoder
    if args.text_bank:
        if Path(args.text_bank).is_dir():
            raise UsageError(f"--text-bank {args.text_bank} is a folder; give the .pt file that TextBank.save wrote")
        try:
            text = pa.TextBank.load(args.text_bank)
        except (OSError, ValueError) as err:
            raise type(err)(f"--text-bank: {err}") from None
    model = pa.load_model(args.checkpoint, trust_pickle=args.trust_pickle)
    return model, text


def _check_one_shape_outputs(args: argparse.Namespace, path: Path, mesh: bool) -> None:
    """--out, --png and --split-dir of one shape, before any model work."""
    from patchalign3d.output_paths import check_output_file, check_output_folder
    from patchalign3d.outputs import PART_FILE_SUFFIXES, SCENE_SUFFIXES

    if args.out:
        suffix = Path(args.out).suffix.lower()
        if not mesh and suffix in SCENE_SUFFIXES:
            raise UsageError(f"--out {args.out}: {suffix} holds meshes and {path.name} is a point cloud; use .ply or .npz")
        check_output_file(args.out, "--out", (".glb", ".gltf", ".obj", ".ply", ".npz") if mesh else (".ply", ".npz"))
    if args.png:
        check_output_file(args.png, "--png", (".png",))
    if args.split_dir:
        if not mesh:
            raise UsageError(f"--split-dir needs a mesh; {path.name} is a point cloud")
        check_output_folder(args.split_dir, "--split-dir", PART_FILE_SUFFIXES + (".npz",))


def _segment_one(args: argparse.Namespace) -> int:
    import patchalign3d as pa
    from patchalign3d.data.io import load_mesh_pieces

    path = _resolve_shape(args.shapes[0])
    names = _part_names(args)
    pieces = load_mesh_pieces(path)  # checks the file before the model loads; [] for point clouds
    _check_one_shape_outputs(args, path, mesh=bool(pieces))
    model, text = _model_and_text(args)
    opts = dict(model=model, text=text, normalize=not args.no_normalize, up_axis=args.up_axis, assign=args.assign,
                device=args.device, dtype=args.dtype)
    if pieces:
        seg = pa.segment_mesh(path, names, num_points=args.num_points, **opts)
    else:
        seg = pa.segment(path, names, max_points=args.max_points or None, **opts)
    counts = {n: int((seg.labels == k).sum()) for k, n in enumerate(seg.part_names)}
    print(f"{path.name}: {len(seg.labels)} points -> " + ", ".join(f"{n}: {c}" for n, c in counts.items()))
    if args.out:
        out = seg.save(args.out, colors=args.colors) if pieces else seg.save(args.out)
        print(f"wrote {out}" + (f" and {out.with_suffix('.json')}" if out.suffix.lower() in (".glb", ".gltf", ".obj") else ""))
    if args.split_dir:
        files = seg.save_parts(args.split_dir, suffix=args.split_format, colors=args.colors)
        print(f"wrote {len(files)} part files to {args.split_dir}")
    if args.png:
        print(f"wrote {seg.to_png(args.png, title=path.name)}")
    return 0


def _segment_many(args: argparse.Namespace) -> int:
    from patchalign3d.batch import check_formats, find_shapes, segment_files
    from patchalign3d.output_paths import check_output_folder
    from patchalign3d.outputs import PART_FILE_SUFFIXES

    names = _part_names(args)
    if args.png:
        raise UsageError("with several shapes, ask for pictures with --formats auto,png instead of --png")
    if not args.out:
        raise UsageError("several shapes need --out OUTDIR (a folder for the outputs and report.json)")
    try:
        formats = check_formats(args.formats.split(","))
    except ValueError as err:
        raise UsageError(f"--formats {args.formats}: {err}") from None
    sources = [str(_resolve_shape(s)) if s.startswith("example:") else s for s in args.shapes]
    found, problems = find_shapes(sources, exclude=Path(args.out))
    if not found:
        raise FileNotFoundError("no shapes to segment: " + "; ".join(f"{p['path']}: {p['reason']}" for p in problems))
    check_output_folder(args.out, "--out")
    if Path(args.out).suffix.lower() in PART_FILE_SUFFIXES + (".npz",) and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a file name, but a folder or several shapes write one output per shape: "
                         f"give a folder, e.g. --out {Path(args.out).with_suffix('')}/")
    if args.split_dir:
        check_output_folder(args.split_dir, "--split-dir", PART_FILE_SUFFIXES + (".npz",))
    model, text = _model_and_text(args)
    report = segment_files(
        sources, names, args.out, model=model, text=text,
        formats=formats, colors=args.colors, split_dir=args.split_dir,
        split_format=f".{args.split_format}", num_points=args.num_points, batch_size=args.batch_size,
        progress=not args.no_progress, normalize=not args.no_normalize, up_axis=args.up_axis, assign=args.assign,
        max_points=args.max_points or None, device=args.device, dtype=args.dtype,
    )
    print(f"segmented {len(report.written)} shape(s) into {args.out}; {len(report.failed)} failed")
    for failure in report.failed:
        print(f"  FAILED {failure['path']}: {failure['reason']}", file=sys.stderr)
    print(f"report: {report.report_path}")
    return 0 if report.ok else EXIT_FAILURE


def export_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="patchalign3d export", description="Write a stage-2 checkpoint in the released "
                                "format.", epilog=EXIT_STATUS_HELP.capitalize() + ".")
    p.add_argument("checkpoint", help="a stage-2 Lightning .ckpt (or any source load_model reads)")
    p.add_argument("out", help="output .pt (keys exactly model/proj/temp)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a PyTorch checkpoint that needs full unpickling (only for files you trust)")
    args = p.parse_args(argv)

    def export() -> int:
        from patchalign3d.model.checkpoint import export_checkpoint
        from patchalign3d.output_paths import check_output_file

        check_output_file(args.out, "output", (".pt", ".pth"), example="patchalign3d")
        print(f"wrote {export_checkpoint(args.checkpoint, args.out, trust_pickle=args.trust_pickle)}")
        return 0

    return run_command("patchalign3d export", export)


def _lightning(argv: Sequence[str]) -> int:
    from patchalign3d.lit import TrainingSetupError
    from patchalign3d.lit.cli import cli_main

    try:
        cli_main(list(argv))
    except TrainingSetupError as err:  # found before training or resuming: a sentence, nothing lost
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _usage() -> str:
    return (
        "usage: patchalign3d {segment,export,evaluate,keypoints,demo,app,fit,validate,test,predict} ...\n\n"
        "  segment   label the points, vertices and faces of shapes (files, folders, globs) with part names\n"
        "  export    convert a stage-2 checkpoint to the released format\n"
        "  evaluate  benchmark a checkpoint (shapenetpart, faust, objaverse, partnet, partnete, scanobjectnn,\n"
        "            labelled-meshes, keypointnet)\n"
        "  keypoints find named keypoints on a shape (zero-shot, few-shot or lifted from rendered views)\n"
        "  demo      the embedded default, end to end on a CPU\n"
        "  app       a web app (Gradio, extra [app]): upload a shape, name its parts, see and download them\n"
        "  fit|validate|test|predict   training (LightningCLI), e.g. patchalign3d fit -c configs/stage1.yaml\n\n"
        f"Every subcommand's {EXIT_STATUS_HELP}; `patchalign3d COMMAND --help` for its options.\n"
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
        from patchalign3d.evaluation.cli import evaluate_main

        return evaluate_main(rest)
    if command == "keypoints":
        from patchalign3d.keypoints.commands import keypoints_main

        return keypoints_main(rest)
    if command == "demo":
        from patchalign3d.demo import demo_main

        return demo_main(rest)
    if command == "app":
        from patchalign3d.app.main import app_main

        return app_main(rest)
    if command in LIGHTNING_SUBCOMMANDS or command.startswith("-"):
        return _lightning(argv)
    print(f"patchalign3d: unknown command {command!r}\n\n" + _usage(), file=sys.stderr)
    return 2


def lightning_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightning`` command (``lightning fit -c configs/stage1.yaml``)."""
    return _lightning(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
