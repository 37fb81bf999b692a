"""patchalign3d: zero-shot 3D part segmentation from plain-language part names, in one feed-forward pass.

>>> import patchalign3d as pa
>>> seg = pa.segment(points, ["seat", "back", "leg"], model=pa.load_model("patchalign3d.pt"))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Heavy imports (open_clip, transformers, lightning) stay lazy so `import patchalign3d` is quick.
_LAZY = {
    "segment": "patchalign3d.api",
    "segment_mesh": "patchalign3d.api",
    "segment_files": "patchalign3d.batch",
    "Segmentation": "patchalign3d.results",
    "MeshSegmentation": "patchalign3d.results",
    "load_model": "patchalign3d.model.checkpoint",
    "export_released": "patchalign3d.model.checkpoint",
    "PatchAlign3D": "patchalign3d.model.patchalign3d",
    "PatchAlign3DConfig": "patchalign3d.model.patchalign3d",
    "TextBank": "patchalign3d.text",
    "get_text_encoder": "patchalign3d.text",
    "CheckpointError": "patchalign3d.errors",
    "WeightsUnavailableError": "patchalign3d.errors",
}

__all__ = [
    "CheckpointError",
    "MeshSegmentation",
    "PatchAlign3D",
    "PatchAlign3DConfig",
    "Segmentation",
    "TextBank",
    "WeightsUnavailableError",
    "export_released",
    "get_text_encoder",
    "load_model",
    "segment",
    "segment_files",
    "segment_mesh",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover
    from patchalign3d.api import segment, segment_mesh
    from patchalign3d.batch import segment_files
    from patchalign3d.errors import CheckpointError, WeightsUnavailableError
    from patchalign3d.model.checkpoint import export_released, load_model
    from patchalign3d.model.patchalign3d import PatchAlign3D, PatchAlign3DConfig
    from patchalign3d.results import MeshSegmentation, Segmentation
    from patchalign3d.text import TextBank, get_text_encoder


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'patchalign3d' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
