"""The PatchAlign3D model family: grouping, tokenizer, transformer, network and checkpoints."""

from patchalign3d.model.grouping import Patches, farthest_point_sample, group_points, knn, nearest_center
from patchalign3d.model.patchalign3d import (
    PatchAlign3D,
    PatchAlign3DConfig,
    PointPatchEncoder,
    patchalign3d_base,
    patchalign3d_tiny,
)

__all__ = [
    "Patches", "farthest_point_sample", "group_points", "knn", "nearest_center",
    "PatchAlign3D", "PatchAlign3DConfig", "PointPatchEncoder", "patchalign3d_base", "patchalign3d_tiny",
]
