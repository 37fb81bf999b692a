"""What :func:`~patchalign3d.segment` and :func:`~patchalign3d.segment_mesh` return (writers: :mod:`patchalign3d.outputs`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from patchalign3d import outputs, viz


@dataclass
class Segmentation:
    """The result for one cloud. Arrays are numpy, in the input's order and frame.

    Attributes:
        points: ``(N, 3)`` the input points.
        labels: ``(N,)`` int64 index into ``part_names``.
        point_logits: ``(N, K)``.
        part_names: the K names, as given.
        patch_centers: ``(G, 3)`` patch centres, in the input frame.
        patch_logits: ``(G, K)``.
        dtype: the precision the network ran in, ``"float32"`` or ``"bfloat16"`` (what ``dtype="auto"`` chose).
    """

    points: np.ndarray
    labels: np.ndarray
    point_logits: np.ndarray
    part_names: list[str]
    patch_centers: np.ndarray
    patch_logits: np.ndarray
    dtype: str = "float32"

    @property
    def named_labels(self) -> list[str]:
        """``(N,)`` part name of each point."""
        return [self.part_names[i] for i in self.labels]

    def save(self, path: str | os.PathLike, **options: Any) -> Path:
        """Write the result; the suffix picks the format (see :func:`patchalign3d.outputs.save`).

        ``.npz``: every array and the names. ``.ply``: points coloured by part with an integer ``label``
        property and the part names in the header. Meshes also take ``.glb``/``.gltf``/``.obj`` (one named
        node per part, with a ``.json`` beside it).
        """
        return outputs.save(self, path, **options)

    def to_png(self, path: str | os.PathLike, *, title: str | None = None) -> Path:
        """A picture of the segmentation."""
        return viz.render_segmentation_png(self.points, self.labels, self.part_names, path, title=title)


@dataclass
class MeshSegmentation(Segmentation):
    """A :class:`Segmentation` of points sampled on a mesh, plus per-vertex and per-face labels.

    Attributes:
        mesh: the input as one ``trimesh.Trimesh``; ``vertex_labels`` and ``face_labels`` index its vertices
            and faces.
        pieces: the input's meshes, one per geometry of its scene, each with its own colours, UVs and
            material; ``mesh`` is their concatenation, face for face.
    """

    mesh: Any = None
    vertex_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    face_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pieces: list[Any] = field(default_factory=list)

    def save_parts(self, folder: str | os.PathLike, *, suffix: str = ".glb", **options: Any) -> list[Path]:
        """One file per part in ``folder`` (``<part name><suffix>``); see :func:`patchalign3d.outputs.save_parts`."""
        return outputs.save_parts(self, folder, suffix=suffix, **options)
