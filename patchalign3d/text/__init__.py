"""Text side of PatchAlign3D: name cleaning, prompt templates, text encoders and text banks."""

from .bank import (
    CATEGORY_TEMPLATES,
    DEFAULT_TEMPLATES,
    MissingPartNamesError,
    TextBank,
    clean_name,
    default_cache_dir,
    validate_part_names,
)
from .encoders import (
    HFTextEncoder,
    OpenCLIPTextEncoder,
    TextEncoder,
    WeightsUnavailableError,
    get_text_encoder,
    spec_from_meta,
)

__all__ = [
    "clean_name",
    "validate_part_names",
    "DEFAULT_TEMPLATES",
    "CATEGORY_TEMPLATES",
    "TextEncoder",
    "OpenCLIPTextEncoder",
    "HFTextEncoder",
    "get_text_encoder",
    "spec_from_meta",
    "TextBank",
    "MissingPartNamesError",
    "WeightsUnavailableError",
    "default_cache_dir",
]
