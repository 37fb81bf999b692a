"""Command line (also ``patchalign3d-data``)::

    python -m data_engine precompute -c configs/data/<name>.yaml     # meshes -> store
    python -m data_engine inspect STORE                              # what the store holds, with a picture
"""

from __future__ import annotations

import argparse
import json
import sys

from .pipeline import EngineError, load_config, precompute


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="patchalign3d-data", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("precompute", help="meshes -> store (resumable)")
    run.add_argument("-c", "--config", required=True, help="YAML config, e.g. patchalign3d/configs/data/demo.yaml")
    run.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. output=out/store teacher.pretrained=false"
    )
    run.add_argument("--limit", type=int, default=None, help="only the first N shapes in uid order")
    run.add_argument("--dry-run", action="store_true", help="print what would be done and exit")
    run.add_argument("--retry-failed", action="store_true", help="process shapes that failed before again")
    run.add_argument("--overwrite", action="store_true", help="delete the output folder first")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    look = commands.add_parser("inspect", help="shapes, categories, part names, seen fractions, failures + a PNG")
    look.add_argument("store", help="a store folder (what precompute wrote)")
    look.add_argument("--png", default=None, help="contact sheet to write (default: STORE/contact_sheet.png)")
    look.add_argument("--no-png", action="store_true", help="print the summary only")
    look.add_argument("--split", default="train", help="split the contact sheet draws from")
    look.add_argument("--num", type=int, default=6, help="records on the contact sheet")
    look.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def _inspect(args: argparse.Namespace) -> int:
    from .inspection import contact_sheet, format_summary, summarize_store

    try:
        summary = summarize_store(args.store)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    if not args.no_png and summary["splits"].get(args.split):
        png = contact_sheet(args.store, args.png or f"{args.store}/contact_sheet.png", args.split, args.num)
        print(f"\ncontact sheet: {png}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _print_plan(summary: dict) -> None:
    for split, c in summary["counts"].items():
        print(
            f"{split:>5}: {c['shapes']} shapes, {c['staged']} staged, {c['failed']} failed, "
            f"{c['pending']} to do"
        )
    for p in summary["problems"]:
        print(f"skipped {p['uid']} ({p['path']}): {p['reason']}")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "inspect":
        return _inspect(args)
    try:
        config = load_config(args.config, args.overrides)
    except Exception as err:
        print(f"error: bad config {args.config}: {err}", file=sys.stderr)
        return 2
    try:
        summary = precompute(
            config, limit=args.limit, dry_run=args.dry_run, retry_failed=args.retry_failed,
            overwrite=args.overwrite, progress=not args.no_progress,
        )  # fmt: skip
    except (EngineError, FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.dry_run:
        _print_plan(summary)
    else:
        print(summary["status"])
        if summary["published"]:
            print(
                f"{len(summary['failed'])} failed, {len(summary['warnings'])} warnings (see report.json); "
                f"look at it with: python -m data_engine inspect {config.output}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
