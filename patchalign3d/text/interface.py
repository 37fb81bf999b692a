"""The text-encoder interface: :class:`TextEncoder` (strings -> L2-normalised embeddings) and
:class:`TorchTextEncoder` (one frozen ``nn.Module``), plus what every backend shares: devices, offline
checks, one error for missing weights, and silence while weights load.

Backends: :mod:`patchalign3d.text.openclip` and :mod:`patchalign3d.text.hf`; building one from a spec
string (and reusing it): :mod:`patchalign3d.text.registry`.
"""

from __future__ import annotations

import abc
import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patchalign3d.errors import WeightsUnavailableError

DeviceLike = str | torch.device | None

#: Held while the Hugging Face progress-bar switches are flipped (they are process-wide).
_PROGRESS_LOCK = threading.RLock()


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (read at call time, not import time)."""
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:  # pragma: no cover - huggingface_hub is a hard dependency
        pass
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags)


def offline_note() -> str:
    return " (offline mode: HF_HUB_OFFLINE=1)" if hub_offline() else ""


@contextlib.contextmanager
def unavailable_as_error(what: str, hint: str = "") -> Iterator[None]:
    """Turn the many download / cache-miss errors (all ``OSError`` subclasses) into one clear error."""
    try:
        yield
    except WeightsUnavailableError:
        raise
    except OSError as err:
        msg = f"Could not load {what}{offline_note()}: {err}"
        if hint:
            msg += f"\n{hint}"
        raise WeightsUnavailableError(msg) from err


def resolve_device(device: DeviceLike) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of strings, got {type(texts).__name__}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts must all be strings; entries {bad[:10]} are not")
    return list(texts)


@contextlib.contextmanager
def hub_progress(show: bool) -> Iterator[None]:
    """Hugging Face Hub progress bars (downloads) as asked within the block: a library call is silent
    unless ``show``; the switch is restored afterwards (it is process-wide, hence the lock)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    with _PROGRESS_LOCK:
        was_disabled = are_progress_bars_disabled()
        if not show and not was_disabled:
            disable_progress_bars()
        try:
            yield
        finally:
            if are_progress_bars_disabled() != was_disabled:
                (disable_progress_bars if was_disabled else enable_progress_bars)()


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
        self._device = resolve_device(device)

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
        self._device = resolve_device(device)
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
        texts = check_texts(texts)
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


class TorchTextEncoder(TextEncoder):
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
