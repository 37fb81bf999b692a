"""What the app does with one request, without Gradio: check the input against the limits, segment, write files."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from patchalign3d.data.io import SUPPORTED_SUFFIXES, ShapeFileError, load_mesh_pieces, load_points


class AppInputError(ValueError):
    """A request the app refuses, with a message meant for the person who made it."""


@dataclass(frozen=True)
class AppLimits:
    """What one request may hold (a public app runs on someone's CPU)."""

    max_upload_mb: float = 50.0
    #: points of a point-cloud file
    max_points: int = 500_000
    #: faces of a mesh
    max_faces: int = 1_000_000
    #: points sampled on a mesh's surface (the model was trained on 2048)
    max_sample_points: int = 16_384


@dataclass
class AppResult:
    """Files of one request: ``viewer`` (a GLB coloured by part) and ``downloads``, plus a markdown summary."""

    viewer: Path
    parts_glb: Path | None
    downloads: list[Path] = field(default_factory=list)
    summary: str = ""


def split_names(text: str | None) -> list[str]:
    """``"seat, back,,leg "`` -> ``["seat", "back", "leg"]``."""
    return [n.strip() for n in (text or "").split(",") if n.strip()]


class AppSegmenter:
    """Holds the model and the text source; :meth:`run` serves one request.

    Args:
        model: a loaded :class:`~patchalign3d.PatchAlign3D`.
        text: what :func:`~patchalign3d.segment` takes as ``text`` (a TextBank, an encoder spec, or None).
        limits: the request limits.
        note: a line the page shows under its title (e.g. that the model is a random demo model).
    """

    def __init__(self, model: Any, text: Any = None, limits: AppLimits = AppLimits(), note: str | None = None) -> None:
        self.model = model
        self.text = text
        self.limits = limits
        self.note = note

    def run(self, shape: str | os.PathLike | None, part_names: str | None, *, assign: str = "nearest",
            num_points: int = 2048, out_dir: str | os.PathLike | None = None) -> AppResult:
        """Segment the shape file ``shape`` into the comma-separated ``part_names``; raise :class:`AppInputError`."""
        import patchalign3d as pa

        path = self._check_file(shape)
        names = split_names(part_names)
        if not names:
            raise AppInputError("type at least one part name, e.g. 'seat, back, leg'")
        lim = self.limits
        if not 32 <= int(num_points) <= lim.max_sample_points:
            raise AppInputError(f"points on the surface must be between 32 and {lim.max_sample_points}, got {num_points}")
        try:
            pieces = load_mesh_pieces(path)
            cloud = None if pieces else load_points(path)
        except (ShapeFileError, OSError) as err:
            raise AppInputError(f"{path.name} could not be read: {str(err).removeprefix(f'{path}: ')}") from None
        faces = sum(len(p.faces) for p in pieces)
        if pieces and faces > lim.max_faces:
            raise AppInputError(f"{path.name} has {faces:,} faces; this app takes meshes of up to {lim.max_faces:,} faces")
        if cloud is not None and len(cloud) > lim.max_points:
            raise AppInputError(f"{path.name} has {len(cloud):,} points; this app takes point clouds of up to {lim.max_points:,} points")
        opts = dict(model=self.model, text=self.text, assign=assign)
        try:
            if pieces:
                seg = pa.segment_mesh(trimesh.Scene(pieces), names, num_points=int(num_points), **opts)
            else:
                seg = pa.segment(cloud, names, **opts)
        except KeyError as err:
            raise AppInputError(str(err.args[0] if err.args else err)) from None
        except ValueError as err:
            raise AppInputError(str(err)) from None
        out = Path(out_dir or tempfile.mkdtemp(prefix="patchalign3d-app-"))
        out.mkdir(parents=True, exist_ok=True)
        return self._write(seg, path.stem, out, is_mesh=bool(pieces))

    def _check_file(self, shape: str | os.PathLike | None) -> Path:
        if shape is None or str(shape) == "":
            raise AppInputError("upload a mesh or point cloud, or pick one of the examples")
        path = Path(shape)
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise AppInputError(f"{path.name}: unsupported file type {path.suffix!r}; use one of {' '.join(SUPPORTED_SUFFIXES)}")
        if not path.is_file():
            raise AppInputError(f"{path.name} did not arrive; upload it again")
        size_mb = path.stat().st_size / 2**20
        if size_mb > self.limits.max_upload_mb:
            raise AppInputError(f"{path.name} is {size_mb:.1f} MB; this app takes files of up to {self.limits.max_upload_mb:g} MB")
        return path

    @staticmethod
    def _write(seg: Any, stem: str, out: Path, *, is_mesh: bool) -> AppResult:
        from patchalign3d.outputs import part_rgba

        viewer = out / f"{stem}_view.glb"
        if is_mesh:
            parts_glb = seg.save(out / f"{stem}_parts.glb")  # the input's appearance, one node per part
            downloads = [parts_glb, out / f"{stem}_parts.json", seg.save(out / f"{stem}_parts.npz")]
            seg.save(viewer, colors="parts")
            viewer.with_suffix(".json").unlink()
            counts, unit = np.bincount(seg.face_labels, minlength=len(seg.part_names)), "faces"
        else:
            parts_glb = None
            downloads = [seg.save(out / f"{stem}_parts.ply"), seg.save(out / f"{stem}_parts.npz")]
            _points_glb(seg.points, part_rgba(len(seg.part_names))[seg.labels], viewer)
            counts, unit = np.bincount(seg.labels, minlength=len(seg.part_names)), "points"
        rgba = part_rgba(len(seg.part_names))
        rows = [f"| <span style='color:#{c[0]:02x}{c[1]:02x}{c[2]:02x}'>■</span> {n} | {k:,} |"
                for n, c, k in zip(seg.part_names, rgba, counts)]
        summary = "\n".join([f"**{stem}**: {int(counts.sum()):,} {unit}", "", f"| part | {unit} |", "|---|---|", *rows])
        return AppResult(viewer=viewer, parts_glb=parts_glb, downloads=downloads, summary=summary)


def _points_glb(points: np.ndarray, rgba: np.ndarray, path: Path) -> Path:
    trimesh.Scene(trimesh.PointCloud(np.asarray(points, np.float64), colors=rgba)).export(path)
    return path
