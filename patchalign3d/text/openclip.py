"""OpenCLIP text encoders: only the text tower of an open_clip model.

:class:`OpenCLIPTextEncoder` builds the tower from open_clip's own model config and reads only the
text-tower tensors from the pretrained file. The default, ``ViT-bigG-14`` / ``laion2b_s39b_b160k``
(1280-d), is the encoder of the released model; its image tower (1.8B parameters) is never instantiated.
open_clip (which pulls in timm and torchvision) is imported when an encoder is built, not with this module.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from patchalign3d.errors import WeightsUnavailableError
from patchalign3d.text.interface import (
    DeviceLike,
    TextEncoder,
    TorchTextEncoder,
    hub_offline,
    hub_progress,
    offline_note,
    unavailable_as_error,
)

DEFAULT_OPENCLIP_MODEL = "ViT-bigG-14"
DEFAULT_OPENCLIP_PRETRAINED = "laion2b_s39b_b160k"


# Top-level keys of the text tower in an open_clip ``CLIP`` state dict; ``CustomTextCLIP`` nests them under
# ``text.``. Everything else (``visual.*``, ``logit_scale``...) belongs to other parts and is never read.
_OPENCLIP_TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.",
                           "text_projection", "cls_emb")


def _openclip_text_keys(keys: Sequence[str]) -> dict[str, str]:
    """Map checkpoint keys to text-tower keys: {checkpoint key: tower key}."""
    def strip(k: str) -> str:
        return k[len("module."):] if k.startswith("module.") else k

    if any(strip(k).startswith("text.") for k in keys):
        return {k: strip(k)[len("text."):] for k in keys if strip(k).startswith("text.")}
    return {k: strip(k) for k in keys if strip(k).startswith(_OPENCLIP_TEXT_PREFIXES)}


def _read_openclip_text_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read only the text-tower tensors of an open_clip checkpoint (.safetensors, .pt, .bin).

    safetensors files are read tensor by tensor and torch files are memory-mapped, so the image tower's
    bytes are never loaded into memory.
    """
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt", device="cpu") as f:
            mapping = _openclip_text_keys(list(f.keys()))
            sd = {dst: f.get_tensor(src) for src, dst in mapping.items()}
    else:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
            ckpt = ckpt["state_dict"]
        if not isinstance(ckpt, dict):
            raise ValueError(f"{path} does not hold an open_clip state dict (got {type(ckpt).__name__})")
        mapping = _openclip_text_keys(list(ckpt.keys()))
        sd = {dst: ckpt[src] for src, dst in mapping.items()}
    if not sd:
        raise ValueError(f"{path} holds no open_clip text-tower weights (no token_embedding, transformer)")
    return sd


def _openclip_download_hint(model_name: str, pretrained: str, cfg: dict, cache_dir: str | None) -> str:
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)  # "org/repo/" names the repo's default weights file
        filename = filename or "open_clip_model.safetensors"
        opt = f" --cache-dir {cache_dir}" if cache_dir else ""
        where = "" if cache_dir else " (into the Hugging Face cache, see HF_HOME)"
        fetch = f"`hf download {repo} {filename}{opt}`{where}"
    else:
        target = cache_dir or os.path.expanduser("~/.cache/clip")
        fetch = f"{cfg.get('url')} into {target}"
    return (
        f"OpenCLIP weights {model_name}/{pretrained} are needed. On a machine with network access download "
        f"{fetch}; or pass pretrained='/path/to/checkpoint' (only its text-tower tensors are read), "
        "or pretrained=None for random weights."
    )


def _resolve_openclip_checkpoint(model_name: str, pretrained: str, cache_dir: str | None) -> tuple[str, dict]:
    """Local path of the pretrained file (downloading if allowed) and its open_clip pretrained config."""
    candidate = os.path.expanduser(pretrained)
    if os.path.isfile(candidate):
        return candidate, {}
    from open_clip import pretrained as oc_pretrained

    cfg = oc_pretrained.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        if os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
            raise FileNotFoundError(f"OpenCLIP checkpoint file not found: {pretrained}")
        tags = oc_pretrained.list_pretrained_tags_by_model(model_name)
        raise ValueError(
            f"unknown pretrained tag {pretrained!r} for OpenCLIP model {model_name!r}; known tags: {tags}. "
            "Pass a checkpoint path, or None for random weights."
        )
    hint = _openclip_download_hint(model_name, pretrained, cfg, cache_dir)
    if hub_offline() and not cfg.get("hf_hub") and cfg.get("url"):
        # open_clip would call urllib directly; in offline mode only an already downloaded file will do.
        local = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
        if not os.path.isfile(local):
            raise WeightsUnavailableError(f"{local} is not cached{offline_note()}.\n{hint}")
    with unavailable_as_error(f"OpenCLIP weights {model_name}/{pretrained}", hint):
        path = oc_pretrained.download_pretrained(cfg, cache_dir=cache_dir)
    if not path:
        raise WeightsUnavailableError(
            f"open_clip found no download source for {model_name}/{pretrained}.\n{hint}"
        )
    return path, cfg


class OpenCLIPTextEncoder(TorchTextEncoder):
    """Text tower of an open_clip model; the image tower is never built.

    Args:
        model_name: an open_clip model config name (``open_clip.list_models()``).
        pretrained: an open_clip pretrained tag for that model, a checkpoint path (.safetensors/.pt/.bin),
            or None for random weights (recorded in the metadata; such an encoder is never cached).
        device: where the tower runs (default: CUDA when available).
        cache_dir: download cache passed to open_clip / huggingface_hub.
        dtype: optional weight dtype, e.g. ``torch.float16`` on a GPU; outputs are always float32.
        progress: show download progress bars (a library call is silent by default).

    Raises:
        WeightsUnavailableError: the weights are not cached and cannot be downloaded (e.g. offline); raised
            before anything is built.
    """

    backend = "open_clip"

    def __init__(
        self,
        model_name: str = DEFAULT_OPENCLIP_MODEL,
        pretrained: str | None = DEFAULT_OPENCLIP_PRETRAINED,
        device: DeviceLike = None,
        cache_dir: str | os.PathLike | None = None,
        *,
        dtype: torch.dtype | None = None,
        progress: bool = False,
    ) -> None:
        import open_clip

        if model_name.startswith(("hf-hub:", "local-dir:")):
            raise ValueError(
                f"OpenCLIPTextEncoder takes a built-in open_clip model name, got {model_name!r}; "
                "download the checkpoint and pass the architecture name plus pretrained=<path> instead."
            )
        model_cfg = open_clip.get_model_config(model_name)
        if model_cfg is None:
            raise ValueError(f"unknown open_clip model {model_name!r}; see open_clip.list_models()")
        cache_dir = os.fspath(cache_dir) if cache_dir is not None else None

        checkpoint, pretrained_cfg = None, {}
        with hub_progress(progress):
            if pretrained is not None:
                # Resolve (and fail) before building anything: the bigG tower alone takes seconds to allocate.
                checkpoint, pretrained_cfg = _resolve_openclip_checkpoint(model_name, pretrained, cache_dir)
            with unavailable_as_error(f"the tokenizer of OpenCLIP {model_name}"):
                tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
        quick_gelu = bool(model_cfg.get("quick_gelu", False) or pretrained_cfg.get("quick_gelu", False))
        if pretrained is None:
            label = None
        elif checkpoint is not None and not pretrained_cfg:
            label = os.path.abspath(checkpoint)
        else:
            label = pretrained
        self._setup(model_cfg["text_cfg"], model_cfg["embed_dim"], quick_gelu, checkpoint, tokenizer,
                    model_name, label, device, dtype)

    @classmethod
    def from_config(
        cls,
        text_cfg: dict[str, Any],
        embed_dim: int,
        checkpoint: str | os.PathLike | None = None,
        device: DeviceLike = "cpu",
        *,
        quick_gelu: bool = False,
        dtype: torch.dtype | None = None,
    ) -> OpenCLIPTextEncoder:
        """Text tower from a custom open_clip ``text_cfg`` (fields of ``open_clip.model.CLIPTextCfg``).

        Random weights unless ``checkpoint`` names an open_clip checkpoint of a matching model, from which
        only the text keys are read. Tokenisation uses open_clip's CLIP BPE tokenizer (so ``vocab_size`` must
        be at least 49408) unless ``text_cfg`` names an ``hf_tokenizer_name``.
        """
        from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

        text_cfg = dict(text_cfg)
        ctx = text_cfg.get("context_length", 77)
        if text_cfg.get("hf_tokenizer_name"):
            with unavailable_as_error(f"tokenizer {text_cfg['hf_tokenizer_name']!r}"), hub_progress(False):
                tokenizer = HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=ctx)
        else:
            tokenizer = SimpleTokenizer(context_length=ctx)
            if text_cfg.get("vocab_size", 49408) < tokenizer.vocab_size:
                raise ValueError(f"text_cfg vocab_size must be >= {tokenizer.vocab_size} (CLIP tokenizer)")
        digest = hashlib.sha256(json.dumps([text_cfg, embed_dim, quick_gelu], sort_keys=True).encode())
        name = f"custom-{digest.hexdigest()[:12]}"
        label = os.path.abspath(os.fspath(checkpoint)) if checkpoint is not None else None
        self = cls.__new__(cls)
        self._setup(text_cfg, embed_dim, quick_gelu, checkpoint, tokenizer, name, label, device, dtype)
        return self

    def _setup(self, text_cfg: dict, embed_dim: int, quick_gelu: bool, checkpoint, tokenizer, model_name: str,
               pretrained: str | None, device: DeviceLike, dtype: torch.dtype | None) -> None:
        from open_clip.model import _build_text_tower

        TextEncoder.__init__(self, device)
        text_cfg = dict(text_cfg)
        if text_cfg.get("hf_model_name"):
            # An HF text backbone would otherwise download its own pretrained weights, then be overwritten.
            text_cfg["hf_model_pretrained"] = False
        cast = dtype if dtype in (torch.float16, torch.bfloat16) else None  # selects fp32 LayerNorms
        # open_clip's own text-tower builder: the same module CLIP builds, without the visual tower.
        tower = _build_text_tower(embed_dim, text_cfg, quick_gelu=quick_gelu, cast_dtype=cast)
        if checkpoint is not None:
            sd = _read_openclip_text_state_dict(checkpoint)
            missing, unexpected = tower.load_state_dict(sd, strict=False)
            if missing or unexpected:
                raise RuntimeError(
                    f"{checkpoint} does not match the {model_name} text tower: missing {list(missing)[:8]}, "
                    f"unexpected {list(unexpected)[:8]}"
                )
            del sd
        self.module = self._freeze(tower, dtype)
        self.tokenizer = tokenizer
        self._model_name = model_name
        self._pretrained = pretrained
        # proj_type "none" leaves a TextTransformer unprojected: its output is then the tower width
        projected = getattr(tower, "text_projection", True) is not None
        self._dim = int(embed_dim if projected else text_cfg.get("width", 512))

    # -- interface ---------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def pretrained(self) -> str | None:
        return self._pretrained

    @property
    def cacheable(self) -> bool:
        return self._pretrained is not None

    @property
    def identifier(self) -> str:
        return f"open_clip:{self._model_name}/{self._pretrained or 'random'}"

    def meta(self) -> dict[str, Any]:
        return {"backend": self.backend, "text_dim": self.dim, "clip_model": self._model_name,
                "clip_pretrained": self._pretrained}

    def _encode_batch(self, texts: list[str]) -> Tensor:
        tokens = self.tokenizer(texts).to(self._device)
        out = self.module(tokens)
        return out[0] if isinstance(out, (tuple, list)) else out
