"""``patchalign3d evaluate BENCHMARK ...``: flags and config files to a call of :func:`~patchalign3d.evaluation.evaluate`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from patchalign3d.command_line import EXIT_FAILURE, EXIT_STATUS_HELP, EXIT_USAGE, USER_ERRORS, error_message
from patchalign3d.data import DATASETS
from patchalign3d.errors import UsageError, WeightsUnavailableError
from patchalign3d.evaluation.metrics import CONVENTIONS
from patchalign3d.evaluation.protocols import (
    CIOU_RULES,
    HEADLINES,
    PRESETS,
    ROTATIONS,
    SUBSETS,
    Protocol,
    benchmark_protocol,
)
from patchalign3d.evaluation.runner import evaluate
from patchalign3d.model.patchalign3d import ASSIGN_MODES
from patchalign3d.output_paths import check_output_file, check_output_folder
from patchalign3d.precision import DTYPE_NAMES
from patchalign3d.text import TEMPLATE_SETS, TextBank

__all__ = ["evaluate_main", "load_config"]


def _int_or_all(text: str) -> int | None:
    if text.lower() == "all":
        return None
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return v


def _temperature(text: str) -> float | None:
    if text.lower() in ("learned", "none"):
        return None
    return float(text)


def _parser() -> argparse.ArgumentParser:
    S = argparse.SUPPRESS  # flags left out keep the config's (or the benchmark's) value
    p = argparse.ArgumentParser(
        prog="patchalign3d evaluate",
        description="Evaluate a checkpoint on a part-segmentation benchmark under a stated protocol.",
        epilog="Precedence: the benchmark's protocol under the preset (--protocol, default paper) < the config "
        "file (-c) < flags. Find3D's files (--protocol find3d, --rotation find3d, --subset find3d, --prompts "
        "find3d-topk) are read from --protocol-dir or $PATCHALIGN3D_FIND3D_DIR. " + EXIT_STATUS_HELP.capitalize() + ".",
    )
    p.add_argument("benchmark", choices=sorted(DATASETS),
                   help="which benchmark (keypoints: `patchalign3d evaluate keypointnet --help`)")
    p.add_argument("--root", default=S, help="the benchmark's folder")
    p.add_argument(
        "-c", "--config", default=None, help="YAML: benchmark, root, split, dataset, protocol, run options"
    )
    p.add_argument(
        "--split",
        default=S,
        help="dataset split (shapenetpart: test/val/train; objaverse: seen/unseen/shapenetpart; partnete: "
        "test/few_shot)",
    )
    p.add_argument("--categories", default=S, help="comma-separated categories to keep")
    p.add_argument("--limit", type=int, default=S, help="evaluate the first N shapes only")
    p.add_argument(
        "--dataset-option",
        action="append",
        default=S,
        metavar="KEY=VALUE",
        help="loader option, e.g. granularity=fine (faust), missing=skip (shapenetpart, partnete), label_space=link "
        "(partnet), drop_parts=none or scene=object (scanobjectnn)",
    )
    p.add_argument(
        "--background",
        default=S,
        choices=("keep", "drop"),
        help="scanobjectnn: keep the points of no part as a scored class 'background' (COPS) or drop them",
    )
    g = p.add_argument_group("model and text")
    g.add_argument(
        "--checkpoint", default=S, help="released .pt, Lightning .ckpt or Hub id (default: the release)"
    )
    t = g.add_mutually_exclusive_group()
    t.add_argument("--text-bank", default=S, help="a saved TextBank holding every prompt")
    t.add_argument(
        "--text-encoder", default=S, help="'openclip', 'openclip:MODEL/TAG', 'minilm' or 'hf:NAME'"
    )
    g = p.add_argument_group("protocol")
    g.add_argument(
        "--protocol",
        dest="preset",
        default=S,
        choices=PRESETS,
        help="preset: paper (the paper's figures), release (the released evaluation script) or find3d (Find3D's "
        "protocol from its published files)",
    )
    g.add_argument(
        "--protocol-dir",
        default=S,
        help="folder holding Find3D's benchmark_reproducibility files (shapenetpart/, partnete/)",
    )
    g.add_argument("--prompts", default=S, help="prompt table: release, find3d, find3d-topk or a YAML file")
    g.add_argument(
        "--template",
        dest="prompt_template",
        default=S,
        help="prompt decoration, e.g. '{part} of a {category}'",
    )
    g.add_argument(
        "--text-templates",
        default=S,
        choices=sorted(TEMPLATE_SETS),
        help="templates the encoder averages: release (the release's part_only), category (part_plus_cat), "
        "ensemble (both)",
    )
    g.add_argument(
        "--points", type=_int_or_all, default=S, help="score 'all' points or N drawn with the seed"
    )
    g.add_argument(
        "--replace", action=argparse.BooleanOptionalAction, default=S, help="draw points with replacement"
    )
    g.add_argument("--seed", type=int, default=S)
    g.add_argument("--rotation", default=S, choices=ROTATIONS, help="find3d: Find3D's rotation of each shape")
    g.add_argument("--subset", default=S, choices=SUBSETS, help="all shapes (default), or Find3D's subset")
    g.add_argument("--up-axis", default=S, choices=("y", "z"))
    g.add_argument(
        "--normalize", action=argparse.BooleanOptionalAction, default=S, help="centroid + unit sphere"
    )
    g.add_argument(
        "--normalize-before-sampling",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="normalise the whole cloud, then draw --points (the release's order); default: draw, then normalise",
    )
    g.add_argument(
        "--category-mask",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="only the shape's own parts compete (the category is known)",
    )
    g.add_argument(
        "--assign",
        default=S,
        choices=ASSIGN_MODES,
        help="points from patches: nearest centre; membership (points in no patch: nearest centre); "
        "membership_release (points in no patch: all-zero logits, as released); interpolate",
    )
    g.add_argument(
        "--none-if-negative",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="a point whose every logit is <= 0 is no part (Find3D's 'no label' column)",
    )
    g.add_argument("--temperature", type=_temperature, default=S, help="logit temperature, or 'learned'")
    g.add_argument("--max-points", type=_int_or_all, default=S, help="points the encoder sees ('all' or N)")
    g.add_argument("--num-groups", type=int, default=S)
    g.add_argument(
        "--metric",
        default=S,
        choices=CONVENTIONS,
        help="IoU convention; partslip: the parts present in the ground truth, with PartSLIP's part-first average "
        "as the headline",
    )
    g.add_argument("--unlabelled", default=S, choices=("ignore", "count"))
    g.add_argument(
        "--cIoU",
        dest="ciou",
        default=S,
        choices=CIOU_RULES,
        help="categories: mean over categories of their shapes' mean; release-batches: the released script's mean "
        "of per-batch category means",
    )
    g.add_argument(
        "--headline",
        default=S,
        choices=HEADLINES,
        help="the figure printed first (default: the preset's: Find3D's category mean on ShapeNetPart and PartNetE, "
        "else mIoU, or PartSLIP's average under --metric partslip)",
    )
    g.add_argument(
        "--cIoU-batch-size", dest="ciou_batch_size", type=int, default=S, help="batch size of --cIoU release-batches"
    )
    g = p.add_argument_group("run and output")
    g.add_argument("--device", default=S)
    g.add_argument("--dtype", default=S, choices=DTYPE_NAMES, help="'auto': bf16 where it is native")
    g.add_argument("--batch-size", type=int, default=S)
    g.add_argument("--workers", type=int, default=S)
    g.add_argument("--json", dest="json_path", default=S, help="write the full report here")
    g.add_argument("--markdown", dest="markdown_path", default=S, help="write the per-category table here")
    g.add_argument("--png-dir", default=S, help="draw the best and worst shapes here")
    g.add_argument("--num-pictures", type=int, default=S)
    g.add_argument("--progress", action="store_true", default=S)
    g.add_argument(
        "--trust-pickle", action="store_true", default=False, help="allow checkpoints that need unpickling"
    )
    return p


_PROTOCOL_FIELDS = {f.name for f in dataclasses.fields(Protocol)}
_RUN_KEYS = {
    "device",
    "dtype",
    "batch_size",
    "workers",
    "json_path",
    "markdown_path",
    "png_dir",
    "num_pictures",
    "progress",
}
_TOP_KEYS = {
    "benchmark",
    "root",
    "split",
    "categories",
    "limit",
    "dataset",
    "protocol",
    "checkpoint",
    "text_bank",
    "text_encoder",
} | _RUN_KEYS


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read an evaluation config (see ``configs/eval/*.yaml``) and check its keys."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation config not found: {path}")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    unknown = set(cfg) - _TOP_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    proto = cfg.get("protocol") or {}
    if not isinstance(proto, dict):
        raise ValueError(f"{path}: 'protocol' must be a mapping")
    bad = set(proto) - _PROTOCOL_FIELDS
    if bad:
        raise ValueError(f"{path}: unknown protocol keys {sorted(bad)}; known: {sorted(_PROTOCOL_FIELDS)}")
    return cfg


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _weights_advice(error: Exception, checkpoint: Any) -> str:
    """The error of weights that cannot be had, with the flag to give (the loader's own advice names Python)."""
    if checkpoint is None:
        return (
            f"no --checkpoint was given and the released weights cannot be loaded: {str(error).rstrip('.')}. Pass "
            "--checkpoint PATH (a released .pt, a Lightning .ckpt or a save_pretrained folder) or --checkpoint "
            "OWNER/REPO"
        )
    return f"--checkpoint {checkpoint}: {error}"


def _usage_exit(message: str) -> NoReturn:
    print(f"patchalign3d evaluate: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _check_outputs(run: dict[str, Any]) -> None:
    """The report paths, before the model loads."""
    for key, flag, suffix in (("json_path", "--json", ".json"), ("markdown_path", "--markdown", ".md")):
        if run.get(key):
            check_output_file(run[key], flag, (suffix,))
    if run.get("png_dir"):
        check_output_folder(run["png_dir"], "--png-dir")


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``patchalign3d evaluate BENCHMARK ...``; returns the exit status."""
    args = vars(_parser().parse_args(list(sys.argv[1:] if argv is None else argv)))
    benchmark = args.pop("benchmark")
    try:
        cfg = load_config(args.pop("config")) if args.get("config") else {}
    except (OSError, ValueError) as e:
        raise SystemExit(f"patchalign3d evaluate: {e}") from None
    args.pop("config", None)
    if cfg.get("benchmark") and str(cfg["benchmark"]).lower() != benchmark:
        _usage_exit(f"the config is for {cfg['benchmark']!r}, not {benchmark!r}")

    cfg_proto = cfg.get("protocol") or {}
    preset = args.get("preset", cfg_proto.get("preset", "paper"))
    try:
        proto = {**benchmark_protocol(benchmark, preset).to_dict(), **cfg_proto}
        proto.update({k: v for k, v in args.items() if k in _PROTOCOL_FIELDS})
        protocol = Protocol.from_dict(proto)
    except (TypeError, ValueError) as e:
        _usage_exit(f"bad protocol: {e}")

    opts = dict(cfg.get("dataset") or {})
    for key in ("split", "limit"):
        if key in args:
            opts[key] = args[key]
        elif key in cfg:
            opts[key] = cfg[key]
    cats = args.get("categories", cfg.get("categories"))
    if cats is not None:
        opts["categories"] = [c.strip() for c in cats.split(",")] if isinstance(cats, str) else list(cats)
    for item in args.get("dataset_option", []):
        key, sep, value = item.partition("=")
        if not sep:
            _usage_exit(f"--dataset-option wants KEY=VALUE, got {item!r}")
        opts[key.strip()] = _parse_value(value)
    if "background" in args:
        if benchmark != "scanobjectnn":
            _usage_exit(f"--background is a scanobjectnn option, not one of {benchmark}")
        opts["background"] = args["background"]
    root = args.get("root", cfg.get("root"))
    if root is None:
        _usage_exit("give the benchmark folder with --root (or 'root:' in the config)")

    run = {k: args.get(k, cfg.get(k)) for k in _RUN_KEYS if k in args or k in cfg}
    checkpoint = args.get("checkpoint", cfg.get("checkpoint"))
    try:
        _check_outputs(run)
        bank_path = args.get("text_bank", cfg.get("text_bank"))
        text = TextBank.load(bank_path) if bank_path else args.get("text_encoder", cfg.get("text_encoder"))
        report = evaluate(
            benchmark,
            root,
            model=checkpoint,
            text=text,
            protocol=protocol,
            dataset_options=opts,
            trust_pickle=args["trust_pickle"],
            **run,
        )
    except WeightsUnavailableError as e:
        if os.environ.get("PATCHALIGN3D_DEBUG"):
            raise
        print(f"patchalign3d evaluate: error: {_weights_advice(e, checkpoint)}", file=sys.stderr)
        return EXIT_FAILURE
    except USER_ERRORS as e:
        # user-facing failures (missing or malformed files, weights not available offline, prompts missing
        # from a text bank) as one line; PATCHALIGN3D_DEBUG=1 shows the traceback
        if os.environ.get("PATCHALIGN3D_DEBUG"):
            raise
        print(f"patchalign3d evaluate: error: {error_message(e)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, UsageError) else EXIT_FAILURE
    print(report["markdown"])
    m = report["metric"]
    labels = {"miou": "mIoU", "ciou": "cIoU", "partslip_miou": "PartSLIP mIoU"}
    others = " ".join(f"{labels[k]} {m[k]}" for k in labels if k != m["headline"])
    figures = f"{labels[m['headline']]} {m[m['headline']]} (the publisher's headline; {others})"
    print(
        f"\n{benchmark}: {figures} ({m['convention']} convention, {m['num_scored']} shapes, "
        f"{report['timing']['shapes_per_second']} shapes/s)"
    )
    for path in report["pictures"]:
        print(f"picture: {path}")
    return 0
