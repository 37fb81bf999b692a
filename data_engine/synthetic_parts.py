"""Primitives of the procedural shapes: trimesh solids placed in y-up world coordinates.

x is left/right, y is up, z is back/front. Every function returns a new mesh; sizes are in arbitrary units
(shapes are normalised into the unit sphere once assembled, see :mod:`data_engine.synthetic`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import trimesh
from trimesh import creation
from trimesh.transformations import rotation_matrix

#: Proportions are drawn uniformly in ``base * [1 - rel, 1 + rel]`` with this default ``rel``.
VARIATION = 0.3
SECTIONS = 24  # around-the-axis resolution of rods, discs, cones and lathes
UP = np.array([0.0, 1.0, 0.0])
X = np.array([1.0, 0.0, 0.0])
Z = np.array([0.0, 0.0, 1.0])

Vec = Sequence[float] | np.ndarray


def vary(rng: np.random.Generator, base: float, rel: float = VARIATION) -> float:
    """``base`` scaled by a uniform factor in ``[1 - rel, 1 + rel]``."""
    return float(base * rng.uniform(1.0 - rel, 1.0 + rel))


def place(mesh: trimesh.Trimesh, direction: Vec, origin: Vec) -> trimesh.Trimesh:
    """Rotate a primitive built along +z onto ``direction`` and move its origin to ``origin``."""
    transform = trimesh.geometry.align_vectors(Z, np.asarray(direction, dtype=float))
    transform[:3, 3] = origin
    return mesh.apply_transform(transform)


def box(center: Vec, extents: Vec, yaw: float = 0.0) -> trimesh.Trimesh:
    """Axis-aligned box (optionally turned by ``yaw`` about the up axis)."""
    transform = rotation_matrix(yaw, UP)
    transform[:3, 3] = center
    return creation.box(extents=extents, transform=transform)


def rod(start: Vec, end: Vec, radius: float) -> trimesh.Trimesh:
    """Cylinder from ``start`` to ``end``."""
    return creation.cylinder(radius=radius, segment=[start, end], sections=SECTIONS)


def capsule(start: Vec, end: Vec, radius: float) -> trimesh.Trimesh:
    """Capsule whose hemisphere centres are ``start`` and ``end``."""
    start, end = np.asarray(start, dtype=float), np.asarray(end, dtype=float)
    axis = end - start
    mesh = creation.capsule(height=float(np.linalg.norm(axis)), radius=radius, count=[16, 8])
    return place(mesh, axis, (start + end) / 2.0)


def disc(center: Vec, radius: float, thickness: float, axis: Vec = UP) -> trimesh.Trimesh:
    """Short cylinder of ``thickness`` centred on ``center`` along ``axis``."""
    center, axis = np.asarray(center, dtype=float), np.asarray(axis, dtype=float)
    half = axis / np.linalg.norm(axis) * thickness / 2.0
    return creation.cylinder(radius=radius, segment=[center - half, center + half], sections=32)


def cone(base: Vec, apex: Vec, radius: float) -> trimesh.Trimesh:
    """Cone with its base disc centred on ``base``."""
    axis = np.asarray(apex, dtype=float) - np.asarray(base, dtype=float)
    mesh = creation.cone(radius=radius, height=float(np.linalg.norm(axis)), sections=SECTIONS)
    return place(mesh, axis, base)


def lathe(profile: Sequence[tuple[float, float]], base: Vec, axis: Vec = UP) -> trimesh.Trimesh:
    """Solid of revolution of a ``(radius, height)`` profile, heights measured from ``base``."""
    mesh = creation.revolve(np.asarray(profile, dtype=float), sections=32)
    return place(mesh, axis, base)


def torus(center: Vec, major: float, minor: float, axis: Vec) -> trimesh.Trimesh:
    """Torus (ring) around ``axis``."""
    mesh = creation.torus(major, minor, major_sections=32, minor_sections=10)
    return place(mesh, axis, center)


def side_handle(center: Vec, major: float, minor: float) -> trimesh.Trimesh:
    """Half ring in the x-y plane bulging towards +x from ``center`` (a mug or jug handle).

    The open ends sit on the plane x = center_x, so placing ``center`` on (or just inside) a wall
    hides them in that wall.
    """
    angles = np.linspace(0.0, 2.0 * np.pi, 11)
    circle = np.c_[major + minor * np.cos(angles), minor * np.sin(angles)]
    # revolve() sweeps the +y half-plane for angle=pi; turning by -90 degrees about z puts it on +x.
    mesh = creation.revolve(circle, angle=np.pi, sections=16)
    transform = rotation_matrix(-np.pi / 2.0, Z)
    transform[:3, 3] = center
    return mesh.apply_transform(transform)


def ellipsoid(center: Vec, radii: Vec) -> trimesh.Trimesh:
    """Axis-aligned ellipsoid (a scaled icosphere)."""
    transform = np.diag([*np.asarray(radii, dtype=float), 1.0])
    transform[:3, 3] = center
    return creation.icosphere(subdivisions=2).apply_transform(transform)


def leg(foot: Vec, top: Vec, half_width: float, square: bool) -> trimesh.Trimesh:
    """Upright leg from ``foot`` to ``top``: a rod, or a square post when ``square``."""
    foot, top = np.asarray(foot, dtype=float), np.asarray(top, dtype=float)
    if not square:
        return rod(foot, top, half_width)
    height = float(np.linalg.norm(top - foot))
    return place(creation.box(extents=[2 * half_width, 2 * half_width, height]), top - foot,
                  (foot + top) / 2.0)


def ring_points(count: int, radius: float, y: float, phase: float = 0.0) -> np.ndarray:
    """``count`` points evenly spaced on a horizontal circle, shape (count, 3)."""
    angles = phase + 2.0 * np.pi * np.arange(count) / count
    return np.c_[radius * np.cos(angles), np.full(count, y), radius * np.sin(angles)]


def corners(half_x: float, half_z: float, y: float) -> np.ndarray:
    """The four corners of a horizontal rectangle, shape (4, 3)."""
    return np.array([[sx * half_x, y, sz * half_z] for sx in (-1, 1) for sz in (-1, 1)])


# Compound parts, shared by every category that has them, so that a part looks alike wherever it appears
# (what lets a model recognise a bicycle's wheels from a cart's and a wheelchair's).


def spoked_wheel(hub: Vec, radius: float, tube: float, axis: Vec, spokes: int, hub_width: float = 0.08) -> list[trimesh.Trimesh]:
    """A ring rim on ``axis`` through ``hub``, a hub disc and ``spokes`` spokes across the rim (bicycles, wheelchairs)."""
    hub, axis = np.asarray(hub, dtype=float), np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    # two unit vectors spanning the wheel's plane
    u = np.cross(axis, UP if abs(axis @ UP) < 0.9 else X)
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)
    meshes = [torus(hub, radius, tube, axis), disc(hub, 2.5 * tube, hub_width, axis=axis)]
    for a in np.pi * np.arange(spokes) / spokes:
        spoke = radius * (np.cos(a) * u + np.sin(a) * v)
        meshes.append(rod(hub - spoke, hub + spoke, 0.3 * tube))
    return meshes


def handlebar(center: Vec, half_width: float, radius: float, grip_length: float = 0.1) -> list[trimesh.Trimesh]:
    """A straight bar along x through ``center`` with a thicker grip at each end (bicycles, scooters)."""
    center = np.asarray(center, dtype=float)
    meshes = [rod(center - [half_width, 0, 0], center + [half_width, 0, 0], radius)]
    for s in (-1, 1):
        end = center + [s * half_width, 0, 0]
        meshes.append(capsule(end - [s * grip_length, 0, 0], end, 1.4 * radius))
    return meshes


def saddle(center: Vec, half_width: float, half_height: float, half_length: float) -> trimesh.Trimesh:
    """A rounded seat, longer than wide, on a post (bicycles, saddle stools, scooters)."""
    return ellipsoid(center, [half_width, half_height, half_length])
