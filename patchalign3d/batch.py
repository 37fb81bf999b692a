"""Many shapes at once: files, folders and globs -> one model, batched passes, files per shape, a report.

A shape that cannot be read or segmented is reported (its path and the reason, also in ``report.json``) and
the others are still written.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trimesh

from patchalign3d.data.io import SUPPORTED_SUFFIXES, load_mesh_pieces, load_points
from patchalign3d.outputs import SCENE_SUFFIXES
from patchalign3d.results import MeshSegmentation

#: What ``formats`` may hold: output suffixes, ``png`` (a picture) and ``auto`` (``glb`` for meshes, ``ply`` for clouds).
BATCH_FORMATS = ("auto", "glb", "gltf", "obj", "ply", "npz", "png")
#: Errors that mean "this one shape is bad", as opposed to a bug or an interrupted run.
SHAPE_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError)


@dataclass
class ShapeInput:
    """A file to segment and the name its outputs get (its path below the folder or glob it came from)."""

    path: Path
    stem: Path


@dataclass
class BatchReport:
    """What :func:`segment_files` did: outputs per input, and the inputs that failed with the reason."""

    part_names: list[str]
    written: dict[str, list[str]] = field(default_factory=dict)
    failed: list[dict[str, str]] = field(default_factory=list)
    report_path: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {"part_names": self.part_names, "done": len(self.written), "failed": self.failed, "written": self.written}


def find_shapes(sources: Sequence[str | os.PathLike], *, exclude: Path | None = None) -> tuple[list[ShapeInput], list[dict[str, str]]]:
    """Shape files named by ``sources`` (files, folders searched recursively, globs), and the sources that
    name none (``{"path", "reason"}``). Output stems are unique; files under ``exclude`` are skipped."""
    found: list[ShapeInput] = []
    problems: list[dict[str, str]] = []
    exclude = exclude.resolve() if exclude is not None else None
    for source in sources:
        text = str(source)
        path = Path(text).expanduser()
        if path.is_dir():
            files = [f for f in sorted(path.rglob("*")) if _is_shape(f, path)]
            base, empty = path, f"the folder holds no shape files ({', '.join(SUPPORTED_SUFFIXES)})"
        elif path.is_file():
            files, base, empty = [path], path.parent, ""
        elif glob.has_magic(text):
            files = [Path(f) for f in sorted(glob.glob(os.path.expanduser(text), recursive=True)) if _is_shape(Path(f))]
            base = _glob_base(text)
            empty = f"no shape files match this pattern ({', '.join(SUPPORTED_SUFFIXES)})"
        else:
            problems.append({"path": text, "reason": "no such file or folder"})
            continue
        if exclude is not None:
            files = [f for f in files if not f.resolve().is_relative_to(exclude)]
        if not files:
            problems.append({"path": text, "reason": empty})
        found += [ShapeInput(f, f.relative_to(base).with_suffix("") if f.is_relative_to(base) else Path(f.stem)) for f in files]
    return _unique_stems(found), problems


def _is_shape(path: Path, root: Path | None = None) -> bool:
    hidden = any(part.startswith(".") for part in path.relative_to(root).parts) if root else path.name.startswith(".")
    return path.is_file() and not hidden and path.suffix.lower() in SUPPORTED_SUFFIXES


def _glob_base(pattern: str) -> Path:
    parts = Path(os.path.expanduser(pattern)).parts
    fixed = parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]
    return Path(*fixed) if fixed else Path(".")


def _unique_stems(shapes: list[ShapeInput]) -> list[ShapeInput]:
    # chair.ply and chair.obj in one folder: the second becomes chair_obj; repeated inputs keep one entry
    seen: dict[Path, int] = {}
    taken: set[str] = set()
    out = []
    for shape in shapes:
        key = shape.path.resolve()
        if key in seen:
            continue
        seen[key] = len(out)
        stem = shape.stem
        if str(stem).lower() in taken:
            stem = stem.with_name(f"{stem.name}_{shape.path.suffix.lstrip('.').lower()}")
        n = 1
        while str(stem).lower() in taken:
            n += 1
            stem = stem.with_name(f"{shape.stem.name}_{n}")
        taken.add(str(stem).lower())
        out.append(ShapeInput(shape.path, stem))
    return out


def _load(shape: ShapeInput) -> tuple[str, Any]:
    """``("mesh", pieces)`` or ``("cloud", points)``."""
    pieces = load_mesh_pieces(shape.path)
    if pieces:
        return "mesh", pieces
    return "cloud", load_points(shape.path)


def segment_files(
    sources: Sequence[str | os.PathLike],
    part_names: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    model: Any = None,
    text: Any = None,
    formats: Sequence[str] = ("auto",),
    colors: str = "input",
    split_dir: str | os.PathLike | None = None,
    split_format: str = ".glb",
    num_points: int = 2048,
    batch_size: int = 16,
    progress: bool = True,
    **options: Any,
) -> BatchReport:
    """Segment every shape that ``sources`` name and write ``out_dir/<name>.<format>`` for each.

    Args:
        sources: files, folders (searched recursively) and glob patterns (``"shapes/**/*.glb"``).
        part_names: the K candidate names, the same for every shape.
        out_dir: where outputs go, mirroring the inputs' sub-folders, plus ``report.json``.
        model: a :class:`~patchalign3d.PatchAlign3D` or anything :func:`~patchalign3d.load_model` takes
            (loaded once).
        text: as for :func:`~patchalign3d.segment` (embedded once).
        formats: any of :data:`BATCH_FORMATS`; point clouds get ``.ply`` where a mesh format is asked.
        colors: ``"input"`` or ``"parts"`` for mesh outputs (:func:`patchalign3d.outputs.save`).
        split_dir, split_format: also write one file per part of each mesh, ``split_dir/<name>/<part><split_format>``.
        num_points: points sampled on each mesh's surface.
        batch_size: shapes loaded and run through the network together.
        progress: show a progress bar.
        options: further keyword arguments of :func:`~patchalign3d.segment` (``assign``, ``up_axis``,
            ``max_points`` for point clouds, ``device``, ...).

    Returns:
        A :class:`BatchReport`; ``report.json`` in ``out_dir`` holds the same.
    """
    from tqdm.auto import tqdm

    # torch and the model load when shapes are segmented: the CLI reads BATCH_FORMATS for its --help
    from patchalign3d.api import _resolve_model, _validate_names, text_embeddings

    formats = check_formats(formats)
    names = _validate_names(part_names)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} is a file; with several shapes --out must be a folder")
    shapes, problems = find_shapes(sources, exclude=out_dir)
    report = BatchReport(names, failed=list(problems))
    out_dir.mkdir(parents=True, exist_ok=True)
    report.report_path = out_dir / "report.json"
    net = _resolve_model(model)
    emb = text_embeddings(text, names, net)  # once for every shape
    run = dict(model=net, text=emb, **options)
    bar = tqdm(total=len(shapes), unit="shape", desc="segment", disable=not progress)
    try:
        for start in range(0, len(shapes), batch_size):
            chunk = shapes[start : start + batch_size]
            for shape, seg in _segment_chunk(chunk, names, run, num_points, report):
                try:
                    split = Path(split_dir) / shape.stem if split_dir is not None else None
                    report.written[str(shape.path)] = _write(seg, out_dir / shape.stem, formats, colors, split, split_format)
                except SHAPE_ERRORS as err:
                    report.failed.append({"path": str(shape.path), "reason": f"writing failed: {err}"})
            bar.update(len(chunk))
    finally:
        bar.close()
        report.report_path.write_text(json.dumps(report.to_dict(), indent=1))
    return report


def _segment_chunk(chunk: list[ShapeInput], names: list[str], run: dict, num_points: int, report: BatchReport):
    """Load a chunk, segment its meshes together and its clouds together; on an error, one by one, so that
    only the shape at fault is reported."""
    from patchalign3d.api import segment, segment_mesh

    loaded: dict[str, list[tuple[ShapeInput, Any]]] = {"mesh": [], "cloud": []}
    for shape in chunk:
        try:
            kind, data = _load(shape)
            loaded[kind].append((shape, data))
        except SHAPE_ERRORS as err:
            report.failed.append({"path": str(shape.path), "reason": _reason(err, shape.path)})
    mesh_opts = {k: v for k, v in run.items() if k != "max_points"}

    def run_kind(kind: str, items: list) -> list:
        data = [d if kind == "cloud" else trimesh.Scene(d) for _, d in items]
        if kind == "mesh":
            return segment_mesh(data, names, num_points=num_points, **mesh_opts)
        return segment(data, names, **run)

    for kind, items in loaded.items():
        if not items:
            continue
        try:
            segs = run_kind(kind, items)
        except SHAPE_ERRORS:
            segs = []
            for item in items:
                try:
                    segs.append(run_kind(kind, [item])[0])
                except SHAPE_ERRORS as err:
                    segs.append(None)
                    report.failed.append({"path": str(item[0].path), "reason": _reason(err, item[0].path)})
        for (shape, _), seg in zip(items, segs):
            if seg is not None:
                yield shape, seg


def _write(seg: Any, base: Path, formats: list[str], colors: str, split: Path | None, split_format: str) -> list[str]:
    is_mesh = isinstance(seg, MeshSegmentation)
    suffixes: list[str] = []
    for fmt in formats:
        suffix = {"auto": ".glb" if is_mesh else ".ply"}.get(fmt, f".{fmt}")
        if suffix in SCENE_SUFFIXES and not is_mesh:
            suffix = ".ply"
        if suffix not in suffixes:
            suffixes.append(suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in suffixes:
        out = base.with_name(base.name + suffix)
        if suffix == ".png":
            written.append(str(seg.to_png(out, title=base.name)))
            continue
        written.append(str(seg.save(out, colors=colors) if is_mesh else seg.save(out)))
        if suffix in SCENE_SUFFIXES:
            written.append(str(out.with_suffix(".json")))
    if split is not None and is_mesh:
        written += [str(p) for p in seg.save_parts(split, suffix=split_format, colors=colors)]
    return written


def check_formats(formats: Sequence[str]) -> list[str]:
    """``formats`` cleaned (``.glb`` -> ``glb``); ``ValueError`` naming the unknown ones."""
    formats = [f.strip().lower().lstrip(".") for f in formats if f.strip()]
    bad = [f for f in formats if f not in BATCH_FORMATS]
    if bad or not formats:
        raise ValueError(f"unknown output format(s) {bad or formats}; choose from {', '.join(BATCH_FORMATS)}")
    return formats


def _reason(err: BaseException, path: Path) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    text = text.removeprefix(f"{path}: ")  # the report names the file already
    return text if isinstance(err, (ValueError, OSError)) else f"{type(err).__name__}: {text}"
