"""Keypoints nobody named: consistent keypoints across a category from a PatchAlign3D model, without labels.

>>> from patchalign3d.keypoints.discover import EmbeddingKeypoints, KeyPointDiffuser
>>> finder = EmbeddingKeypoints(model, k=10).fit(shapes_of_a_category)     # StableKeypoints, transplanted to 3D
>>> kps = finder.predict(shape)                                           # kps.names: kp0 ... kp9, same slots
>>> diffuser = KeyPointDiffuser.load_from_checkpoint("last.ckpt")          # lightning fit -c configs/keypoints/diffuser.yaml
>>> kps = diffuser.predict(shape)

Metrics (:mod:`.metrics`): the dual alignment score, KeyPointDiffuser's keypoint correlation and
StableKeypoints' regression error, each with a random baseline (:mod:`.evaluate`).
"""

from __future__ import annotations

from patchalign3d.keypoints.discover.data import ShapesDataModule, fit_diffuser
from patchalign3d.keypoints.discover.diffuser import KeyPointDiffuser
from patchalign3d.keypoints.discover.embeddings import EmbeddingKeypoints, keypoint_names
from patchalign3d.keypoints.discover.evaluate import CategoryTask, evaluate_method
from patchalign3d.keypoints.discover.metrics import (
    Annotated,
    dual_alignment,
    keypoint_correlation,
    regression_error,
    side_ids,
)

__all__ = [
    "Annotated",
    "CategoryTask",
    "EmbeddingKeypoints",
    "KeyPointDiffuser",
    "ShapesDataModule",
    "dual_alignment",
    "evaluate_method",
    "fit_diffuser",
    "keypoint_correlation",
    "keypoint_names",
    "regression_error",
    "side_ids",
]
