"""Seeded procedural generator of part-labelled meshes (the project's end-to-end test bed).

Every category builds a shape from trimesh primitives (boxes, cylinders, capsules, cones, spheres,
tori, solids of revolution) with random proportions (about +/-30 %) and arrangement variants
(3- vs 4-legged tables, chairs with or without armrests, ...). Each face carries the index of a
named part. Shapes are y-up, centred on their bounding-box centre and scaled into the unit sphere.

Part names are shared across categories where the geometry agrees ("leg" is a thin upright rod
under something, "wheel" a torus or short cylinder, "seat" a horizontal slab to sit on, ...), and
the held-out categories (:data:`HELDOUT_CATEGORIES`) each share at least two part names with the
training categories, so zero-shot transfer to unseen categories can be measured.

On disk (see ``docs/architecture.md``, "Synthetic shapes") a shape is ``<root>/<category>/<uid>.ply``
plus the sidecar ``<root>/<category>/<uid>.parts.json`` =
``{"uid", "category", "part_names", "face_labels", "keypoints"}``; ``keypoints`` maps keypoint names to
``[[x, y, z], ...]`` in the mesh's (final, normalised) frame (see :mod:`data_engine.synthetic_keypoints`).
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from trimesh import creation
from trimesh.transformations import rotation_matrix

from data_engine.labels import sidecar_path  # the one definition of where a mesh's part sidecar lives
from data_engine.synthetic_keypoints import locate_keypoints, transform_keypoints

__all__ = [
    "CATEGORIES",
    "HELDOUT_CATEGORIES",
    "MIN_PART_SHARE",
    "TRAIN_CATEGORIES",
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

#: Proportions are drawn uniformly in ``base * [1 - rel, 1 + rel]`` with this default ``rel``.
_VARIATION = 0.3
#: Rejection-sampling budget per shape; builders are tuned so that retries are rare.
_MAX_ATTEMPTS = 100
_SECTIONS = 24  # around-the-axis resolution of rods, discs, cones and lathes
_UP = np.array([0.0, 1.0, 0.0])
_X = np.array([1.0, 0.0, 0.0])
_Z = np.array([0.0, 0.0, 1.0])

Vec = Sequence[float] | np.ndarray
Piece = tuple[str, trimesh.Trimesh]
Builder = Callable[[np.random.Generator], list[Piece]]


# --------------------------------------------------------------------------------------------------
# Primitives (all in y-up world coordinates; x = left/right, z = back/front)
# --------------------------------------------------------------------------------------------------


def _vary(rng: np.random.Generator, base: float, rel: float = _VARIATION) -> float:
    """``base`` scaled by a uniform factor in ``[1 - rel, 1 + rel]``."""
    return float(base * rng.uniform(1.0 - rel, 1.0 + rel))


def _place(mesh: trimesh.Trimesh, direction: Vec, origin: Vec) -> trimesh.Trimesh:
    """Rotate a primitive built along +z onto ``direction`` and move its origin to ``origin``."""
    transform = trimesh.geometry.align_vectors(_Z, np.asarray(direction, dtype=float))
    transform[:3, 3] = origin
    return mesh.apply_transform(transform)


def _box(center: Vec, extents: Vec, yaw: float = 0.0) -> trimesh.Trimesh:
    """Axis-aligned box (optionally turned by ``yaw`` about the up axis)."""
    transform = rotation_matrix(yaw, _UP)
    transform[:3, 3] = center
    return creation.box(extents=extents, transform=transform)


def _rod(start: Vec, end: Vec, radius: float) -> trimesh.Trimesh:
    """Cylinder from ``start`` to ``end``."""
    return creation.cylinder(radius=radius, segment=[start, end], sections=_SECTIONS)


def _capsule(start: Vec, end: Vec, radius: float) -> trimesh.Trimesh:
    """Capsule whose hemisphere centres are ``start`` and ``end``."""
    start, end = np.asarray(start, dtype=float), np.asarray(end, dtype=float)
    axis = end - start
    mesh = creation.capsule(height=float(np.linalg.norm(axis)), radius=radius, count=[16, 8])
    return _place(mesh, axis, (start + end) / 2.0)


def _disc(center: Vec, radius: float, thickness: float, axis: Vec = _UP) -> trimesh.Trimesh:
    """Short cylinder of ``thickness`` centred on ``center`` along ``axis``."""
    center, axis = np.asarray(center, dtype=float), np.asarray(axis, dtype=float)
    half = axis / np.linalg.norm(axis) * thickness / 2.0
    return creation.cylinder(radius=radius, segment=[center - half, center + half], sections=32)


def _cone(base: Vec, apex: Vec, radius: float) -> trimesh.Trimesh:
    """Cone with its base disc centred on ``base``."""
    axis = np.asarray(apex, dtype=float) - np.asarray(base, dtype=float)
    mesh = creation.cone(radius=radius, height=float(np.linalg.norm(axis)), sections=_SECTIONS)
    return _place(mesh, axis, base)


def _lathe(profile: Sequence[tuple[float, float]], base: Vec, axis: Vec = _UP) -> trimesh.Trimesh:
    """Solid of revolution of a ``(radius, height)`` profile, heights measured from ``base``."""
    mesh = creation.revolve(np.asarray(profile, dtype=float), sections=32)
    return _place(mesh, axis, base)


def _torus(center: Vec, major: float, minor: float, axis: Vec) -> trimesh.Trimesh:
    """Torus (ring) around ``axis``."""
    mesh = creation.torus(major, minor, major_sections=32, minor_sections=10)
    return _place(mesh, axis, center)


def _side_handle(center: Vec, major: float, minor: float) -> trimesh.Trimesh:
    """Half ring in the x-y plane bulging towards +x from ``center`` (a mug or jug handle).

    The open ends sit on the plane x = center_x, so placing ``center`` on (or just inside) a wall
    hides them in that wall.
    """
    angles = np.linspace(0.0, 2.0 * np.pi, 11)
    circle = np.c_[major + minor * np.cos(angles), minor * np.sin(angles)]
    # revolve() sweeps the +y half-plane for angle=pi; turning by -90 degrees about z puts it on +x.
    mesh = creation.revolve(circle, angle=np.pi, sections=16)
    transform = rotation_matrix(-np.pi / 2.0, _Z)
    transform[:3, 3] = center
    return mesh.apply_transform(transform)


def _ellipsoid(center: Vec, radii: Vec) -> trimesh.Trimesh:
    """Axis-aligned ellipsoid (a scaled icosphere)."""
    transform = np.diag([*np.asarray(radii, dtype=float), 1.0])
    transform[:3, 3] = center
    return creation.icosphere(subdivisions=2).apply_transform(transform)


def _leg(foot: Vec, top: Vec, half_width: float, square: bool) -> trimesh.Trimesh:
    """Upright leg from ``foot`` to ``top``: a rod, or a square post when ``square``."""
    foot, top = np.asarray(foot, dtype=float), np.asarray(top, dtype=float)
    if not square:
        return _rod(foot, top, half_width)
    height = float(np.linalg.norm(top - foot))
    return _place(creation.box(extents=[2 * half_width, 2 * half_width, height]), top - foot,
                  (foot + top) / 2.0)


def _ring_points(count: int, radius: float, y: float, phase: float = 0.0) -> np.ndarray:
    """``count`` points evenly spaced on a horizontal circle, shape (count, 3)."""
    angles = phase + 2.0 * np.pi * np.arange(count) / count
    return np.c_[radius * np.cos(angles), np.full(count, y), radius * np.sin(angles)]


def _corners(half_x: float, half_z: float, y: float) -> np.ndarray:
    """The four corners of a horizontal rectangle, shape (4, 3)."""
    return np.array([[sx * half_x, y, sz * half_z] for sx in (-1, 1) for sz in (-1, 1)])


# --------------------------------------------------------------------------------------------------
# Category builders: rng -> [(part name, primitive), ...] in any order, sizes in arbitrary units
# --------------------------------------------------------------------------------------------------


def _build_table(rng: np.random.Generator) -> list[Piece]:
    """Top on 3 or 4 legs (round top) or 4 legs (rectangular top), optional lower shelf."""
    height, thick = _vary(rng, 0.75), _vary(rng, 0.06)
    leg_r, square = _vary(rng, 0.045), bool(rng.random() < 0.4)
    top_y = height - thick / 2.0
    if rng.random() < 0.4:
        radius = _vary(rng, 0.55)
        pieces: list[Piece] = [("top", _disc([0, top_y, 0], radius, thick))]
        feet = _ring_points(int(rng.integers(3, 5)), 0.7 * radius, 0.0, rng.uniform(0, np.pi))
    else:
        half_x, half_z = _vary(rng, 0.65), _vary(rng, 0.38)
        pieces = [("top", _box([0, top_y, 0], [2 * half_x, thick, 2 * half_z]))]
        feet = _corners(half_x - 2 * leg_r, half_z - 2 * leg_r, 0.0)
        if rng.random() < 0.35:  # shelf between the legs
            shelf_y = height * rng.uniform(0.2, 0.35)
            extents = [2 * (half_x - 2 * leg_r), 0.7 * thick, 2 * (half_z - 2 * leg_r)]
            pieces.append(("shelf", _box([0, shelf_y, 0], extents)))
    for foot in feet:
        pieces.append(("leg", _leg(foot, foot + [0, height - thick, 0], leg_r, square)))
    return pieces


def _build_chair(rng: np.random.Generator) -> list[Piece]:
    """Seat on 4 legs, solid or slatted back, optional armrests."""
    seat_y, thick = _vary(rng, 0.45, 0.2), _vary(rng, 0.06)
    half_x, half_z = _vary(rng, 0.25, 0.2), _vary(rng, 0.25, 0.2)
    leg_r, square = _vary(rng, 0.03), bool(rng.random() < 0.5)
    pieces: list[Piece] = [("seat", _box([0, seat_y - thick / 2, 0], [2 * half_x, thick, 2 * half_z]))]
    for foot in _corners(half_x - leg_r, half_z - leg_r, 0.0):
        pieces.append(("leg", _leg(foot, foot + [0, seat_y - thick, 0], leg_r, square)))

    back_h, back_t = _vary(rng, 0.5), _vary(rng, 0.05)
    back_z = -half_z + back_t / 2
    if rng.random() < 0.6:
        pieces.append(("back", _box([0, seat_y + back_h / 2, back_z], [2 * half_x, back_h, back_t])))
    else:  # top rail on vertical slats
        rail_h = 0.25 * back_h
        pieces.append(("back", _box([0, seat_y + back_h - rail_h / 2, back_z], [2 * half_x, rail_h, back_t])))
        n_slats = int(rng.integers(2, 5))
        slat_w = half_x / n_slats
        for x in np.linspace(-half_x + slat_w / 2, half_x - slat_w / 2, n_slats):
            pieces.append(("back", _box([x, seat_y + (back_h - rail_h) / 2, back_z],
                                        [slat_w, back_h - rail_h, back_t])))

    if rng.random() < 0.4:
        arm_y, arm_w = seat_y + _vary(rng, 0.22, 0.2), _vary(rng, 0.06, 0.2)
        for side in (-1, 1):
            x = side * (half_x - arm_w / 2)
            pieces.append(("armrest", _box([x, arm_y, 0], [arm_w, arm_w, 2 * half_z])))
            pieces.append(("armrest", _box([x, (seat_y + arm_y) / 2, half_z - arm_w / 2],
                                           [arm_w, arm_y - seat_y, arm_w])))
    return pieces


def _build_stool(rng: np.random.Generator) -> list[Piece]:
    """Round or square seat on 3 or 4 splayed legs, optional rungs between the legs."""
    height, thick = _vary(rng, 0.65, 0.2), _vary(rng, 0.06)
    radius, leg_r = _vary(rng, 0.2, 0.2), _vary(rng, 0.025, 0.2)
    n_legs = int(rng.integers(3, 5))
    if rng.random() < 0.7:
        seat = _disc([0, height - thick / 2, 0], radius, thick)
    else:
        seat = _box([0, height - thick / 2, 0], [1.6 * radius, thick, 1.6 * radius], yaw=np.pi / 4)
    pieces: list[Piece] = [("seat", seat)]
    phase = rng.uniform(0, np.pi)
    feet = _ring_points(n_legs, radius * rng.uniform(1.0, 1.4), 0.0, phase)
    tops = _ring_points(n_legs, radius * 0.6, height - thick, phase)
    pieces += [("leg", _rod(foot, top, leg_r)) for foot, top in zip(feet, tops)]
    if rng.random() < 0.5:
        t = rng.uniform(0.25, 0.45)  # rung height as a fraction along the legs
        joints = feet + t * (tops - feet)
        for i in range(n_legs):
            pieces.append(("rung", _rod(joints[i], joints[(i + 1) % n_legs], 0.7 * leg_r)))
    return pieces


def _build_lamp(rng: np.random.Generator) -> list[Piece]:
    """Round or square base, straight or bent pole, frustum shade."""
    base_r, base_t = _vary(rng, 0.22), _vary(rng, 0.05)
    if rng.random() < 0.7:
        base = _disc([0, base_t / 2, 0], base_r, base_t)
    else:
        base = _box([0, base_t / 2, 0], [1.7 * base_r, base_t, 1.7 * base_r])
    pole_r, height = _vary(rng, 0.025), _vary(rng, 1.1)
    pieces: list[Piece] = [("base", base)]
    top = np.array([0.0, height, 0.0])
    if rng.random() < 0.6:
        pieces.append(("pole", _rod([0, base_t, 0], top, pole_r)))
    else:  # bent pole reaching sideways
        knee = np.array([0.0, height * rng.uniform(0.5, 0.7), 0.0])
        top = np.array([_vary(rng, 0.3), height, 0.0])
        pieces += [("pole", _rod([0, base_t, 0], knee, pole_r)), ("pole", _capsule(knee, top, pole_r))]
    r_bottom, shade_h = _vary(rng, 0.28), _vary(rng, 0.3)
    r_top = r_bottom * rng.uniform(0.45, 0.75)
    profile = [(0.0, 0.0), (r_bottom, 0.0), (r_top, shade_h), (0.0, shade_h)]
    pieces.append(("shade", _lathe(profile, top - [0, 0.6 * shade_h, 0])))
    return pieces


def _build_mug(rng: np.random.Generator) -> list[Piece]:
    """Hollow cup with a side handle."""
    radius, height = _vary(rng, 0.4), _vary(rng, 0.9)
    wall = radius * rng.uniform(0.08, 0.14)
    profile = [(0.0, 0.0), (radius, 0.0), (radius, height), (radius - wall, height),
               (radius - wall, wall), (0.0, wall)]
    minor = _vary(rng, 0.09, 0.2)
    major = height * rng.uniform(0.28, 0.36)
    handle = _side_handle([radius - 0.5 * minor, height * rng.uniform(0.45, 0.55), 0], major, minor)
    return [("body", _lathe(profile, [0, 0, 0])), ("handle", handle)]


def _build_bottle(rng: np.random.Generator) -> list[Piece]:
    """Cylindrical body, tapering neck, cap; optional jug handle."""
    radius, body_h = _vary(rng, 0.3), _vary(rng, 0.9)
    neck_r = radius * rng.uniform(0.35, 0.5)
    shoulder_h, neck_h = _vary(rng, 0.2), _vary(rng, 0.3)
    cap_r, cap_h = neck_r * 1.2, _vary(rng, 0.17, 0.2)
    neck_profile = [(0.0, 0.0), (radius, 0.0), (neck_r, shoulder_h), (neck_r, shoulder_h + neck_h),
                    (0.0, shoulder_h + neck_h)]
    pieces: list[Piece] = [
        ("body", _lathe([(0.0, 0.0), (radius, 0.0), (radius, body_h), (0.0, body_h)], [0, 0, 0])),
        ("neck", _lathe(neck_profile, [0, body_h, 0])),
        ("cap", _disc([0, body_h + shoulder_h + neck_h + cap_h / 2, 0], cap_r, cap_h)),
    ]
    if rng.random() < 0.3:
        minor = _vary(rng, 0.07, 0.2)
        pieces.append(("handle", _side_handle([radius - 0.5 * minor, 0.6 * body_h, 0],
                                              body_h * rng.uniform(0.22, 0.3), minor)))
    return pieces


def _build_guitar(rng: np.random.Generator) -> list[Piece]:
    """Standing guitar: two overlapping discs as body, long neck, headstock on top."""
    thick = _vary(rng, 0.14, 0.2)
    r_low = _vary(rng, 0.38, 0.2)
    r_up = r_low * rng.uniform(0.7, 0.85)
    y_low, y_up = r_low, r_low + 0.75 * (r_low + r_up)
    neck_w, neck_t, neck_len = _vary(rng, 0.12, 0.2), _vary(rng, 0.08, 0.2), _vary(rng, 0.8, 0.2)
    neck_y0 = y_up + 0.8 * r_up
    head_len, head_w = _vary(rng, 0.33, 0.2), neck_w * rng.uniform(1.5, 2.0)
    head_y = neck_y0 + neck_len + head_len / 2
    return [
        ("body", _disc([0, y_low, 0], r_low, thick, axis=_Z)),
        ("body", _disc([0, y_up, 0], r_up, thick, axis=_Z)),
        ("neck", _box([0, neck_y0 + neck_len / 2, 0], [neck_w, neck_len, neck_t])),
        ("headstock", _box([0, head_y, 0], [head_w, head_len, neck_t])),
    ]


def _build_human(rng: np.random.Generator) -> list[Piece]:
    """Capsule figure: legs, torso, arms (down to raised), spherical head."""
    leg_len, leg_r = _vary(rng, 0.85, 0.2), _vary(rng, 0.065, 0.2)
    hip_x, spread = _vary(rng, 0.1, 0.2), rng.uniform(0.0, 0.25)
    hip_y = leg_len + leg_r
    torso_len, torso_r = _vary(rng, 0.45, 0.2), _vary(rng, 0.16, 0.2)
    shoulder_y = hip_y + torso_len
    arm_len, arm_r = _vary(rng, 0.65, 0.2), _vary(rng, 0.05, 0.2)
    head_r = _vary(rng, 0.12, 0.2)
    pieces: list[Piece] = [
        ("torso", _capsule([0, hip_y, 0], [0, shoulder_y, 0], torso_r)),
        ("head", _ellipsoid([0, shoulder_y + torso_r + 0.8 * head_r, 0], [head_r] * 3)),
    ]
    arm_angle = rng.uniform(0.15, 2.2)  # from hanging down (0) past horizontal (pi/2)
    for side in (-1, 1):
        hip = np.array([side * hip_x, hip_y, 0.0])
        foot = np.array([side * (hip_x + spread * leg_len), leg_r, 0.0])
        pieces.append(("leg", _capsule(hip, foot, leg_r)))
        shoulder = np.array([side * (torso_r + arm_r), shoulder_y, 0.0])
        hand = shoulder + arm_len * np.array([side * np.sin(arm_angle), -np.cos(arm_angle), 0.0])
        pieces.append(("arm", _capsule(shoulder, hand, arm_r)))
    return pieces


def _build_rocket(rng: np.random.Generator) -> list[Piece]:
    """Cylinder body, conical or ogive nose, 3 or 4 fins, optional nozzle."""
    radius, body_h = _vary(rng, 0.2, 0.2), _vary(rng, 1.3)
    nozzle_h = _vary(rng, 0.2) if rng.random() < 0.6 else 0.0
    body_top = nozzle_h + body_h
    nose_h = _vary(rng, 0.45)
    if rng.random() < 0.5:
        nose = _cone([0, body_top, 0], [0, body_top + nose_h, 0], radius)
    else:  # ogive: radius falls off as sqrt(1 - s^2)
        s = np.linspace(0.0, 1.0, 9)
        profile = [(0.0, 0.0), *zip(radius * np.sqrt(1.0 - s**2), nose_h * s)]
        nose = _lathe(profile, [0, body_top, 0])
    pieces: list[Piece] = [("body", _rod([0, nozzle_h, 0], [0, body_top, 0], radius)), ("nose", nose)]
    n_fins = int(rng.integers(3, 5))
    span, fin_h, fin_t = _vary(rng, 0.25), _vary(rng, 0.4), 0.03
    for k in range(n_fins):
        yaw = 2.0 * np.pi * k / n_fins
        offset = rotation_matrix(yaw, _UP)[:3, :3] @ [radius + span / 2 - 0.01, 0, 0]
        center = offset + [0, nozzle_h + fin_h / 2, 0]
        pieces.append(("fin", _box(center, [span, fin_h, fin_t], yaw=yaw)))
    if nozzle_h > 0:
        profile = [(0.0, 0.0), (0.8 * radius, 0.0), (0.55 * radius, nozzle_h), (0.0, nozzle_h)]
        pieces.append(("nozzle", _lathe(profile, [0, 0, 0])))
    return pieces


def _build_airplane(rng: np.random.Generator) -> list[Piece]:
    """Capsule fuselage, swept wings (high or low), tail fin + stabilisers, optional engines."""
    length, fus_r = _vary(rng, 2.0, 0.2), _vary(rng, 0.14, 0.2)
    span, chord, wing_t = _vary(rng, 2.0, 0.25), _vary(rng, 0.4), 0.04
    sweep = rng.uniform(0.0, 0.5)
    wing_y = fus_r * rng.choice([-0.5, 0.5])
    wing_z = length * rng.uniform(-0.05, 0.15)
    pieces: list[Piece] = [("body", _capsule([0, 0, -length / 2], [0, 0, length / 2], fus_r))]
    half = span / 2
    for side in (-1, 1):
        # half-wing from the fuselage axis outwards, turned back by the sweep angle
        direction = np.array([side * np.cos(sweep), 0.0, -np.sin(sweep)])
        center = np.array([0, wing_y, wing_z]) + direction * half / 2
        pieces.append(("wing", _box(center, [half, wing_t, chord], yaw=side * sweep)))
    tail_z, tail_chord = -length / 2, _vary(rng, 0.35, 0.2)
    fin_h = _vary(rng, 0.4, 0.2)
    pieces.append(("tail", _box([0, fus_r * 0.5 + fin_h / 2, tail_z], [0.03, fin_h, tail_chord])))
    pieces.append(("tail", _box([0, fus_r * 0.3, tail_z], [_vary(rng, 0.8, 0.2), 0.03, tail_chord])))
    if rng.random() < 0.7:
        eng_r, eng_len = _vary(rng, 0.09, 0.2), _vary(rng, 0.45, 0.2)
        fractions = [0.35] if rng.random() < 0.6 else [0.3, 0.65]
        for side in (-1, 1):
            for f in fractions:
                x = side * f * half * np.cos(sweep)
                z = wing_z - f * half * np.sin(sweep) + chord * 0.3
                y = wing_y - wing_t / 2 - 0.8 * eng_r
                pieces.append(("engine", _rod([x, y, z - eng_len / 2], [x, y, z + eng_len / 2], eng_r)))
    return pieces


def _build_car(rng: np.random.Generator) -> list[Piece]:
    """Box body with a cabin on top and four short-cylinder wheels."""
    length, width, height = _vary(rng, 2.0, 0.2), _vary(rng, 0.9, 0.2), _vary(rng, 0.4, 0.25)
    wheel_radius, wheel_w = _vary(rng, 0.22, 0.2), _vary(rng, 0.16, 0.25)
    bottom = 0.6 * wheel_radius
    pieces: list[Piece] = [("body", _box([0, bottom + height / 2, 0], [width, height, length]))]
    cab_len, cab_h = length * rng.uniform(0.4, 0.6), _vary(rng, 0.38, 0.25)
    cab_z = length * rng.uniform(-0.15, 0.1)
    pieces.append(("cabin", _box([0, bottom + height + cab_h / 2, cab_z],
                                 [width * rng.uniform(0.8, 0.95), cab_h, cab_len])))
    for x in (-1, 1):
        for z in (-1, 1):
            center = [x * (width / 2 - 0.3 * wheel_w), wheel_radius, z * length * 0.32]
            pieces.append(("wheel", _disc(center, wheel_radius, wheel_w, axis=_X)))
    return pieces


def _build_cart(rng: np.random.Generator) -> list[Piece]:
    """Box body on a tubular frame with 3 or 4 ring wheels and a push handle."""
    width, length, depth = _vary(rng, 0.6, 0.2), _vary(rng, 1.0, 0.2), _vary(rng, 0.45, 0.2)
    wheel_major = _vary(rng, 0.18, 0.2)
    wheel_minor = wheel_major * rng.uniform(0.22, 0.3)
    rail_r = _vary(rng, 0.03, 0.2)
    axle_y = wheel_major + wheel_minor
    frame_y = axle_y + wheel_major * rng.uniform(0.3, 0.8)
    pieces: list[Piece] = [("body", _box([0, frame_y + rail_r + depth / 2, 0], [width, depth, length]))]
    hx, hz = width / 2, length / 2
    rect = _corners(hx, hz, frame_y)[[0, 1, 3, 2]]  # walk the rectangle
    pieces += [("frame", _rod(rect[i], rect[(i + 1) % 4], rail_r)) for i in range(4)]
    wheel_x = hx + wheel_minor + 0.02
    axles_z = [-0.35 * length, 0.35 * length]
    three_wheels = rng.random() < 0.3
    for i, z in enumerate(axles_z):
        # each axle hangs from the frame on a strut and runs between its wheels
        pieces.append(("frame", _rod([0, frame_y, z], [0, axle_y, z], rail_r)))
        if three_wheels and i == 1:  # single front wheel on a forward fork
            hub = [0, axle_y, z + wheel_major + wheel_minor]
            pieces.append(("wheel", _torus(hub, wheel_major, wheel_minor, _X)))
            pieces.append(("frame", _rod([0, axle_y, z], hub, rail_r)))
            continue
        pieces.append(("frame", _rod([-wheel_x, axle_y, z], [wheel_x, axle_y, z], rail_r)))
        pieces += [("wheel", _torus([s * wheel_x, axle_y, z], wheel_major, wheel_minor, _X)) for s in (-1, 1)]
    grip_r, rise = _vary(rng, 0.035, 0.2), _vary(rng, 0.7, 0.2)
    lean = rise * rng.uniform(0.1, 0.4)
    top = [frame_y + rise, -hz - lean]
    for s in (-1, 1):
        pieces.append(("handle", _rod([s * hx, frame_y, -hz], [s * hx, *top], grip_r)))
    pieces.append(("handle", _rod([-hx - grip_r, *top], [hx + grip_r, *top], grip_r)))
    return pieces


def _build_bed(rng: np.random.Generator) -> list[Piece]:
    """Mattress in a rail frame on 4 or 6 legs, headboard, optional pillows."""
    length, width = _vary(rng, 2.0, 0.15), _vary(rng, 1.4, 0.3)
    leg_h, leg_w = _vary(rng, 0.36, 0.2), _vary(rng, 0.16, 0.2)
    rail_h, rail_t = _vary(rng, 0.2, 0.2), _vary(rng, 0.06, 0.2)
    mat_h = _vary(rng, 0.16, 0.2)
    hx, hz = width / 2, length / 2
    rail_y = leg_h + rail_h / 2
    pieces: list[Piece] = [
        ("frame", _box([-hx + rail_t / 2, rail_y, 0], [rail_t, rail_h, length])),
        ("frame", _box([hx - rail_t / 2, rail_y, 0], [rail_t, rail_h, length])),
        ("frame", _box([0, rail_y, -hz + rail_t / 2], [width, rail_h, rail_t])),
        ("frame", _box([0, rail_y, hz - rail_t / 2], [width, rail_h, rail_t])),
    ]
    mat_y = leg_h + 0.5 * rail_h + mat_h / 2
    pieces.append(("mattress", _box([0, mat_y, 0], [width - 2 * rail_t, mat_h, length - 2 * rail_t])))
    n_rows = 3 if rng.random() < 0.5 else 2
    for z in np.linspace(-hz + leg_w / 2, hz - leg_w / 2, n_rows):
        for x in (-hx + leg_w / 2, hx - leg_w / 2):
            pieces.append(("leg", _box([x, leg_h / 2, z], [leg_w, leg_h, leg_w])))
    head_t, head_top = _vary(rng, 0.08, 0.2), mat_y + mat_h / 2 + _vary(rng, 0.5)
    head_bottom = leg_h * 0.5
    pieces.append(("headboard", _box([0, (head_bottom + head_top) / 2, -hz - head_t / 2],
                                     [width, head_top - head_bottom, head_t])))
    if rng.random() < 0.6:
        n_pillows = 2 if width > 1.2 else 1
        radii = [width / (2.3 * n_pillows), _vary(rng, 0.09, 0.2), _vary(rng, 0.2, 0.2)]
        for x in np.linspace(-hx, hx, n_pillows + 2)[1:-1]:
            center = [x, mat_y + mat_h / 2 + 0.7 * radii[1], -hz + rail_t + radii[2]]
            pieces.append(("pillow", _ellipsoid(center, radii)))
    return pieces


def _build_bicycle(rng: np.random.Generator) -> list[Piece]:
    """Two ring wheels with spokes, diamond tube frame, saddle, handlebar."""
    wheel_major, rim_r = _vary(rng, 0.33, 0.15), _vary(rng, 0.022, 0.2)
    tube_r = _vary(rng, 0.022, 0.2)
    base = 2 * wheel_major + _vary(rng, 0.25)
    rear, front = np.array([0, wheel_major, -base / 2]), np.array([0, wheel_major, base / 2])
    pieces: list[Piece] = []
    n_spokes = int(rng.integers(3, 6))
    for hub in (rear, front):
        pieces.append(("wheel", _torus(hub, wheel_major, rim_r, _X)))
        pieces.append(("wheel", _disc(hub, 2.5 * tube_r, 0.08, axis=_X)))
        for a in np.pi * np.arange(n_spokes) / n_spokes:
            spoke = wheel_major * np.array([0.0, np.sin(a), np.cos(a)])
            pieces.append(("wheel", _rod(hub - spoke, hub + spoke, 0.3 * tube_r)))

    bracket = np.array([0, 0.8 * wheel_major, -0.1 * base])
    seat_h = _vary(rng, 0.55, 0.2)
    seat_top = bracket + [0, seat_h, -0.3 * seat_h]
    head_top = np.array([0, seat_top[1] + _vary(rng, 0.05, 0.5), base / 2 - 0.45 * wheel_major])
    head_bottom = head_top + [0, -0.18, 0.04]
    tubes = [(seat_top, head_top), (bracket, head_bottom), (bracket, seat_top), (bracket, rear),
             (seat_top, rear), (head_bottom, head_top), (head_bottom, front)]
    pieces += [("frame", _rod(a, b, tube_r)) for a, b in tubes]

    post_top = seat_top + [0, _vary(rng, 0.12, 0.3), -0.03]
    pieces.append(("frame", _rod(seat_top, post_top, 0.8 * tube_r)))
    saddle = [_vary(rng, 0.11, 0.2), _vary(rng, 0.05, 0.2), _vary(rng, 0.18, 0.2)]
    pieces.append(("seat", _ellipsoid(post_top + [0, 0.5 * saddle[1], 0], saddle)))

    stem_top = head_top + [0, _vary(rng, 0.12, 0.3), -0.04]
    pieces.append(("frame", _rod(head_top, stem_top, tube_r)))
    half_bar = _vary(rng, 0.26, 0.2)
    pieces.append(("handle", _rod(stem_top - [half_bar, 0, 0], stem_top + [half_bar, 0, 0], tube_r)))
    for s in (-1, 1):  # grips
        end = stem_top + [s * half_bar, 0, 0]
        pieces.append(("handle", _capsule(end - [s * 0.1, 0, 0], end, 1.4 * tube_r)))
    return pieces


# --------------------------------------------------------------------------------------------------
# Registry and split
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CategorySpec:
    """A category: its builder and every part name it can produce, in label order."""

    name: str
    parts: tuple[str, ...]
    build: Builder


def _spec(name: str, parts: Iterable[str], build: Builder) -> tuple[str, CategorySpec]:
    return name, CategorySpec(name, tuple(parts), build)


#: Registry of categories. A shape's ``part_names`` are the spec's ``parts`` it actually contains,
#: in this order (optional parts are listed last, so mandatory parts keep their label index).
CATEGORIES: dict[str, CategorySpec] = dict([
    _spec("airplane", ["body", "wing", "tail", "engine"], _build_airplane),
    _spec("bed", ["frame", "mattress", "leg", "headboard", "pillow"], _build_bed),
    _spec("bicycle", ["wheel", "frame", "seat", "handle"], _build_bicycle),
    _spec("bottle", ["body", "neck", "cap", "handle"], _build_bottle),
    _spec("car", ["body", "cabin", "wheel"], _build_car),
    _spec("cart", ["body", "frame", "wheel", "handle"], _build_cart),
    _spec("chair", ["seat", "leg", "back", "armrest"], _build_chair),
    _spec("guitar", ["body", "neck", "headstock"], _build_guitar),
    _spec("human", ["torso", "head", "leg", "arm"], _build_human),
    _spec("lamp", ["base", "pole", "shade"], _build_lamp),
    _spec("mug", ["body", "handle"], _build_mug),
    _spec("rocket", ["body", "nose", "fin", "nozzle"], _build_rocket),
    _spec("stool", ["seat", "leg", "rung"], _build_stool),
    _spec("table", ["top", "leg", "shelf"], _build_table),
])

#: Categories never seen in training. Each shares >= 2 part names with the training categories:
#: bed (leg, frame), bicycle (wheel, frame, seat, handle).
HELDOUT_CATEGORIES: tuple[str, ...] = ("bed", "bicycle")
TRAIN_CATEGORIES: tuple[str, ...] = tuple(c for c in sorted(CATEGORIES) if c not in HELDOUT_CATEGORIES)


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


def _assemble(pieces: list[Piece], spec: CategorySpec) -> tuple[trimesh.Trimesh, list[str], np.ndarray]:
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


def _category_key(category: str) -> int:
    # crc32, unlike hash(), is stable across interpreter runs
    return zlib.crc32(category.encode("utf-8"))


def make_shape(category: str, seed: int, rotate: bool = False, uid: str | None = None) -> SyntheticShape:
    """Generate one shape of ``category``; deterministic for ``(category, seed, rotate)``.

    Proportions are redrawn (deterministically) until every part covers at least
    :data:`MIN_PART_SHARE` of the surface. With ``rotate`` the shape is turned by a random angle
    about the up (+y) axis; the geometry before rotation does not depend on ``rotate``.
    ``uid`` defaults to ``f"{category}_{seed:04d}"``.
    """
    spec = _get_spec(category)
    seed = _check_non_negative(seed, "seed")
    build_seq, pose_seq = np.random.SeedSequence([_category_key(category), seed]).spawn(2)
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
        pose = rotation_matrix(np.random.default_rng(pose_seq).uniform(0.0, 2.0 * np.pi), _UP)
        mesh.apply_transform(pose)
    pose = _normalise(mesh) @ pose
    return SyntheticShape(
        uid=uid if uid is not None else f"{category}_{seed:04d}",
        category=category,
        mesh=mesh,
        part_names=part_names,
        face_labels=labels,
        keypoints=transform_keypoints(keypoints, pose),
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
