"""Command line (also ``patchalign3d-data``)::

    python -m data_engine precompute -c configs/data/<name>.yaml [key=value ...]   # meshes -> store
    python -m data_engine publish STORE      # publish the store from its records (e.g. after a job array)
    python -m data_engine verify STORE       # check a store against its plan and counts (exit 1 if not whole)
    python -m data_engine inspect STORE      # what the store holds, with a picture
"""

from __future__ import annotations

import argparse
import json
import sys

from patchalign3d.store_check import StoreMismatchError

from .pipeline import EngineError, load_config, precompute


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="patchalign3d-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("precompute", help="meshes -> store (resumable, several nodes)")
    run.add_argument("-c", "--config", required=True, help="YAML config, e.g. patchalign3d/configs/data/demo.yaml")
    run.add_argument(
        "overrides", nargs="*", help="dotted overrides anywhere on the line, e.g. output=out/store teacher.pretrained=false"
    )
    run.add_argument("--limit", type=int, default=None, help="only the first N shapes in uid order")
    run.add_argument("--dry-run", action="store_true", help="print what would be done and exit")
    run.add_argument("--retry-failed", action="store_true", help="process this node's shapes that failed before again")
    run.add_argument("--overwrite", action="store_true", help="delete the output folder first (one node only)")
    run.add_argument("--new-run", action="store_true",
                     help="replace an unfinished run with other inputs or node count in the output folder")  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    publish = commands.add_parser("publish", help="publish STORE from its finished records (any node, any time)")
    publish.add_argument("store", help="the output folder of precompute")
    publish.add_argument("--workers", type=int, default=0, help="LitData workers writing the splits (0: auto)")
    publish.add_argument("--no-wait", action="store_true", help="exit when another process is publishing")
    verify = commands.add_parser("verify", help="check STORE: every planned shape once, true counts; exit 1 if not")
    verify.add_argument("store", help="a store folder")
    verify.add_argument("--deep", action="store_true", help="read every item back, not only each split's ends")
    look = commands.add_parser("inspect", help="shapes, categories, part names, seen fractions, failures + a PNG")
    look.add_argument("store", help="a store folder (what precompute wrote)")
    look.add_argument("--png", default=None, help="contact sheet to write (default: STORE/contact_sheet.png)")
    look.add_argument("--no-png", action="store_true", help="print the summary only")
    look.add_argument("--split", default="train", help="split the contact sheet draws from")
    look.add_argument("--num", type=int, default=6, help="records on the contact sheet")
    look.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``precompute``'s ``key=value`` overrides may come before, between or after flags."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    unknown = [a for a in extra if a not in overrides]
    if unknown or (overrides and args.command != "precompute"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args


def _inspect(args: argparse.Namespace) -> int:
    from .inspection import contact_sheet, format_summary, summarize_store

    try:
        summary = summarize_store(args.store)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    if not args.no_png and summary["splits"].get(args.split):
        png = contact_sheet(summary["root"], args.png or f"{args.store}/contact_sheet.png", args.split, args.num)
        print(f"\ncontact sheet: {png}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _publish(args: argparse.Namespace) -> int:
    from .publish import publish_store

    try:
        publication = publish_store(args.store, by="python -m data_engine publish", workers=args.workers, progress=True,
                                    wait=not args.no_wait)  # fmt: skip
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(publication.message)
    return 0 if publication.published else 1


def _verify(args: argparse.Namespace) -> int:
    from .verify import VerificationError, verify_store

    try:
        checked = verify_store(args.store, deep=args.deep)
    except (FileNotFoundError, StoreMismatchError, VerificationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    against = f"its plan {checked['plan']}" if checked["plan"] else "its store_info.json and lists (no plan here)"
    print(f"store {args.store} is whole: {json.dumps(checked['counts'])}, checked against {against}")
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
    args = parse_args(argv)
    commands = {"inspect": _inspect, "publish": _publish, "verify": _verify}
    if args.command in commands:
        return commands[args.command](args)
    try:
        config = load_config(args.config, args.overrides)
    except Exception as err:
        print(f"error: bad config {args.config}: {err}", file=sys.stderr)
        return 2
    try:
        summary = precompute(
            config, limit=args.limit, dry_run=args.dry_run, retry_failed=args.retry_failed,
            overwrite=args.overwrite, progress=not args.no_progress, new_run=args.new_run,
        )  # fmt: skip
    except (EngineError, FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.dry_run:
        _print_plan(summary)
    else:
        print(summary["status"])
        if summary["published"]:
            print(f"see report.json; look at it with: python -m data_engine inspect {config.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
