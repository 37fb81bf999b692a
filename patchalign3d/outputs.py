"""Writing segmentations to files, chosen by suffix.

- ``.npz``: every array and the part names.
- ``.ply``: points coloured by part with an integer ``label`` property (meshes: the input's vertices and
  faces in their order, ``label`` per face); the header has one ``comment part <k> <name>`` line per part.
- ``.glb`` / ``.gltf`` / ``.obj`` (meshes): a scene with one node per part, named after the part, holding
  that part's faces with the input's colours, UVs and materials; ``<name>.json`` beside it holds the part
  names, their colours and the per-face labels. Every input face lands in exactly one part.

The writers sit beneath the result types (:mod:`patchalign3d.results` calls them) and never import them:
they take anything with the fields of :class:`LabelledPoints` or :class:`LabelledMesh`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from patchalign3d.viz import label_colors

if TYPE_CHECKING:  # pragma: no cover
    import trimesh

ColorMode = Literal["input", "parts"]
COLOR_MODES: tuple[str, ...] = ("input", "parts")
SCENE_SUFFIXES = (".glb", ".gltf", ".obj")
#: Suffixes :func:`save_parts` writes (one file per part).
PART_FILE_SUFFIXES = SCENE_SUFFIXES + (".ply", ".stl")


class LabelledPoints(Protocol):
    """What the writers read from a point segmentation (:class:`~patchalign3d.results.Segmentation`)."""

    points: np.ndarray  # (N, 3)
    labels: np.ndarray  # (N,) index into part_names
    part_names: list[str]


class LabelledMesh(LabelledPoints, Protocol):
    """... and from a mesh segmentation (:class:`~patchalign3d.results.MeshSegmentation`)."""

    mesh: Any  # trimesh.Trimesh, the concatenation of pieces
    face_labels: np.ndarray  # (F,) index into part_names, in the order of mesh's faces
    pieces: list[Any]  # the input's geometries (trimesh.Trimesh), face for face


def save(seg: LabelledPoints, path: str | os.PathLike, *, colors: ColorMode = "input") -> Path:
    """Write ``seg`` to ``path``; the suffix picks the format (module docstring).

    Args:
        colors: ``"input"`` keeps the input's colours, UVs and materials and colours by part only the pieces
            that have none; ``"parts"`` colours every part by its part colour (what a viewer should show).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    _check_colors(colors)
    mesh = _is_mesh(seg)
    check_output_path(path, mesh=mesh)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npz":
        arrays = {k: v for k, v in vars(seg).items() if isinstance(v, np.ndarray)}
        np.savez_compressed(path, part_names=np.array(seg.part_names), **arrays)
    elif suffix == ".ply" and mesh:
        write_mesh_ply(path, seg, colors=colors)
    elif suffix == ".ply":
        write_points_ply(path, seg.points, seg.labels, seg.part_names)
    else:
        write_scene(parts_scene(seg, colors=colors), path)
        write_parts_json(seg, path.with_suffix(".json"), scene_file=path.name)
    return path


def check_output_path(path: str | os.PathLike, *, mesh: bool) -> None:
    """Raise ``ValueError`` naming the problem when :func:`save` cannot write ``path`` (before any work)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".ply") + SCENE_SUFFIXES:
        kinds = ".npz, .ply" + (", .glb, .gltf, .obj" if mesh else " (.glb, .gltf, .obj need a mesh input)")
        raise ValueError(f"{path}: unsupported output type {path.suffix!r}; use {kinds}")
    if suffix in SCENE_SUFFIXES and not mesh:
        raise ValueError(f"{path}: {suffix} holds meshes but this is a point-cloud segmentation; use .ply or .npz")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name such as {path / ('parts' + (suffix or '.npz'))}")


def save_parts(
    seg: LabelledMesh, folder: str | os.PathLike, *, suffix: str = ".glb", colors: ColorMode = "input"
) -> list[Path]:
    """One file per part that has faces, ``folder/<part name><suffix>`` (names made file-safe and unique)."""
    suffix = suffix if suffix.startswith(".") else f".{suffix}"
    if suffix.lower() not in PART_FILE_SUFFIXES:
        raise ValueError(f"unsupported part file type {suffix!r}; use one of {PART_FILE_SUFFIXES}")
    if not _is_mesh(seg):
        raise ValueError("one file per part needs a mesh segmentation (segment_mesh); a point cloud has no faces")
    _check_colors(colors)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k, stem in enumerate(file_stems(seg.part_names)):
        scene = parts_scene(seg, colors=colors, only=k)
        if scene.geometry:
            written.append(write_scene(scene, folder / f"{stem}{suffix}"))
    return written


# -- point clouds -----------------------------------------------------------------------------------------
def write_points_ply(path: str | os.PathLike, points: np.ndarray, labels: np.ndarray, part_names: Sequence[str]) -> Path:
    """Binary PLY of ``(N, 3)`` points coloured by part, with an ``int label`` property and the names in the header."""
    points, labels = np.asarray(points), np.asarray(labels)
    table = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                         ("blue", "u1"), ("label", "<i4")])
    for i, axis in enumerate("xyz"):
        table[axis] = points[:, i]
    rgb = label_colors(labels, len(part_names))
    for i, channel in enumerate(("red", "green", "blue")):
        table[channel] = rgb[:, i]
    table["label"] = labels
    header = ["ply", "format binary_little_endian 1.0", *_name_comments(part_names), f"element vertex {len(points)}",
              *(f"property {t} {n}" for n, t in (("x", "float"), ("y", "float"), ("z", "float"), ("red", "uchar"),
                                                 ("green", "uchar"), ("blue", "uchar"), ("label", "int"))),
              "end_header"]
    path = Path(path)
    path.write_bytes(("\n".join(header) + "\n").encode() + table.tobytes())
    return path


def _name_comments(part_names: Sequence[str]) -> list[str]:
    # PLY comments end at the line break: collapse any whitespace inside a name
    return ["comment patchalign3d part segmentation: label k is part k"] + [
        f"comment part {k} {' '.join(name.split())}" for k, name in enumerate(part_names)
    ]


# -- meshes ------------------------------------------------------------------------------------------------
def write_mesh_ply(path: str | os.PathLike, seg: LabelledMesh, *, colors: ColorMode = "input") -> Path:
    """The input mesh (its vertex and face order) with an ``int label`` per face and the names in the header.

    Vertex colours of the input are kept with ``colors="input"``; otherwise faces take their part's colour.
    """
    import trimesh
    from trimesh.exchange.ply import export_ply

    src = seg.mesh
    out = trimesh.Trimesh(vertices=np.asarray(src.vertices), faces=np.asarray(src.faces), process=False)
    kind = getattr(src.visual, "kind", None)
    if colors == "input" and kind == "vertex":
        out.visual.vertex_colors = src.visual.vertex_colors
    elif colors == "input" and kind == "face":
        out.visual.face_colors = src.visual.face_colors
    else:
        out.visual.face_colors = part_rgba(len(seg.part_names))[seg.face_labels]
    out.face_attributes["label"] = seg.face_labels.astype(np.int32)
    head, body = export_ply(out, encoding="binary", include_attributes=True).split(b"end_header\n", 1)
    lines = [ln for ln in head.decode().split("\n") if ln and not ln.startswith("comment")]
    lines[2:2] = _name_comments(seg.part_names)
    path = Path(path)
    path.write_bytes(("\n".join(lines) + "\nend_header\n").encode() + body)
    return path


def parts_scene(seg: LabelledMesh, *, colors: ColorMode = "input", only: int | None = None) -> trimesh.Scene:
    """A scene with one node per part that has faces (``only``: just part ``only``).

    A part whose faces come from one piece of the input is a node holding that geometry; a part spanning
    several pieces (materials) is a node named after the part with one child per piece (``<part>.001``, ...).
    """
    import trimesh

    pieces = seg.pieces or [seg.mesh]
    offsets = np.cumsum([0] + [len(p.faces) for p in pieces])
    if offsets[-1] != len(seg.face_labels):
        raise ValueError(f"face_labels has {len(seg.face_labels)} entries but the pieces have {offsets[-1]} faces")
    rgba = part_rgba(len(seg.part_names))
    scene = trimesh.Scene()
    for k, name in enumerate(seg.part_names):
        if only is not None and k != only:
            continue
        chunks = []
        for piece, start, stop in zip(pieces, offsets[:-1], offsets[1:]):
            faces = np.flatnonzero(seg.face_labels[start:stop] == k)
            if len(faces):
                chunks.append(_part_chunk(piece, faces, name, rgba[k], colors))
        if len(chunks) == 1:
            scene.add_geometry(chunks[0], node_name=name, geom_name=name)
        elif chunks:
            scene.graph.update(frame_from=scene.graph.base_frame, frame_to=name)
            for j, chunk in enumerate(chunks, 1):
                scene.add_geometry(chunk, node_name=f"{name}.{j:03d}", geom_name=f"{name}.{j:03d}", parent_node_name=name)
    return scene


def _part_chunk(piece: trimesh.Trimesh, faces: np.ndarray, name: str, rgba: np.ndarray, colors: ColorMode) -> trimesh.Trimesh:
    from trimesh.visual import TextureVisuals
    from trimesh.visual.material import PBRMaterial

    chunk = piece.submesh([faces], append=True)  # slices vertex colours and UVs, keeps the material
    if colors == "parts" or not _has_appearance(piece):
        chunk.visual = TextureVisuals(material=PBRMaterial(name=name, baseColorFactor=rgba))
    return chunk


def _has_appearance(mesh: trimesh.Trimesh) -> bool:
    from trimesh.visual import TextureVisuals

    visual = mesh.visual
    if isinstance(visual, TextureVisuals):
        return visual.uv is not None or visual.material is not None
    return bool(getattr(visual, "defined", False))


def write_scene(scene: trimesh.Scene, path: str | os.PathLike) -> Path:
    """``.glb``, ``.gltf`` (buffers and textures embedded), ``.obj`` (+ ``<stem>.mtl`` and textures named
    ``<stem>_*``), or ``.ply``/``.stl`` (one mesh: those formats have no nodes)."""
    import trimesh
    from trimesh.exchange import gltf, obj

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".glb":
        path.write_bytes(gltf.export_glb(scene))
    elif suffix == ".gltf":
        path.write_bytes(gltf.export_gltf(scene, embed_buffers=True)["model.gltf"])
    elif suffix == ".obj":
        mtl = f"{path.stem}.mtl"
        text, files = obj.export_obj(scene, return_texture=True, mtl_name=mtl)
        # textures are named material_0.png etc.: prefix them so that several OBJs can share a folder
        renamed = {name: f"{path.stem}_{name}" for name in files if name != mtl}
        for name, data in files.items():
            if name == mtl:
                text_mtl = data.decode()
                for old in sorted(renamed, key=len, reverse=True):
                    text_mtl = text_mtl.replace(old, renamed[old])
                data = text_mtl.encode()
            (path.parent / renamed.get(name, name)).write_bytes(data)
        path.write_text(text)
    elif suffix in (".ply", ".stl"):
        meshes = scene.dump(concatenate=False)
        joined = meshes[0] if len(meshes) == 1 else trimesh.util.concatenate(meshes)
        path.write_bytes(joined.export(file_type=suffix[1:]))
    else:
        raise ValueError(f"{path}: unsupported scene type {path.suffix!r}; use one of {PART_FILE_SUFFIXES}")
    return path


def parts_record(seg: LabelledMesh) -> dict:
    """Part names, colours, per-face labels (input face order) and face counts, as JSON-ready values."""
    rgba = part_rgba(len(seg.part_names))
    counts = np.bincount(seg.face_labels, minlength=len(seg.part_names))
    return {
        "part_names": list(seg.part_names),
        "colors": ["#{:02x}{:02x}{:02x}".format(*c[:3]) for c in rgba],
        "faces_per_part": {n: int(c) for n, c in zip(seg.part_names, counts)},
        "num_faces": int(len(seg.face_labels)),
        "face_labels": seg.face_labels.astype(int).tolist(),
    }


def write_parts_json(seg: LabelledMesh, path: str | os.PathLike, *, scene_file: str | None = None) -> Path:
    """:func:`parts_record` as JSON (``scene_file``: the parts scene it describes)."""
    record = parts_record(seg)
    if scene_file:
        record = {"scene": scene_file, **record}
    path = Path(path)
    path.write_text(json.dumps(record))
    return path


# -- helpers -----------------------------------------------------------------------------------------------
def part_rgba(num_parts: int) -> np.ndarray:
    """``(K, 4)`` uint8 RGBA part colours (the same as the pictures')."""
    rgb = label_colors(np.arange(num_parts), num_parts)
    return np.hstack([rgb, np.full((num_parts, 1), 255, np.uint8)])


def file_stems(names: Sequence[str]) -> list[str]:
    """File-safe, unique stems for part names (``"handles or handlebars"`` -> ``handles_or_handlebars``)."""
    stems: list[str] = []
    for name in names:
        stem = re.sub(r"[^\w\-.]+", "_", name.strip()).strip("._") or "part"
        base, n = stem, 1
        while stem.lower() in (s.lower() for s in stems):
            n += 1
            stem = f"{base}_{n}"
        stems.append(stem)
    return stems


def _is_mesh(seg: LabelledPoints) -> bool:
    """Whether ``seg`` labels a mesh's faces (a :class:`LabelledMesh` with a mesh and face labels)."""
    return getattr(seg, "mesh", None) is not None and len(getattr(seg, "face_labels", ())) > 0


def _check_colors(colors: str) -> None:
    if colors not in COLOR_MODES:
        raise ValueError(f"colors must be one of {COLOR_MODES}, got {colors!r}")
