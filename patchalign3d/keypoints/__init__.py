"""Named 3D keypoints from PatchAlign3D's patch features, ZeroKey-style lifting, and the KeypointNet benchmark.

>>> from patchalign3d.keypoints import detect_keypoints, KeypointPrototypes, lift_keypoints
>>> kps = detect_keypoints(cloud, ["leg end", "seat corner"], model=model)              # zero-shot
>>> kps = KeypointPrototypes(model).fit(shapes, annotations).predict(cloud)             # few-shot
>>> lifted = lift_keypoints(mesh, ["leg end"], pointer=FeaturePointer(model))           # render + point + lift
>>> names = KeypointNamer().names("chair")                                              # which names to ask

Modules, bottom up: ``shapes`` (names, shape input, scale) and ``geodesic`` / ``metrics`` / ``cluster``;
``scores`` (zero-shot field, probabilities); ``peaks`` (peaks, point-resolution
placement); ``pointers``; ``lifting``; ``detect`` / ``fewshot``; ``namer``; ``keypointnet`` / ``benchmark`` /
``synthetic``; ``commands`` (CLI). Lifting renders with the data engine (``data_engine.cameras``,
``data_engine.render``), imported lazily.
"""

from __future__ import annotations

from patchalign3d.keypoints.benchmark import PredictionsError, evaluate_keypointnet, read_predictions
from patchalign3d.keypoints.cluster import weighted_hdbscan
from patchalign3d.keypoints.detect import detect_keypoints
from patchalign3d.keypoints.fewshot import KeypointPrototypes
from patchalign3d.keypoints.geodesic import geodesic_distances, geodesic_nms, knn_graph
from patchalign3d.keypoints.keypointnet import DEFAULT_NAMES, KeypointNet, KeypointNetShape
from patchalign3d.keypoints.lifting import LiftResult, lift_keypoints
from patchalign3d.keypoints.metrics import THRESHOLDS, KeypointIoU
from patchalign3d.keypoints.namer import KeypointNamer
from patchalign3d.keypoints.pointers import (
    FeaturePointer,
    MolmoPointer,
    OraclePointer,
    Pointer2D,
    RenderedView,
    parse_molmo_points,
)
from patchalign3d.keypoints.result import Keypoints

__all__ = [
    "DEFAULT_NAMES",
    "THRESHOLDS",
    "FeaturePointer",
    "KeypointIoU",
    "KeypointNamer",
    "KeypointNet",
    "KeypointNetShape",
    "KeypointPrototypes",
    "Keypoints",
    "LiftResult",
    "MolmoPointer",
    "OraclePointer",
    "Pointer2D",
    "PredictionsError",
    "RenderedView",
    "detect_keypoints",
    "evaluate_keypointnet",
    "geodesic_distances",
    "geodesic_nms",
    "knn_graph",
    "lift_keypoints",
    "parse_molmo_points",
    "read_predictions",
    "weighted_hdbscan",
]
