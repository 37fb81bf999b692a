"""Text side of PatchAlign3D: name cleaning, prompt templates, text encoders and text banks."""

from .bank import (
    CATEGORY_TEMPLATES,
    DEFAULT_TEMPLATES,
    ENSEMBLE_TEMPLATES,
    PAIR_SEPARATOR,
    TEMPLATE_SETS,
    MissingPartNamesError,
    TextBank,
    clean_name,
    default_cache_dir,
    pair_key,
    validate_part_names,
)
from .encoders import (
    HFTextEncoder,
    OpenCLIPTextEncoder,
    TextEncoder,
    UnknownTextEncoderError,
    WeightsUnavailableError,
    clear_text_encoder_cache,
    get_text_encoder,
    spec_from_meta,
)

__all__ = [
    "clean_name",
    "validate_part_names",
    "DEFAULT_TEMPLATES",
    "CATEGORY_TEMPLATES",
    "ENSEMBLE_TEMPLATES",
    "PAIR_SEPARATOR",
    "TEMPLATE_SETS",
    "pair_key",
    "TextEncoder",
    "OpenCLIPTextEncoder",
    "HFTextEncoder",
    "get_text_encoder",
    "clear_text_encoder_cache",
    "spec_from_meta",
    "UnknownTextEncoderError",
    "TextBank",
    "MissingPartNamesError",
    "WeightsUnavailableError",
    "default_cache_dir",
]
