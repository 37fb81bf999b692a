"""Tests of the procedural part-labelled shape generator (data_engine/synthetic.py)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import trimesh

from data_engine import synthetic
from data_engine.synthetic import (
    CATEGORIES,
    HARD_HELDOUT_CATEGORIES,
    HELDOUT_CATEGORIES,
    MIN_PART_SHARE,
    TRAIN_CATEGORIES,
    category_names,
    category_parts,
    generate,
    make_shape,
    read_sidecar,
    shape_seed,
    sidecar_path,
    write_dataset,
)

ALL = category_names()
SEEDS = range(4)
CLEAN_NAME = re.compile(r"^[a-z]+( [a-z]+)*$")


def _label_areas(shape: synthetic.SyntheticShape) -> np.ndarray:
    return np.bincount(shape.face_labels, weights=shape.mesh.area_faces, minlength=len(shape.part_names))


def _part_centroid(shape: synthetic.SyntheticShape, kind: str) -> np.ndarray:
    mask = shape.face_labels == shape.part_kinds.index(kind)
    weights = shape.mesh.area_faces[mask]
    return (shape.mesh.triangles_center[mask] * weights[:, None]).sum(0) / weights.sum()


def _count_pieces(shape: synthetic.SyntheticShape, name: str) -> int:
    faces = np.flatnonzero(shape.face_labels == shape.part_names.index(name))
    part = shape.mesh.submesh([faces], append=True)
    return len(part.split(only_watertight=False))


# ---------------------------------------------------------------------------- registry and split


def test_registry_and_split_constants():
    assert len(ALL) >= 10 and ALL == sorted(CATEGORIES)
    assert isinstance(TRAIN_CATEGORIES, tuple) and isinstance(HELDOUT_CATEGORIES, tuple)
    groups = [set(TRAIN_CATEGORIES), set(HELDOUT_CATEGORIES), set(HARD_HELDOUT_CATEGORIES)]
    assert sum(len(g) for g in groups) == len(ALL) and set().union(*groups) == set(ALL)
    assert HELDOUT_CATEGORIES and HARD_HELDOUT_CATEGORIES and len(TRAIN_CATEGORIES) >= 15
    for category in ALL:
        parts = category_parts(category)
        assert 2 <= len(parts) <= 6 and len(set(parts)) == len(parts)
        assert all(CLEAN_NAME.match(name) for name in parts)


def test_shared_names_enable_transfer():
    users: dict[str, set[str]] = {}
    for category in ALL:
        for name in category_parts(category):
            users.setdefault(name, set()).add(category)
    for name in ("leg", "body", "handle", "wheel", "seat", "frame", "mattress", "pillow"):
        assert len(users[name]) >= 2, name
    # what the generator actually produces (names drawn among synonyms), not just what it declares
    seen = {c: {n for s in range(12) for n in make_shape(c, s).part_names} for c in ALL}
    train_names = set().union(*(seen[c] for c in TRAIN_CATEGORIES))
    declared = {n for c in TRAIN_CATEGORIES for k in category_parts(c) for n in CATEGORIES[c].names_of(k)}
    assert {"tire", "saddle", "handlebar", "cushion"} <= declared  # synonyms are trained too
    assert train_names <= declared
    for category in HELDOUT_CATEGORIES:  # new arrangements of trained parts: at most one new name
        assert len(seen[category] - train_names) <= 1, (category, seen[category] - train_names)
    for category in HARD_HELDOUT_CATEGORIES:  # the hard case: at most one trained name
        assert len(seen[category] & train_names) <= 1, (category, seen[category] & train_names)


def test_synonyms_name_parts_without_changing_geometry():
    shapes = [make_shape("bicycle", s) for s in range(16)]
    assert {s.part_names[0] for s in shapes} == {"wheel", "tire"}
    assert {s.part_names[2] for s in shapes} == {"saddle", "seat"}
    for s in shapes:
        assert s.part_kinds == ["wheel", "frame", "saddle", "handle"]
        for name, kind in zip(s.part_names, s.part_kinds):
            assert name in CATEGORIES["bicycle"].names_of(kind)
    # a category without synonyms keeps its canonical names
    table = make_shape("table", 0)
    assert table.part_names == table.part_kinds


# ---------------------------------------------------------------------------- single shapes


@pytest.mark.parametrize("category", ALL)
def test_shape_invariants(category):
    for seed in SEEDS:
        shape = make_shape(category, seed)
        mesh, labels, k = shape.mesh, shape.face_labels, len(shape.part_names)
        assert shape.category == category and shape.uid == f"{category}_{seed:04d}"
        assert 2 <= k <= 6
        assert all(CLEAN_NAME.match(n) for n in shape.part_names)
        # parts follow the category's declared order, each under one of its names
        declared = category_parts(category)
        order = [declared.index(n) for n in shape.part_kinds]
        assert all(n in CATEGORIES[category].names_of(k) for n, k in zip(shape.part_names, shape.part_kinds))
        assert order == sorted(order)
        assert labels.dtype == np.int64 and labels.shape == (len(mesh.faces),)
        assert set(np.unique(labels)) == set(range(k))
        norms = np.linalg.norm(mesh.vertices, axis=1)
        assert norms.max() <= 1.0 + 1e-9 and norms.max() > 0.999
        np.testing.assert_allclose(mesh.bounds.mean(axis=0), 0.0, atol=1e-9)
        shares = _label_areas(shape) / mesh.area
        assert shares.min() >= MIN_PART_SHARE, dict(zip(shape.part_names, shares.round(3)))
        np.testing.assert_allclose(shape.part_shares(), shares)


def test_deterministic_per_seed():
    for category in ALL:
        a, b, c = make_shape(category, 7), make_shape(category, 7), make_shape(category, 8)
        np.testing.assert_array_equal(a.mesh.vertices, b.mesh.vertices)
        np.testing.assert_array_equal(a.mesh.faces, b.mesh.faces)
        np.testing.assert_array_equal(a.face_labels, b.face_labels)
        assert a.part_names == b.part_names
        same_size = a.mesh.vertices.shape == c.mesh.vertices.shape
        assert not (same_size and np.allclose(a.mesh.vertices, c.mesh.vertices))


def test_shapes_are_y_up():
    # parts listed from top to bottom
    stacks = {"table": ["top", "leg"], "human": ["head", "torso", "leg"], "lamp": ["shade", "pole", "base"],
              "bicycle": ["saddle", "wheel"], "windmill": ["roof", "tower", "base"], "bottle": ["cap", "neck", "body"]}
    for category, parts in stacks.items():
        for seed in SEEDS:
            shape = make_shape(category, seed)
            heights = [_part_centroid(shape, name)[1] for name in parts]
            assert heights == sorted(heights, reverse=True), (category, seed)


def test_arrangement_variants():
    tables = [make_shape("table", s) for s in range(30)]
    assert {3, 4} <= {_count_pieces(t, "leg") for t in tables}
    chairs = [make_shape("chair", s) for s in range(30)]
    assert {"armrest" in c.part_names for c in chairs} == {True, False}
    # proportions vary: the table's height-to-width ratio is not constant
    ratios = [np.ptp(t.mesh.vertices[:, 1]) / np.ptp(t.mesh.vertices[:, 0]) for t in tables]
    assert np.std(ratios) > 0.05


def test_rotate_turns_about_up_axis_only():
    for category in ("airplane", "chair", "bicycle"):
        plain, turned = make_shape(category, 3), make_shape(category, 3, rotate=True)
        np.testing.assert_array_equal(plain.mesh.faces, turned.mesh.faces)
        np.testing.assert_array_equal(plain.face_labels, turned.face_labels)
        assert not np.allclose(plain.mesh.vertices, turned.mesh.vertices)
        np.testing.assert_allclose(plain.part_shares(), turned.part_shares(), atol=1e-9)
        # heights are preserved up to the renormalisation (scale and shift)
        y0, y1 = plain.mesh.vertices[:, 1], turned.mesh.vertices[:, 1]
        slope, offset = np.polyfit(y0, y1, 1)
        np.testing.assert_allclose(slope * y0 + offset, y1, atol=1e-9)
        assert np.linalg.norm(turned.mesh.vertices, axis=1).max() <= 1.0 + 1e-9


def test_point_labels_and_sidecar():
    shape = make_shape("cart", 0)
    points, face_ids = trimesh.sample.sample_surface(shape.mesh, 500, seed=0)
    labels = shape.point_labels(face_ids)
    np.testing.assert_array_equal(labels, shape.face_labels[face_ids])
    assert labels.shape == (500,)
    with pytest.raises(ValueError):
        shape.point_labels([len(shape.mesh.faces)])
    sidecar = json.loads(json.dumps(shape.to_sidecar()))
    assert set(sidecar) == {"uid", "category", "part_names", "face_labels", "keypoints"}
    assert sidecar["face_labels"] == shape.face_labels.tolist()
    assert sidecar["part_names"] == shape.part_names and sidecar["category"] == "cart"


def test_bad_input_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="unknown synthetic category"):
        make_shape("spaceship", 0)
    with pytest.raises(ValueError):
        make_shape("chair", -1)
    with pytest.raises(ValueError):
        category_parts("spaceship")
    with pytest.raises(ValueError):
        list(generate(["chair", "spaceship"], shapes_per_category=1))
    with pytest.raises(ValueError):
        list(generate(["chair"], shapes_per_category=-2))
    with pytest.raises(ValueError):
        write_dataset(tmp_path, categories=["spaceship"], shapes_per_category=1)
    with pytest.raises(ValueError):
        write_dataset(tmp_path, categories=["mug"], shapes_per_category=1, seed=-5)


# ---------------------------------------------------------------------------- iteration and files


def test_generate_uids_order_and_seeding():
    shapes = list(generate(["mug", "stool"], shapes_per_category=3, seed=5))
    assert [s.uid for s in shapes] == [f"{c}_{i:04d}" for c in ("mug", "stool") for i in range(3)]
    reference = make_shape("stool", shape_seed(5, 1))
    np.testing.assert_array_equal(shapes[4].mesh.vertices, reference.mesh.vertices)
    other = next(iter(generate(["mug"], shapes_per_category=1, seed=6)))
    assert not np.array_equal(other.mesh.vertices, shapes[0].mesh.vertices)
    assert [s.category for s in generate(shapes_per_category=1)] == ALL


def test_write_dataset_round_trip(tmp_path):
    categories = ["mug", "bicycle"]
    paths = write_dataset(tmp_path, categories=categories, shapes_per_category=2, seed=1, progress=True)
    assert paths == [tmp_path / c / f"{c}_{i:04d}.ply" for c in ("mug", "bicycle") for i in range(2)]
    expected = {s.uid: s for s in generate(categories, shapes_per_category=2, seed=1)}
    for path in paths:
        mesh = trimesh.load(path, process=False)
        sidecar = read_sidecar(path, mesh)
        shape = expected[path.stem]
        assert sidecar["uid"] == path.stem and sidecar["category"] == path.parent.name
        assert len(sidecar["face_labels"]) == len(mesh.faces) == len(shape.mesh.faces)
        np.testing.assert_array_equal(mesh.faces, shape.mesh.faces)
        np.testing.assert_allclose(mesh.vertices, shape.mesh.vertices, atol=1e-6)
        np.testing.assert_array_equal(sidecar["face_labels"], shape.face_labels)
        assert sidecar["part_names"] == shape.part_names
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert splits == {"train_categories": ["mug"], "heldout_categories": ["bicycle"], "hard_heldout_categories": []}
    assert not list(tmp_path.rglob("*.tmp"))


def test_write_dataset_skips_complete_shapes(tmp_path, monkeypatch):
    first = write_dataset(tmp_path, categories=["lamp"], shapes_per_category=3)
    stamps = {p: (p.stat().st_mtime_ns, sidecar_path(p).read_bytes()) for p in first}
    sidecar_path(first[1]).unlink()  # an interrupted shape: mesh written, sidecar missing

    calls = []
    real = synthetic.make_shape

    def counting_make_shape(*args, **kwargs):
        calls.append(kwargs["uid"])
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "make_shape", counting_make_shape)
    second = write_dataset(tmp_path, categories=["lamp"], shapes_per_category=3)
    assert second == first and calls == ["lamp_0001"]
    for path in (first[0], first[2]):
        assert path.stat().st_mtime_ns == stamps[path][0]
    # the regenerated shape is identical to the lost one
    assert sidecar_path(first[1]).read_bytes() == stamps[first[1]][1]


def test_read_sidecar_validation(tmp_path):
    mesh_path = write_dataset(tmp_path, categories=["mug"], shapes_per_category=1)[0]
    mesh = trimesh.load(mesh_path, process=False)
    assert read_sidecar(tmp_path / "mug" / "absent.ply") is None
    assert len(read_sidecar(mesh_path, len(mesh.faces))["face_labels"]) == len(mesh.faces)
    with pytest.raises(ValueError, match="face labels"):
        read_sidecar(mesh_path, len(mesh.faces) + 1)
    data = json.loads(sidecar_path(mesh_path).read_text())
    data["face_labels"][0] = len(data["part_names"])
    sidecar_path(mesh_path).write_text(json.dumps(data))
    with pytest.raises(ValueError):
        read_sidecar(mesh_path)
    sidecar_path(mesh_path).write_text("{not json")
    with pytest.raises(ValueError):
        read_sidecar(mesh_path)
