"""``patchalign3d app [--host H] [--port P] [--checkpoint C] [--text-bank B | --text-encoder E]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from patchalign3d.app.segmenter import AppLimits, AppSegmenter
from patchalign3d.command_line import EXIT_FAILURE, EXIT_STATUS_HELP, error_message, run_command
from patchalign3d.errors import WeightsUnavailableError

RANDOM_MODEL_NOTE = ("Demo mode: a tiny model with RANDOM weights (--random-model). The parts it shows are "
                     "meaningless; start the app with --checkpoint for real results.")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="patchalign3d app", description="A web app (Gradio): upload a shape, name its parts, "
                                "see and download them. API endpoint 'segment' for gradio_client.",
                                epilog=EXIT_STATUS_HELP.capitalize() + ".")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--checkpoint", default=None,
                   help="released .pt, Lightning .ckpt, save_pretrained folder or Hub repo id (default: the release on the Hub)")
    text = p.add_mutually_exclusive_group()
    text.add_argument("--text-bank", default=None, help="a saved TextBank (.pt): only its names can be asked for")
    text.add_argument("--text-encoder", default=None, help="'minilm', 'openclip:MODEL/PRETRAINED' or 'hf:NAME' (default: as trained)")
    p.add_argument("--random-model", action="store_true",
                   help="a tiny model with random weights and the offline MiniLM text encoder: to try the app, not for results")
    p.add_argument("--max-upload-mb", type=float, default=AppLimits.max_upload_mb)
    p.add_argument("--max-points", type=int, default=AppLimits.max_points, help="largest point cloud accepted")
    p.add_argument("--max-faces", type=int, default=AppLimits.max_faces, help="largest mesh accepted")
    p.add_argument("--device", default=None)
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a PyTorch checkpoint that needs full unpickling (only for files you trust)")
    return p


def random_demo_model() -> Any:
    """A tiny random model whose text head matches the offline MiniLM encoder (what --random-model serves)."""
    import torch

    from patchalign3d.model import patchalign3d_tiny
    from patchalign3d.text.encoders import MINILM_NAME

    torch.manual_seed(0)
    model = patchalign3d_tiny(text_dim=384).eval()
    model.text_meta = {"backend": "transformers", "text_dim": 384, "model": MINILM_NAME, "pretrained": True}
    return model


def build_segmenter(args: argparse.Namespace) -> AppSegmenter:
    import patchalign3d as pa

    limits = AppLimits(max_upload_mb=args.max_upload_mb, max_points=args.max_points, max_faces=args.max_faces)
    if args.random_model:
        model, note = random_demo_model(), RANDOM_MODEL_NOTE
    else:
        model, note = pa.load_model(args.checkpoint, device=args.device, trust_pickle=args.trust_pickle), None
    text = pa.TextBank.load(args.text_bank) if args.text_bank else args.text_encoder
    return AppSegmenter(model, text, limits, note)


def app_main(argv: Sequence[str]) -> int:
    """Entry point of ``patchalign3d app``; returns when the server stops."""
    args = _parser().parse_args(argv)
    return run_command("patchalign3d app", lambda: _serve(args))


def _serve(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("patchalign3d app: error: the app needs Gradio: pip install 'patchalign3d[app]'", file=sys.stderr)
        return EXIT_FAILURE
    try:
        segmenter = build_segmenter(args)
    except WeightsUnavailableError as err:
        print(f"patchalign3d app: error: no model weights. {error_message(err)} Or start it with --random-model to "
              "try the page (meaningless parts).", file=sys.stderr)
        return EXIT_FAILURE
    from patchalign3d.app.ui import build_app, launch

    print(f"patchalign3d app on http://{args.host}:{args.port}" + (f"  ({segmenter.note})" if segmenter.note else ""))
    launch(build_app(segmenter), host=args.host, port=args.port, max_upload_mb=args.max_upload_mb)
    return 0
