"""``patchalign3d keypoints discover FOLDER --method embeddings|diffuser --k K --checkpoint C [--json] [--png]``.

Argument parsing and reporting only. Ordinary mistakes (no shapes, unreadable files, a wrong checkpoint) end
with one line on stderr and the exit status of :mod:`patchalign3d.command_line` (1 failed, 2 usage error);
``PATCHALIGN3D_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from patchalign3d.command_line import EXIT_STATUS_HELP, run_command
from patchalign3d.errors import UsageError
from patchalign3d.output_paths import check_output_file

SHAPE_SUFFIXES = (".ply", ".obj", ".glb", ".gltf", ".off", ".stl", ".pcd", ".npz", ".txt")
PROG = "patchalign3d keypoints discover"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Find K keypoints nobody named, in the same order on every shape of a folder (one category): "
                    "'embeddings' optimises free vectors in the model's feature space on these shapes "
                    "(StableKeypoints in 3D); 'diffuser' uses a trained KeyPointDiffuser (--diffuser), or trains one "
                    "on these shapes.",
        epilog=EXIT_STATUS_HELP.capitalize() + ".",
    )
    p.add_argument("folder", help="a folder of shapes of one category (searched recursively), or one glob pattern")
    p.add_argument("--method", default="embeddings", choices=("embeddings", "diffuser"))
    p.add_argument("--k", type=int, default=10, help="keypoints per shape (default 10)")
    p.add_argument("--checkpoint", default=None,
                   help="the PatchAlign3D model: released .pt, Lightning .ckpt or Hub repo id (default: the release)")
    p.add_argument("--diffuser", default=None, help="a KeyPointDiffuser checkpoint (lightning fit -c configs/keypoints/diffuser.yaml)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimisation steps (embeddings: default 100; diffuser trained here: default 300)")
    p.add_argument("--save", default=None, help="write the fitted embeddings (.pt) or the diffuser trained here (.ckpt)")
    p.add_argument("--json", default=None, help="write every shape's keypoints (names, indices, positions, scores)")
    p.add_argument("--png", default=None, help="write a picture of the first shapes with the same keypoints in the same colours")
    p.add_argument("--num-points", type=int, default=2048, help="points sampled on a mesh's surface")
    p.add_argument("--up-axis", default="y", choices=("y", "z"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trust-pickle", action="store_true", help="allow checkpoints that need full unpickling")
    return p


def shape_paths(folder: str) -> list[Path]:
    """Shape files under a folder (recursively) or matching a glob, sorted."""
    import glob

    if Path(folder).is_dir():
        found = Path(folder).rglob("*")
    elif any(c in folder for c in "*?["):
        found = map(Path, glob.glob(folder, recursive=True))
    else:
        raise FileNotFoundError(f"no such folder: {folder} (give a folder of shapes or a glob such as 'beds/*.ply')")
    paths = sorted(p for p in found if p.is_file() and p.suffix.lower() in SHAPE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no shape files ({' '.join(SHAPE_SUFFIXES)}) in {folder}")
    return paths


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    import patchalign3d as pa
    from patchalign3d.keypoints.shapes import as_shape

    if args.k < 1:
        raise UsageError(f"--k must be >= 1, got {args.k}")
    for flag, out, suffixes in (("--json", args.json, (".json",)), ("--png", args.png, (".png",)),
                                ("--save", args.save, None)):
        if out:
            check_output_file(out, flag, suffixes)
    paths = shape_paths(args.folder)
    shapes = [as_shape(str(p), num_points=args.num_points, seed=args.seed).points for p in paths]
    print(f"{len(paths)} shapes under {args.folder}; method {args.method}, K = {args.k}")
    if args.method == "embeddings":
        from patchalign3d.keypoints.discover.embeddings import EmbeddingKeypoints

        model = pa.load_model(args.checkpoint, trust_pickle=args.trust_pickle)
        finder = EmbeddingKeypoints(model, args.k, steps=args.steps if args.steps is not None else 100,
                                    num_points=args.num_points, seed=args.seed, up_axis=args.up_axis)
        finder.fit(shapes, progress=True)
        predict = finder.predict
        if args.save:
            print(f"wrote {finder.save(args.save)}")
    else:
        from patchalign3d.keypoints.discover.data import fit_diffuser
        from patchalign3d.keypoints.discover.diffuser import load_diffuser

        if args.diffuser:
            diffuser = load_diffuser(args.diffuser, trust_pickle=args.trust_pickle)
            if diffuser.hparams.k != args.k:
                print(f"note: {args.diffuser} was trained with K = {diffuser.hparams.k}; --k {args.k} is ignored")
                args.k = diffuser.hparams.k  # what the JSON and the picture say
        else:
            model = pa.load_model(args.checkpoint, trust_pickle=args.trust_pickle)
            print("no --diffuser given: training one on these shapes")
            diffuser = fit_diffuser(model, shapes, k=args.k, max_steps=args.steps if args.steps is not None else 300,
                                    num_points=args.num_points, seed=args.seed, up_axis=args.up_axis, progress=True,
                                    checkpoint=args.save)
            if args.save:
                print(f"wrote {args.save}")
        predict = lambda pts: diffuser.predict(pts, up_axis=args.up_axis)  # noqa: E731
    results = {}
    for path, pts in zip(paths, shapes):
        kps = predict(pts)
        results[str(path)] = kps
        where = "  ".join(f"{n}({', '.join(f'{v:.3f}' for v in p)})" for n, p in zip(kps.names, kps.positions))
        print(f"{path.name}: {where}")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"method": args.method, "k": args.k,
                                   "shapes": {p: k.to_dict() for p, k in results.items()}}, indent=1))
        print(f"wrote {out}")
    if args.png:
        from patchalign3d.keypoints.discover.pictures import consistency_png

        shown = list(results.items())[:4]
        png = consistency_png([(k.points, np.asarray(k.positions)) for _, k in shown], args.png,
                              title=f"{args.method}: the same {args.k} keypoints on {len(shown)} shapes",
                              labels=[Path(p).stem for p, _ in shown], up_axis=args.up_axis)
        print(f"wrote {png}")
    return 0


def discover_main(argv: Sequence[str] | None = None) -> int:
    """``patchalign3d keypoints discover FOLDER ...``; returns the exit status."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_command(PROG, lambda: _run(args))
