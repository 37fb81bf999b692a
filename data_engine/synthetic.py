"""Seeded procedural generator of part-labelled meshes (the project's end-to-end test bed).

Every category builds a shape from trimesh primitives (boxes, cylinders, capsules, cones, spheres,
tori, solids of revolution) with random proportions (about +/-30 %) and arrangement variants
(3- vs 4-legged tables, chairs with or without armrests, ...). Each face carries the index of a
named part. Shapes are y-up, centred on their bounding-box centre and scaled into the unit sphere,
optionally turned by a random angle about the up axis.

Parts are shared across categories and look alike wherever they appear ("wheel" is a ring with spokes or
a short cylinder, "saddle" a rounded seat on a post, "handle" a bar with grips or a loop, "leg" an upright
rod or post, ...), and some go by several names, drawn per shape ("tire" for "wheel", "cushion" for a
sofa's "seat"). The held-out categories (:data:`HELDOUT_CATEGORIES`: bed, bicycle) are new arrangements of
parts the training categories have, under the same names and synonyms; the hard held-out category
(:data:`HARD_HELDOUT_CATEGORIES`: windmill) shares a single part name with training.

On disk (see ``docs/architecture.md``, "Synthetic shapes") a shape is ``<root>/<category>/<uid>.ply``
plus the sidecar ``<root>/<category>/<uid>.parts.json`` =
``{"uid", "category", "part_names", "face_labels", "keypoints"}``; ``keypoints`` maps keypoint names to
``[[x, y, z], ...]`` in the mesh's (final, normalised) frame (see :mod:`data_engine.synthetic_keypoints`).

Primitives are in :mod:`data_engine.synthetic_parts`, the category builders in
:mod:`data_engine.synthetic_builders`; this module registers, assembles, names and writes shapes.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from trimesh.transformations import rotation_matrix

from data_engine import synthetic_builders as builders
from data_engine.labels import sidecar_path  # the one definition of where a mesh's part sidecar lives
from data_engine.synthetic_keypoints import locate_keypoints, transform_keypoints
from data_engine.synthetic_parts import UP

__all__ = [
    "CATEGORIES",
    "HELDOUT_CATEGORIES",
    "MIN_PART_SHARE",
    "TRAIN_CATEGORIES",
    "HARD_HELDOUT_CATEGORIES",
    "CategorySpec",
    "SyntheticShape",
    "category_names",
    "category_parts",
    "generate",
    "make_shape",
    "part_area_shares",
    "read_sidecar",
    "shape_seed",
    "sidecar_path",
    "write_dataset",
]

#: Every part of a generated shape covers at least this fraction of the shape's surface area.
MIN_PART_SHARE = 0.05

#: Rejection-sampling budget per shape; builders are tuned so that retries are rare.
_MAX_ATTEMPTS = 100


# --------------------------------------------------------------------------------------------------
# Registry and split
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CategorySpec:
    """A category: its builder, every part it can produce (label order) and the other names of some parts.

    ``synonyms`` maps a part to the other names a shape may call it by (a car's ``wheel`` is its ``tire`` in
    some shapes): each shape draws one name per part uniformly among the part and its synonyms.
    """

    name: str
    parts: tuple[str, ...]
    build: builders.Builder
    synonyms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def names_of(self, part: str) -> tuple[str, ...]:
        """``part`` and its synonyms in this category."""
        return (part, *self.synonyms.get(part, ()))


def _spec(name: str, parts: Iterable[str], build: builders.Builder, **synonyms: tuple[str, ...]) -> tuple[str, CategorySpec]:
    return name, CategorySpec(name, tuple(parts), build, dict(synonyms))


#: Registry of categories. A shape's ``part_names`` are the spec's ``parts`` it actually contains, in this
#: order (optional parts are listed last, so mandatory parts keep their label index), each under the name
#: the shape drew for it. Parts look alike wherever they appear (``synthetic_parts``' compound parts), and
#: the same part goes by several names across categories ("tire", "saddle", "handlebar", "cushion").
CATEGORIES: dict[str, CategorySpec] = dict([
    _spec("airplane", ["body", "wing", "tail", "engine"], builders.build_airplane),
    _spec("bed", ["frame", "mattress", "leg", "headboard", "pillow"], builders.build_bed),
    _spec("bench", ["seat", "leg", "back"], builders.build_bench),
    _spec("bicycle", ["wheel", "frame", "saddle", "handle"], builders.build_bicycle,
          wheel=("tire",), saddle=("seat",), handle=("handlebar",)),
    _spec("bottle", ["body", "neck", "cap", "handle"], builders.build_bottle),
    _spec("car", ["body", "cabin", "wheel"], builders.build_car, wheel=("tire",)),
    _spec("cart", ["body", "frame", "wheel", "handle"], builders.build_cart, wheel=("tire",), handle=("handlebar",)),
    _spec("chair", ["seat", "leg", "back", "armrest"], builders.build_chair),
    _spec("guitar", ["body", "neck", "headstock"], builders.build_guitar),
    _spec("human", ["torso", "head", "leg", "arm"], builders.build_human),
    _spec("lamp", ["base", "pole", "shade"], builders.build_lamp),
    _spec("lounger", ["mattress", "frame", "leg"], builders.build_lounger, mattress=("cushion",)),
    _spec("mug", ["body", "handle"], builders.build_mug),
    _spec("rocket", ["body", "nose", "fin", "nozzle"], builders.build_rocket),
    _spec("scooter", ["deck", "wheel", "frame", "handle"], builders.build_scooter,
          wheel=("tire",), handle=("handlebar",)),
    _spec("sofa", ["seat", "back", "armrest", "pillow"], builders.build_sofa, seat=("cushion",)),
    _spec("stool", ["seat", "saddle", "leg", "rung"], builders.build_stool, saddle=("seat",)),
    _spec("table", ["top", "leg", "shelf"], builders.build_table),
    _spec("wheelbarrow", ["body", "wheel", "handle", "frame", "leg"], builders.build_wheelbarrow, wheel=("tire",)),
    _spec("wheelchair", ["seat", "back", "wheel", "frame", "handle", "armrest"], builders.build_wheelchair,
          wheel=("tire",)),
    _spec("windmill", ["base", "tower", "roof", "sail"], builders.build_windmill),
])

#: Categories never seen in training whose parts the training categories also have, arranged anew:
#: bed (frame, leg, mattress, pillow; only "headboard" is a new name), bicycle (wheels, frame, saddle,
#: handlebar, each also on scooters, carts, wheelchairs or stools, under the same names and synonyms).
HELDOUT_CATEGORIES: tuple[str, ...] = ("bed", "bicycle")
#: The honest hard case, reported on its own: a held-out category that shares one part name ("base") with
#: the training categories; its tower, roof and sails were never named in training.
HARD_HELDOUT_CATEGORIES: tuple[str, ...] = ("windmill",)
TRAIN_CATEGORIES: tuple[str, ...] = tuple(
    c for c in sorted(CATEGORIES) if c not in HELDOUT_CATEGORIES + HARD_HELDOUT_CATEGORIES
)


def category_names() -> list[str]:
    """All category names, sorted."""
    return sorted(CATEGORIES)


def _get_spec(category: str) -> CategorySpec:
    try:
        return CATEGORIES[category]
    except (KeyError, TypeError):
        raise ValueError(f"unknown synthetic category {category!r}; known: {category_names()}") from None


def category_parts(category: str) -> tuple[str, ...]:
    """Every part name ``category`` can produce (a shape holds a subset, in this order)."""
    return _get_spec(category).parts


def _check_non_negative(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def _resolve_categories(categories: Iterable[str] | None) -> list[str]:
    """Validated, de-duplicated category list (all categories when ``None``)."""
    if categories is None:
        return category_names()
    if isinstance(categories, str):
        categories = [categories]
    resolved = list(dict.fromkeys(categories))
    for category in resolved:
        _get_spec(category)
    return resolved


# --------------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------------


def part_area_shares(mesh: trimesh.Trimesh, face_labels: np.ndarray, num_parts: int) -> np.ndarray:
    """Fraction of the total surface area covered by each part, shape (num_parts,)."""
    areas = np.bincount(face_labels, weights=mesh.area_faces, minlength=num_parts)
    return areas / areas.sum()


@dataclass
class SyntheticShape:
    """A generated mesh with one part label per face."""

    uid: str
    category: str
    mesh: trimesh.Trimesh
    part_names: list[str]
    face_labels: np.ndarray  # (F,) int64 in 0..K-1
    #: named keypoints in the mesh's frame, ``{name: [[x, y, z], ...]}``
    keypoints: dict[str, list[list[float]]] = field(default_factory=dict)
    #: the canonical part behind each name (``"wheel"`` for a part named ``"tire"``), same order
    part_kinds: list[str] = field(default_factory=list)

    def to_sidecar(self) -> dict[str, Any]:
        """JSON-ready ``{"uid", "category", "part_names", "face_labels"}``, plus ``"keypoints"`` when any."""
        sidecar = {
            "uid": self.uid,
            "category": self.category,
            "part_names": list(self.part_names),
            "face_labels": self.face_labels.tolist(),
        }
        if self.keypoints:
            sidecar["keypoints"] = self.keypoints
        return sidecar

    def point_labels(self, face_ids: np.ndarray) -> np.ndarray:
        """Part label of each point from the face it lies on (e.g. ``trimesh.sample`` face ids)."""
        face_ids = np.asarray(face_ids, dtype=np.int64)
        if face_ids.size and (face_ids.min() < 0 or face_ids.max() >= len(self.face_labels)):
            raise ValueError(f"face ids must lie in [0, {len(self.face_labels)})")
        return self.face_labels[face_ids]

    def part_shares(self) -> np.ndarray:
        """Surface-area fraction of each part, shape (K,)."""
        return part_area_shares(self.mesh, self.face_labels, len(self.part_names))


def _assemble(pieces: list[builders.Piece], spec: CategorySpec) -> tuple[trimesh.Trimesh, list[str], np.ndarray]:
    """Concatenate the pieces (no boolean union) and label faces by part, in ``spec.parts`` order."""
    unknown = {name for name, _ in pieces} - set(spec.parts)
    if unknown:
        raise RuntimeError(f"{spec.name} builder produced undeclared parts {sorted(unknown)}")
    present = {name for name, _ in pieces}
    part_names = [name for name in spec.parts if name in present]
    index = {name: k for k, name in enumerate(part_names)}
    vertices, faces, labels, offset = [], [], [], 0
    for name, piece in pieces:
        vertices.append(piece.vertices)
        faces.append(piece.faces + offset)
        labels.append(np.full(len(piece.faces), index[name], dtype=np.int64))
        offset += len(piece.vertices)
    # process=False keeps every face in order, so face labels stay aligned
    mesh = trimesh.Trimesh(np.concatenate(vertices), np.concatenate(faces), process=False)
    return mesh, part_names, np.concatenate(labels)


def _normalise(mesh: trimesh.Trimesh) -> np.ndarray:
    """Centre on the bounding-box centre and scale so the farthest vertex lies on the unit sphere.

    Returns the ``(4, 4)`` transform applied (keypoints follow the mesh with it).
    """
    centre = mesh.bounds.mean(axis=0)
    mesh.apply_translation(-centre)
    scale = 1.0 / np.linalg.norm(mesh.vertices, axis=1).max()
    mesh.apply_scale(scale)
    return trimesh.transformations.scale_matrix(scale) @ trimesh.transformations.translation_matrix(-centre)


def _draw_names(spec: CategorySpec, parts: list[str], rng: np.random.Generator) -> list[str]:
    """One name per part, uniformly among the part and its synonyms."""
    names = [str(rng.choice(spec.names_of(part))) for part in parts]
    if len(set(names)) != len(names):
        raise RuntimeError(f"{spec.name}: synonyms made two parts share a name: {names}")
    return names


def _category_key(category: str) -> int:
    # crc32, unlike hash(), is stable across interpreter runs
    return zlib.crc32(category.encode("utf-8"))


def make_shape(category: str, seed: int, rotate: bool = False, uid: str | None = None) -> SyntheticShape:
    """Generate one shape of ``category``; deterministic for ``(category, seed, rotate)``.

    Proportions are redrawn (deterministically) until every part covers at least
    :data:`MIN_PART_SHARE` of the surface; each part's name is drawn among its synonyms. With ``rotate`` the shape is turned by a random angle
    about the up (+y) axis; the geometry before rotation does not depend on ``rotate``.
    ``uid`` defaults to ``f"{category}_{seed:04d}"``.
    """
    spec = _get_spec(category)
    seed = _check_non_negative(seed, "seed")
    # Separate streams: the geometry does not depend on the pose or on the names drawn.
    build_seq, pose_seq, name_seq = np.random.SeedSequence([_category_key(category), seed]).spawn(3)
    rng = np.random.default_rng(build_seq)
    for _ in range(_MAX_ATTEMPTS):
        pieces = spec.build(rng)
        mesh, part_names, labels = _assemble(pieces, spec)
        if part_area_shares(mesh, labels, len(part_names)).min() >= MIN_PART_SHARE:
            break
    else:
        raise RuntimeError(f"{category}: no draw with every part >= {MIN_PART_SHARE:.0%} of the area")
    keypoints = locate_keypoints(pieces, category, mesh)  # on the named pieces, before they move
    pose = np.eye(4)
    if rotate:
        pose = rotation_matrix(np.random.default_rng(pose_seq).uniform(0.0, 2.0 * np.pi), UP)
        mesh.apply_transform(pose)
    pose = _normalise(mesh) @ pose
    return SyntheticShape(
        uid=uid if uid is not None else f"{category}_{seed:04d}",
        category=category,
        mesh=mesh,
        part_names=_draw_names(spec, part_names, np.random.default_rng(name_seq)),
        face_labels=labels,
        keypoints=transform_keypoints(keypoints, pose),
        part_kinds=part_names,
    )


def shape_seed(seed: int, index: int) -> int:
    """Seed of the ``index``-th shape of a category in a data set generated with ``seed``."""
    state = np.random.SeedSequence([_check_non_negative(seed, "seed"), index]).generate_state(1)
    return int(state[0])


def generate(
    categories: Iterable[str] | None = None,
    shapes_per_category: int = 10,
    seed: int = 0,
    rotate: bool = False,
) -> Iterator[SyntheticShape]:
    """Yield ``shapes_per_category`` shapes per category (category-major), uids ``{category}_{i:04d}``."""
    names = _resolve_categories(categories)
    count = _check_non_negative(shapes_per_category, "shapes_per_category")
    _check_non_negative(seed, "seed")
    for category in names:
        for i in range(count):
            yield make_shape(category, shape_seed(seed, i), rotate=rotate, uid=f"{category}_{i:04d}")


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and ``os.replace`` (no torn files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_shape(shape: SyntheticShape, mesh_path: Path) -> None:
    # mesh first, sidecar last: an existing sidecar therefore marks a complete shape
    _atomic_write(mesh_path, shape.mesh.export(file_type="ply", encoding="binary"))
    _atomic_write(sidecar_path(mesh_path), json.dumps(shape.to_sidecar()).encode("utf-8"))


def write_dataset(
    root: str | os.PathLike[str],
    categories: Iterable[str] | None = None,
    shapes_per_category: int = 10,
    seed: int = 0,
    progress: bool = False,
    rotate: bool = False,
) -> list[Path]:
    """Write ``<root>/<category>/<uid>.ply`` + ``<uid>.parts.json`` for every shape; return mesh paths.

    Shapes whose mesh and sidecar already exist are skipped (not regenerated). ``<root>/splits.json``
    lists the train / held-out categories present under ``root``.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    names = _resolve_categories(categories)
    count = _check_non_negative(shapes_per_category, "shapes_per_category")
    _check_non_negative(seed, "seed")
    paths = []
    with tqdm(total=len(names) * count, desc="synthetic shapes", disable=not progress) as bar:
        for category in names:
            for i in range(count):
                uid = f"{category}_{i:04d}"
                mesh_path = root / category / f"{uid}.ply"
                if not (mesh_path.is_file() and sidecar_path(mesh_path).is_file()):
                    shape = make_shape(category, shape_seed(seed, i), rotate=rotate, uid=uid)
                    _write_shape(shape, mesh_path)
                paths.append(mesh_path)
                bar.update()
    _write_splits(root)
    return paths


def _write_splits(root: Path) -> None:
    present = {c for c in category_names() if (root / c).is_dir()}
    splits = {
        "train_categories": [c for c in TRAIN_CATEGORIES if c in present],
        "heldout_categories": [c for c in HELDOUT_CATEGORIES if c in present],
        "hard_heldout_categories": [c for c in HARD_HELDOUT_CATEGORIES if c in present],
    }
    _atomic_write(root / "splits.json", json.dumps(splits, indent=2).encode("utf-8"))


def read_sidecar(
    mesh_path: str | os.PathLike[str], mesh: trimesh.Trimesh | int | None = None
) -> dict[str, Any] | None:
    """Read and validate the sidecar of ``mesh_path``; ``None`` when there is none.

    Returns ``{"uid", "category", "part_names", "face_labels"}`` with ``face_labels`` as an int64
    array. ``mesh`` (a mesh or its face count), when given, must match the number of labels.
    Raises ValueError for a malformed sidecar or a face-count mismatch.
    """
    path = sidecar_path(mesh_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or not {"uid", "category", "part_names", "face_labels"} <= data.keys():
        raise ValueError(f"{path}: expected keys uid, category, part_names, face_labels")
    names = data["part_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: part_names must be a non-empty list of strings")
    labels = np.asarray(data["face_labels"])
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{path}: face_labels must be a flat list of integers")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(f"{path}: face_labels must lie in [0, {len(names)})")
    if mesh is not None:
        num_faces = mesh if isinstance(mesh, (int, np.integer)) else len(mesh.faces)
        if len(labels) != num_faces:
            raise ValueError(f"{path}: {len(labels)} face labels for a mesh with {num_faces} faces")
    return {**data, "face_labels": labels}
