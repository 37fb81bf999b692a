"""Text encoders by name: :func:`get_text_encoder` builds one from a short spec, once per process, and
:func:`spec_from_meta` turns recorded metadata (a bank's, a checkpoint's) back into that spec.

The registry keeps what it built in one cache keyed by (spec, device): repeated ``segment()`` calls, the
app's requests and the keypoint detectors share one encoder instead of loading the weights again. Only
encoders of pretrained weights are kept (random weights are rebuilt, as asked); building holds a lock, so
threads asking for the same encoder get one object. :func:`clear_text_encoder_cache` lets them go.
"""

from __future__ import annotations

import threading
from typing import Any

from patchalign3d.text.hf import MINILM_NAME, HFTextEncoder
from patchalign3d.text.interface import DeviceLike, TextEncoder, resolve_device
from patchalign3d.text.openclip import (
    DEFAULT_OPENCLIP_MODEL,
    DEFAULT_OPENCLIP_PRETRAINED,
    OpenCLIPTextEncoder,
)

#: Encoders built by :func:`get_text_encoder`, keyed by (backend, its arguments..., device).
_ENCODERS: dict[tuple, TextEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


class UnknownTextEncoderError(ValueError):
    """Text metadata (of a bank or a checkpoint) that does not say which encoder made the embeddings."""


def spec_from_meta(meta: dict[str, Any] | None, source: str = "the text metadata") -> str | None:
    """The :func:`get_text_encoder` spec of the encoder a metadata dict describes.

    Reads this package's ``encoder.meta()`` (``backend`` ``"open_clip"`` or ``"transformers"``), the release's
    text banks (``backend: "clip"`` with ``clip_model`` and ``clip_pretrained``: OpenCLIP) and ``{"spec": ...}``.
    Checkpoints store the meta of the text bank they were trained with; this turns it back into an encoder.

    Returns:
        The spec, or None when ``meta`` is None or empty (nothing recorded: the caller's default applies).

    Raises:
        UnknownTextEncoderError: ``meta`` records something that names no encoder this package can rebuild;
            a silent fallback to another encoder would give embeddings of another space.
    """
    if not meta:
        return None
    if not isinstance(meta, dict):
        raise UnknownTextEncoderError(f"{source} must be a dict, got {type(meta).__name__}")
    spec, backend = meta.get("spec"), meta.get("backend")
    if isinstance(spec, str) and spec.strip():
        return spec
    if backend == "open_clip" and meta.get("clip_model"):
        return f"openclip:{meta['clip_model']}/{meta.get('clip_pretrained') or 'random'}"
    if backend == "clip" and meta.get("clip_model") and meta.get("clip_pretrained"):
        return f"openclip:{meta['clip_model']}/{meta['clip_pretrained']}"  # the release's build_text_bank
    if backend == "transformers" and meta.get("model"):
        return "minilm" if meta["model"] == MINILM_NAME else f"hf:{meta['model']}"
    shown = {k: meta[k] for k in ("backend", "clip_model", "clip_pretrained", "model", "encoder") if k in meta}
    raise UnknownTextEncoderError(
        f"{source} does not say which text encoder made the embeddings ({shown or sorted(meta)}); "
        "name the encoder yourself (text=... in Python, --text-encoder on the command line)"
    )


def get_text_encoder(
    spec: str | TextEncoder | None = None, device: DeviceLike = None, *, progress: bool = False
) -> TextEncoder:
    """The text encoder a short spec names, built once per process and device and then reused.

    Specs: ``None`` / ``"openclip"`` (OpenCLIP ViT-bigG-14, laion2b_s39b_b160k, as released);
    ``"openclip:MODEL"`` or ``"openclip:MODEL/PRETRAINED"`` (PRETRAINED: a tag, a checkpoint path, or
    ``"random"``); ``"minilm"`` (offline all-MiniLM-L6-v2); ``"hf:NAME_OR_PATH"`` (transformers, auto
    pooling).
    A :class:`TextEncoder` is returned as is (moved to ``device`` when one is given).

    The encoder returned for a spec of pretrained weights is shared by every caller in the process: pass
    ``device`` rather than moving it, and build a backend class yourself for a private one. ``progress``
    shows download and weight-loading bars while it is built (silent by default).
    """
    if isinstance(spec, TextEncoder):
        return spec.to(device) if device is not None else spec
    build = _parse_spec(spec)
    where = resolve_device(device)
    key = (*build, str(where))
    with _ENCODERS_LOCK:
        cached = _ENCODERS.get(key)
        if cached is not None and cached.device == where:  # (a caller may have moved it after all)
            return cached
        encoder = _build(build, where, progress)
        if encoder.cacheable:
            _ENCODERS[key] = encoder
        return encoder


def clear_text_encoder_cache() -> None:
    """Forget the encoders :func:`get_text_encoder` built (their memory is freed once nothing else holds them)."""
    with _ENCODERS_LOCK:
        _ENCODERS.clear()


def _parse_spec(spec: str | None) -> tuple[Any, ...]:
    """A spec -> ``("openclip", model, weights or None)``, ``("minilm",)`` or ``("hf", name_or_path)``."""
    if spec is None:
        return ("openclip", DEFAULT_OPENCLIP_MODEL, DEFAULT_OPENCLIP_PRETRAINED)
    if not isinstance(spec, str):
        raise TypeError(
            f"text encoder spec must be a string, a TextEncoder or None, got {type(spec).__name__}"
        )
    s = spec.strip()
    low = s.lower()
    if low in ("openclip", "open_clip"):
        return ("openclip", DEFAULT_OPENCLIP_MODEL, DEFAULT_OPENCLIP_PRETRAINED)
    for prefix in ("openclip:", "open_clip:"):
        if low.startswith(prefix):
            model, _, tag = s[len(prefix):].partition("/")
            if not model:
                break
            if not tag and model != DEFAULT_OPENCLIP_MODEL:
                raise ValueError(f"text encoder spec {spec!r} needs a pretrained tag: 'openclip:{model}/TAG'")
            tag = tag or DEFAULT_OPENCLIP_PRETRAINED
            return ("openclip", model, None if tag.lower() in ("random", "none") else tag)
    if low == "minilm":
        return ("minilm",)
    if low.startswith("hf:") and len(s) > 3:
        return ("hf", s[3:])
    raise ValueError(
        f"unknown text encoder spec {spec!r}; use None, 'openclip', 'openclip:MODEL/PRETRAINED', 'minilm' "
        "or 'hf:NAME_OR_PATH'"
    )


def _build(build: tuple[Any, ...], device: DeviceLike, progress: bool) -> TextEncoder:
    kind, *args = build
    if kind == "openclip":
        return OpenCLIPTextEncoder(args[0], args[1], device=device, progress=progress)
    if kind == "minilm":
        return HFTextEncoder.minilm(device=device, progress=progress)
    return HFTextEncoder(args[0], device=device, progress=progress)
