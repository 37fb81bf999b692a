"""Text encoders that turn part names into L2-normalised embeddings: every public name in one place.

The code lives along its jobs: the interface (:mod:`patchalign3d.text.interface`), one module per backend
(:mod:`patchalign3d.text.openclip`: the OpenCLIP text tower; :mod:`patchalign3d.text.hf`: transformers
models, sentence-transformers pooling, MiniLM) and the registry that builds them from specs and reuses
them (:mod:`patchalign3d.text.registry`). This module re-exports them, as it always offered them.
"""

from __future__ import annotations

from patchalign3d.errors import WeightsUnavailableError
from patchalign3d.text.hf import MINILM_NAME, HFTextEncoder, cls_pool, last_token_pool, max_pool, mean_pool
from patchalign3d.text.interface import TextEncoder, TorchTextEncoder
from patchalign3d.text.openclip import (
    DEFAULT_OPENCLIP_MODEL,
    DEFAULT_OPENCLIP_PRETRAINED,
    OpenCLIPTextEncoder,
)
from patchalign3d.text.registry import (
    UnknownTextEncoderError,
    clear_text_encoder_cache,
    get_text_encoder,
    spec_from_meta,
)

__all__ = [
    "WeightsUnavailableError",
    "TextEncoder",
    "TorchTextEncoder",
    "OpenCLIPTextEncoder",
    "HFTextEncoder",
    "get_text_encoder",
    "clear_text_encoder_cache",
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
