"""Command-line entry points: ``patchalign3d keypoints`` and ``patchalign3d evaluate keypointnet``.

Argument parsing and reporting only; the work is in :mod:`patchalign3d.keypoints` (``patchalign3d.cli`` imports
this module only when one of these commands runs). Ordinary mistakes (missing files, bad names, malformed
annotations or predictions, weights not available offline) end with one line on stderr and the exit status
of :mod:`patchalign3d.command_line` (1 failed, 2 usage error);
``PATCHALIGN3D_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import patchalign3d as pa
from patchalign3d.command_line import EXIT_STATUS_HELP, parse_names, run_command
from patchalign3d.errors import UsageError
from patchalign3d.examples import example_path
from patchalign3d.keypoints.benchmark import evaluate_keypointnet
from patchalign3d.keypoints.detect import DEFAULT_MIN_PROBABILITY, detect_keypoints
from patchalign3d.keypoints.fewshot import KeypointPrototypes
from patchalign3d.keypoints.keypointnet import read_names_table
from patchalign3d.keypoints.lifting import DEFAULT_MIN_CLUSTER_SHARE, DEFAULT_WEIGHTING, RIGS, WEIGHTINGS
from patchalign3d.keypoints.namer import KeypointNamer
from patchalign3d.keypoints.pointers import FeaturePointer, MolmoPointer, OraclePointer
from patchalign3d.keypoints.synthetic import read_keypoint_sidecar
from patchalign3d.output_paths import check_output_file


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None, help="released .pt, Lightning .ckpt or Hub repo id (default: the release)")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--text-bank", default=None, help="a saved TextBank (.pt) holding the names")
    text.add_argument("--text-encoder", default=None, help="'minilm', 'openclip:MODEL/PRETRAINED' or 'hf:NAME' (default: as trained)")
    p.add_argument("--trust-pickle", action="store_true", help="allow checkpoints that need full unpickling")


def _model_and_text(args: argparse.Namespace) -> tuple[Any, Any]:
    model = pa.load_model(args.checkpoint, trust_pickle=args.trust_pickle)
    text = pa.TextBank.load(args.text_bank) if args.text_bank else args.text_encoder
    return model, text


# -- patchalign3d keypoints -------------------------------------------------------------------------------------
def _keypoints_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="patchalign3d keypoints",
        description="Find named keypoints on a shape: zero-shot from the patch features and the names' text, "
                    "few-shot from annotated examples, or by lifting a 2D pointer's answers on rendered views.",
        epilog=EXIT_STATUS_HELP.capitalize() + ".",
    )
    p.add_argument("shape", help="a shape file (.ply .obj .glb .off .pcd .npz .txt) or 'example:NAME'")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--names", help='comma-separated keypoint names, e.g. "leg end,seat corner"')
    which.add_argument("--category", help="ask the keypoint names of this category (KeypointNamer's table: "
                                          "airplane, chair, table)")
    p.add_argument("--mode", default="zero_shot", choices=("zero_shot", "few_shot", "lift"))
    _add_model_args(p)
    p.add_argument("--json", default=None, help="write the keypoints (names, indices, positions, scores) as JSON")
    p.add_argument("--png", default=None, help="write a picture of the shape with each keypoint marked and named")
    p.add_argument("--num-points", type=_positive, default=2048, help="points sampled on a mesh's surface")
    p.add_argument("--nms-radius", type=float, default=0.1, help="geodesic suppression radius, fraction of the shape's diagonal")
    p.add_argument("--min-relative-score", type=float, default=None, help="peaks must reach this fraction of the field's range")
    _add_detector_args(p)
    p.add_argument("--up-axis", default="y", choices=("y", "z"))
    few = p.add_argument_group("few-shot")
    few.add_argument("--support", action="append", default=[],
                     help="an annotated example: a mesh with a .parts.json sidecar holding 'keypoints' (the demo's "
                          "shapes), or a JSON file {\"shape\": PATH, \"keypoints\": {name: [[x, y, z], ...] or [index, ...]}} "
                          "(or a list of such); repeat for k examples")
    few.add_argument("--prototypes", default=None, help="a file written by KeypointPrototypes.save (instead of --support)")
    few.add_argument("--features", default="tokens", choices=("tokens", "embeddings"))
    few.add_argument("--variant", default="nearest", choices=("nearest", "prototype"))
    _add_lift_args(p.add_argument_group("lift"), oracle="the shape's own keypoints from its .parts.json sidecar")
    return p


def _probability(text: str) -> float | None:
    if text.lower() == "none":
        return None
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1] (or be 'none'), got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def _add_detector_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-probability", type=_probability, default=DEFAULT_MIN_PROBABILITY,
                   help="zero-shot (and the feature pointer): a name whose best patch probability under the model's "
                        f"sigmoid stays below this is absent (default {DEFAULT_MIN_PROBABILITY}; 'none' asks every name)")
    p.add_argument("--max-instances", type=_positive, default=8, help="at most this many keypoints per name (zero-shot)")
    p.add_argument("--refine", action=argparse.BooleanOptionalAction, default=None,
                   help="move each peak inside its patch up the field's local plane: point resolution (default: on for "
                        "zero-shot, whose peaks sit on patch centres; off for few-shot, whose field is finer already)")


def _refine(args: argparse.Namespace) -> dict[str, bool]:
    """``{"refine": ...}`` when --refine / --no-refine was given, else nothing (each detector's own default)."""
    return {} if args.refine is None else {"refine": args.refine}


def _add_lift_args(lift, *, oracle: str) -> None:
    lift.add_argument("--pointer", default="feature", choices=("feature", "molmo", "oracle"),
                      help="'feature': this package's patch features, offline; 'molmo': Molmo through transformers; "
                           f"'oracle': {oracle} projected into each view (the upper bound of lifting)")
    lift.add_argument("--molmo-model", default=None, help="Molmo repo id or folder (default allenai/Molmo-7B-D-0924)")
    lift.add_argument("--trust-remote-code", action="store_true", help="allow Molmo v1's model code from the Hub to run")
    lift.add_argument("--views", type=_positive, default=26, help="rendered views (ZeroKey: 26)")
    lift.add_argument("--resolution", type=_positive, default=512)
    lift.add_argument("--rig", default="orthographic", choices=RIGS,
                      help="'orthographic': the data engine's orbit; 'pinhole': rings of views plus top and bottom (ZeroKey's)")
    lift.add_argument("--weighting", default=DEFAULT_WEIGHTING, choices=WEIGHTINGS,
                      help="equation 3 read as each answer's patch coverage, as votes across views, or constant "
                           f"(default {DEFAULT_WEIGHTING})")
    clusters = lift.add_mutually_exclusive_group()
    clusters.add_argument("--all-clusters", dest="all_clusters", action="store_true", default=True,
                          help="every instance of a name: each cluster holding at least --min-cluster-share of the "
                               "name's weight, heaviest first (default)")
    clusters.add_argument("--one-per-name", dest="all_clusters", action="store_false",
                          help="only the heaviest cluster of each name")
    lift.add_argument("--min-cluster-share", type=_fraction, default=DEFAULT_MIN_CLUSTER_SHARE,
                      help=f"see --all-clusters (default {DEFAULT_MIN_CLUSTER_SHARE})")
    lift.add_argument("--device", default=None, help="where Molmo runs")


def _lift_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(views=args.views, resolution=args.resolution, rig=args.rig, weighting=args.weighting,
                all_clusters=args.all_clusters, min_cluster_share=args.min_cluster_share)


def _resolve_shape(shape: str) -> Path:
    if shape.startswith("example:"):
        return example_path(shape.split(":", 1)[1])
    return Path(shape)


def read_support(paths: Sequence[str]) -> tuple[list[Any], list[dict[str, Any]]]:
    """Shapes and keypoint annotations of ``--support`` entries (sidecar meshes or JSON files)."""
    shapes, anns = [], []
    for entry in paths:
        path = Path(entry)
        if not path.is_file():
            raise FileNotFoundError(f"no such support file: {path}")
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: not valid JSON ({err})") from None
            for i, item in enumerate(data if isinstance(data, list) else [data]):
                if not isinstance(item, dict) or "shape" not in item or not isinstance(item.get("keypoints"), dict):
                    raise ValueError(f"{path}: item {i} must be {{\"shape\": PATH, \"keypoints\": {{name: [...]}}}}")
                shape = Path(item["shape"])
                shapes.append(shape if shape.is_absolute() else path.parent / shape)
                anns.append({n: _as_annotation(v) for n, v in item["keypoints"].items()})
            continue
        from data_engine.labels import sidecar_path

        side = sidecar_path(path)
        kps = json.loads(side.read_text()).get("keypoints") if side.is_file() else None
        if not isinstance(kps, dict) or not kps:
            raise ValueError(f"{path}: no keypoints in its sidecar {side.name}; give a JSON support file instead")
        shapes.append(path)
        anns.append({n: _as_annotation(v) for n, v in kps.items()})
    return shapes, anns


def _as_annotation(value: Any):
    arr = np.asarray(value)
    return arr.astype(np.float32) if arr.ndim == 2 else arr.astype(np.int64)


def _keypoints(args: argparse.Namespace) -> int:
    names = parse_names(args.names, "--names") if args.names is not None else KeypointNamer().names(args.category)
    path = _resolve_shape(args.shape)
    if path.is_dir():
        raise UsageError(f"{path} is a folder; keypoints takes one shape file")
    if not path.is_file():
        raise FileNotFoundError(f"no such shape file: {path}")
    if args.mode == "few_shot" and not (args.prototypes or args.support):
        raise UsageError("--mode few_shot needs annotated examples: --support FILE (repeat) or --prototypes FILE")
    for flag, out, suffix in (("--json", args.json, ".json"), ("--png", args.png, ".png")):
        if out:
            check_output_file(out, flag, (suffix,))
    oracle = args.mode == "lift" and args.pointer == "oracle"
    model, text = (None, None) if oracle else _model_and_text(args)
    opts: dict[str, Any] = dict(model=model, text=text, num_points=args.num_points)
    if args.mode == "zero_shot":
        opts.update(nms_radius=args.nms_radius, max_instances=args.max_instances, up_axis=args.up_axis,
                    min_probability=args.min_probability, **_refine(args))
        if args.min_relative_score is not None:
            opts["min_relative_score"] = args.min_relative_score
    elif args.mode == "few_shot":
        if args.prototypes:
            protos = KeypointPrototypes.load(args.prototypes, model)
            protos.refine = _refine(args).get("refine", protos.refine)
        elif args.support:
            extra = {"min_relative_score": args.min_relative_score} if args.min_relative_score is not None else {}
            protos = KeypointPrototypes(model, features=args.features, variant=args.variant, nms_radius=args.nms_radius,
                                        up_axis=args.up_axis, **_refine(args), **extra)
            protos.fit(*read_support(args.support), num_points=args.num_points)
        else:
            raise UsageError("--mode few_shot needs annotated examples: --support FILE (repeat) or --prototypes FILE")
        opts["prototypes"] = protos
    else:
        if args.pointer == "molmo":
            opts["pointer"] = MolmoPointer(args.molmo_model or "allenai/Molmo-7B-D-0924", device=args.device,
                                           trust_remote_code=args.trust_remote_code)
        elif oracle:
            side = path.with_name(path.stem + ".parts.json")
            targets = read_keypoint_sidecar(path)[1] if side.is_file() else {}
            if not targets:
                raise ValueError(f"--pointer oracle projects the shape's own keypoints: {path.name} has no "
                                 f"'keypoints' in a {side.name} sidecar (the demo's shapes have them)")
            opts["pointer"] = OraclePointer(targets)
        else:
            opts["pointer"] = FeaturePointer(model, text, num_points=args.num_points, min_probability=args.min_probability)
        opts.update(up_axis=args.up_axis, **_lift_options(args))
    kps = detect_keypoints(str(path), names, mode=args.mode, **opts)
    counts = ", ".join(f"{n}: {len(kps.of(n))}" for n in kps.names)
    source = kps.info.get("input", "mesh")
    read_as = "" if source == "mesh" else f" ({source}: no surface was sampled)"
    print(f"{path.name}: {args.mode} keypoints on {len(kps.points)} points{read_as} -> {counts}")
    for item in kps.to_dict()["keypoints"]:
        xyz = ", ".join(f"{v:.3f}" for v in item["position"])
        print(f"  {item['name']:<24} point {item['index']:>5}  at ({xyz})  score {item['score']:.3f}")
    if kps.absent:
        probability = kps.info.get("probability", {})
        why = (f"best probability under --min-probability {args.min_probability}" if args.mode == "zero_shot"
               else "the pointer answered in no view")
        listed = ", ".join(f"{n} ({probability[n]:.2f})" if n in probability else n for n in kps.absent)
        print(f"  absent ({why}): {listed}")
    for name in kps.names:
        if args.mode == "lift" and not len(kps.of(name)) and name not in kps.absent:
            print(f"  {name}: no compact cluster of 10 or more answers formed ({kps.info['candidates'][name]} back-projected "
                  f"answers from {args.views} views); try more --views")
    if args.json:
        print(f"wrote {kps.save_json(args.json)}")
    if args.png:
        print(f"wrote {kps.to_png(args.png, title=f'{path.name}: {args.mode}', up_axis=args.up_axis)}")
    return 0


def keypoints_main(argv: Sequence[str] | None = None) -> int:
    """``patchalign3d keypoints SHAPE --names ...`` (or ``keypoints discover ...``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["discover"]:
        from patchalign3d.keypoints.discover.cli import discover_main  # lightning is imported only for this

        return discover_main(argv[1:])
    args = _keypoints_parser().parse_args(argv)
    return run_command("patchalign3d keypoints", lambda: _keypoints(args))


# -- patchalign3d evaluate keypointnet -------------------------------------------------------------------------
def _keypointnet_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="patchalign3d evaluate keypointnet",
        description="KeypointNet keypoints (ZeroKey / UKPGAN protocol): IoU at geodesic thresholds 0.00 ... 0.10, "
                    "as the KeypointNet benchmark code defines it, for this package's detectors or a predictions file.",
        epilog=EXIT_STATUS_HELP.capitalize() + ".",
    )
    p.add_argument("--root", required=True, help="the KeypointNet folder (annotations/, pcds/, splits/)")
    p.add_argument("--categories", default="airplane,chair,table")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    p.add_argument("--predictions", default=None, help='JSON {"<synset>-<model_id>": [point indices]} to score')
    p.add_argument("--detector", default="zero_shot",
                   choices=("zero_shot", "few_shot", "lift", "discover-embeddings", "discover-diffuser"))
    p.add_argument("--k", type=int, default=10, help="discover-*: unsupervised keypoints per shape")
    p.add_argument("--diffuser", default=None, help="discover-diffuser: a trained KeyPointDiffuser checkpoint")
    p.add_argument("--shots", type=int, default=3, help="few-shot: support shapes per category (from the train split)")
    p.add_argument("--names", default=None, help="JSON {category: {semantic_id: name}} replacing the default names")
    _add_model_args(p)
    _add_detector_args(p)
    _add_lift_args(p.add_argument_group("lift (--detector lift)"), oracle="the shape's annotations")
    p.add_argument("--limit", type=int, default=None, help="score at most this many shapes per category")
    p.add_argument("--json", default=None, help="write the report (IoU at every threshold) as JSON")
    p.add_argument("--markdown", default=None, help="write the table as markdown")
    return p


def _keypointnet(args: argparse.Namespace) -> int:
    model = text = None
    needs_model = args.predictions is None and not (args.detector == "lift" and args.pointer != "feature") and not (
        args.detector == "discover-diffuser" and args.diffuser)  # a trained diffuser carries its backbone
    if needs_model:
        model, text = _model_and_text(args)
    options: dict[str, Any] = {}
    if args.detector == "zero_shot":
        options = {"min_probability": args.min_probability, "max_instances": args.max_instances, **_refine(args)}
    elif args.detector == "few_shot":
        options = _refine(args)
    elif args.detector == "lift":
        options = {**_lift_options(args), "min_probability": args.min_probability}
    elif args.detector.startswith("discover-"):
        options = {"k": args.k, "diffuser": args.diffuser}
    molmo = {"model_id": args.molmo_model, "device": args.device, "trust_remote_code": args.trust_remote_code}
    report = evaluate_keypointnet(
        args.root, categories=args.categories, split=args.split, predictions=args.predictions, model=model,
        text=text, detector=args.detector, pointer=args.pointer, molmo=molmo, shots=args.shots,
        names=read_names_table(args.names) if args.names else None, detector_options=options, limit=args.limit,
        json_path=args.json, markdown_path=args.markdown,
    )
    print(report["markdown"])
    if report["num_missing"]:
        listed = "; ".join(f"{c}: {len(v)} (e.g. {v[0]})" for c, v in report["missing"].items())
        print(f"warning: {report['num_missing']} shape(s) of the {args.split} split have no point cloud under "
              f"{Path(args.root) / 'pcds'} and were not scored ({listed}); the full list is in the JSON report",
              file=sys.stderr)
    if args.json:
        print(f"wrote {args.json}")
    return 0


def keypointnet_main(argv: Sequence[str] | None = None) -> int:
    """``patchalign3d evaluate keypointnet --root R ...``; returns the exit status."""
    args = _keypointnet_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return run_command("patchalign3d evaluate keypointnet", lambda: _keypointnet(args))
