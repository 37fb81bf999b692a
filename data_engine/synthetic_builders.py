"""Category builders of the procedural shapes: ``rng -> [(part name, mesh), ...]``.

A builder draws one shape's proportions and arrangement from ``rng`` and returns its pieces, each named by
the part it belongs to, in any order and in arbitrary units (y up, z front). Part names are the canonical
ones (``"wheel"``, ``"seat"``); :mod:`data_engine.synthetic` assembles, names (synonyms) and normalises.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import trimesh
from trimesh.transformations import rotation_matrix

from data_engine.synthetic_parts import (
    UP,
    X,
    Z,
    box,
    capsule,
    cone,
    corners,
    disc,
    ellipsoid,
    handlebar,
    lathe,
    leg,
    ring_points,
    rod,
    saddle,
    side_handle,
    spoked_wheel,
    torus,
    vary,
)

Piece = tuple[str, trimesh.Trimesh]
Builder = Callable[[np.random.Generator], list[Piece]]


def build_table(rng: np.random.Generator) -> list[Piece]:
    """Top on 3 or 4 legs (round top) or 4 legs (rectangular top), optional lower shelf."""
    height, thick = vary(rng, 0.75), vary(rng, 0.06)
    leg_r, square = vary(rng, 0.045), bool(rng.random() < 0.4)
    top_y = height - thick / 2.0
    if rng.random() < 0.4:
        radius = vary(rng, 0.55)
        pieces: list[Piece] = [("top", disc([0, top_y, 0], radius, thick))]
        feet = ring_points(int(rng.integers(3, 5)), 0.7 * radius, 0.0, rng.uniform(0, np.pi))
    else:
        half_x, half_z = vary(rng, 0.65), vary(rng, 0.38)
        pieces = [("top", box([0, top_y, 0], [2 * half_x, thick, 2 * half_z]))]
        feet = corners(half_x - 2 * leg_r, half_z - 2 * leg_r, 0.0)
        if rng.random() < 0.35:  # shelf between the legs
            shelf_y = height * rng.uniform(0.2, 0.35)
            extents = [2 * (half_x - 2 * leg_r), 0.7 * thick, 2 * (half_z - 2 * leg_r)]
            pieces.append(("shelf", box([0, shelf_y, 0], extents)))
    for foot in feet:
        pieces.append(("leg", leg(foot, foot + [0, height - thick, 0], leg_r, square)))
    return pieces


def build_chair(rng: np.random.Generator) -> list[Piece]:
    """Seat on 4 legs, solid or slatted back, optional armrests."""
    seat_y, thick = vary(rng, 0.45, 0.2), vary(rng, 0.06)
    half_x, half_z = vary(rng, 0.25, 0.2), vary(rng, 0.25, 0.2)
    leg_r, square = vary(rng, 0.03), bool(rng.random() < 0.5)
    pieces: list[Piece] = [("seat", box([0, seat_y - thick / 2, 0], [2 * half_x, thick, 2 * half_z]))]
    for foot in corners(half_x - leg_r, half_z - leg_r, 0.0):
        pieces.append(("leg", leg(foot, foot + [0, seat_y - thick, 0], leg_r, square)))

    back_h, back_t = vary(rng, 0.5), vary(rng, 0.05)
    back_z = -half_z + back_t / 2
    if rng.random() < 0.6:
        pieces.append(("back", box([0, seat_y + back_h / 2, back_z], [2 * half_x, back_h, back_t])))
    else:  # top rail on vertical slats
        rail_h = 0.25 * back_h
        pieces.append(("back", box([0, seat_y + back_h - rail_h / 2, back_z], [2 * half_x, rail_h, back_t])))
        n_slats = int(rng.integers(2, 5))
        slat_w = half_x / n_slats
        for x in np.linspace(-half_x + slat_w / 2, half_x - slat_w / 2, n_slats):
            pieces.append(("back", box([x, seat_y + (back_h - rail_h) / 2, back_z],
                                        [slat_w, back_h - rail_h, back_t])))

    if rng.random() < 0.4:
        arm_y, arm_w = seat_y + vary(rng, 0.22, 0.2), vary(rng, 0.06, 0.2)
        for side in (-1, 1):
            x = side * (half_x - arm_w / 2)
            pieces.append(("armrest", box([x, arm_y, 0], [arm_w, arm_w, 2 * half_z])))
            pieces.append(("armrest", box([x, (seat_y + arm_y) / 2, half_z - arm_w / 2],
                                           [arm_w, arm_y - seat_y, arm_w])))
    return pieces


def build_stool(rng: np.random.Generator) -> list[Piece]:
    """Round, square or saddle-shaped seat on 3 or 4 splayed legs, optional rungs between the legs."""
    height, thick = vary(rng, 0.65, 0.2), vary(rng, 0.06)
    radius, leg_r = vary(rng, 0.2, 0.2), vary(rng, 0.025, 0.2)
    n_legs = int(rng.integers(3, 5))
    kind = rng.random()
    if kind < 0.5:
        pieces: list[Piece] = [("seat", disc([0, height - thick / 2, 0], radius, thick))]
    elif kind < 0.75:
        pieces = [("seat", box([0, height - thick / 2, 0], [1.6 * radius, thick, 1.6 * radius], yaw=np.pi / 4))]
    else:  # a saddle stool: a rounded seat, longer than wide
        pieces = [("saddle", saddle([0, height, 0], 0.8 * radius, 1.5 * thick, 1.3 * radius))]
    phase = rng.uniform(0, np.pi)
    feet = ring_points(n_legs, radius * rng.uniform(1.0, 1.4), 0.0, phase)
    tops = ring_points(n_legs, radius * 0.6, height - thick, phase)
    pieces += [("leg", rod(foot, top, leg_r)) for foot, top in zip(feet, tops)]
    if rng.random() < 0.5:
        t = rng.uniform(0.25, 0.45)  # rung height as a fraction along the legs
        joints = feet + t * (tops - feet)
        for i in range(n_legs):
            pieces.append(("rung", rod(joints[i], joints[(i + 1) % n_legs], 0.7 * leg_r)))
    return pieces


def build_lamp(rng: np.random.Generator) -> list[Piece]:
    """Round or square base, straight or bent pole, frustum shade."""
    base_r, base_t = vary(rng, 0.22), vary(rng, 0.05)
    if rng.random() < 0.7:
        base = disc([0, base_t / 2, 0], base_r, base_t)
    else:
        base = box([0, base_t / 2, 0], [1.7 * base_r, base_t, 1.7 * base_r])
    pole_r, height = vary(rng, 0.025), vary(rng, 1.1)
    pieces: list[Piece] = [("base", base)]
    top = np.array([0.0, height, 0.0])
    if rng.random() < 0.6:
        pieces.append(("pole", rod([0, base_t, 0], top, pole_r)))
    else:  # bent pole reaching sideways
        knee = np.array([0.0, height * rng.uniform(0.5, 0.7), 0.0])
        top = np.array([vary(rng, 0.3), height, 0.0])
        pieces += [("pole", rod([0, base_t, 0], knee, pole_r)), ("pole", capsule(knee, top, pole_r))]
    r_bottom, shade_h = vary(rng, 0.28), vary(rng, 0.3)
    r_top = r_bottom * rng.uniform(0.45, 0.75)
    profile = [(0.0, 0.0), (r_bottom, 0.0), (r_top, shade_h), (0.0, shade_h)]
    pieces.append(("shade", lathe(profile, top - [0, 0.6 * shade_h, 0])))
    return pieces


def build_mug(rng: np.random.Generator) -> list[Piece]:
    """Hollow cup with a side handle."""
    radius, height = vary(rng, 0.4), vary(rng, 0.9)
    wall = radius * rng.uniform(0.08, 0.14)
    profile = [(0.0, 0.0), (radius, 0.0), (radius, height), (radius - wall, height),
               (radius - wall, wall), (0.0, wall)]
    minor = vary(rng, 0.09, 0.2)
    major = height * rng.uniform(0.28, 0.36)
    handle = side_handle([radius - 0.5 * minor, height * rng.uniform(0.45, 0.55), 0], major, minor)
    return [("body", lathe(profile, [0, 0, 0])), ("handle", handle)]


def build_bottle(rng: np.random.Generator) -> list[Piece]:
    """Cylindrical body, tapering neck, cap; optional jug handle."""
    radius, body_h = vary(rng, 0.3), vary(rng, 0.9)
    neck_r = radius * rng.uniform(0.35, 0.5)
    shoulder_h, neck_h = vary(rng, 0.2), vary(rng, 0.3)
    cap_r, cap_h = neck_r * 1.2, vary(rng, 0.17, 0.2)
    neck_profile = [(0.0, 0.0), (radius, 0.0), (neck_r, shoulder_h), (neck_r, shoulder_h + neck_h),
                    (0.0, shoulder_h + neck_h)]
    pieces: list[Piece] = [
        ("body", lathe([(0.0, 0.0), (radius, 0.0), (radius, body_h), (0.0, body_h)], [0, 0, 0])),
        ("neck", lathe(neck_profile, [0, body_h, 0])),
        ("cap", disc([0, body_h + shoulder_h + neck_h + cap_h / 2, 0], cap_r, cap_h)),
    ]
    if rng.random() < 0.3:
        minor = vary(rng, 0.07, 0.2)
        pieces.append(("handle", side_handle([radius - 0.5 * minor, 0.6 * body_h, 0],
                                              body_h * rng.uniform(0.22, 0.3), minor)))
    return pieces


def build_guitar(rng: np.random.Generator) -> list[Piece]:
    """Standing guitar: two overlapping discs as body, long neck, headstock on top."""
    thick = vary(rng, 0.14, 0.2)
    r_low = vary(rng, 0.38, 0.2)
    r_up = r_low * rng.uniform(0.7, 0.85)
    y_low, y_up = r_low, r_low + 0.75 * (r_low + r_up)
    neck_w, neck_t, neck_len = vary(rng, 0.12, 0.2), vary(rng, 0.08, 0.2), vary(rng, 0.8, 0.2)
    neck_y0 = y_up + 0.8 * r_up
    head_len, head_w = vary(rng, 0.33, 0.2), neck_w * rng.uniform(1.5, 2.0)
    head_y = neck_y0 + neck_len + head_len / 2
    return [
        ("body", disc([0, y_low, 0], r_low, thick, axis=Z)),
        ("body", disc([0, y_up, 0], r_up, thick, axis=Z)),
        ("neck", box([0, neck_y0 + neck_len / 2, 0], [neck_w, neck_len, neck_t])),
        ("headstock", box([0, head_y, 0], [head_w, head_len, neck_t])),
    ]


def build_human(rng: np.random.Generator) -> list[Piece]:
    """Capsule figure: legs, torso, arms (down to raised), spherical head."""
    leg_len, leg_r = vary(rng, 0.85, 0.2), vary(rng, 0.065, 0.2)
    hip_x, spread = vary(rng, 0.1, 0.2), rng.uniform(0.0, 0.25)
    hip_y = leg_len + leg_r
    torso_len, torso_r = vary(rng, 0.45, 0.2), vary(rng, 0.16, 0.2)
    shoulder_y = hip_y + torso_len
    arm_len, arm_r = vary(rng, 0.65, 0.2), vary(rng, 0.05, 0.2)
    head_r = vary(rng, 0.12, 0.2)
    pieces: list[Piece] = [
        ("torso", capsule([0, hip_y, 0], [0, shoulder_y, 0], torso_r)),
        ("head", ellipsoid([0, shoulder_y + torso_r + 0.8 * head_r, 0], [head_r] * 3)),
    ]
    arm_angle = rng.uniform(0.15, 2.2)  # from hanging down (0) past horizontal (pi/2)
    for side in (-1, 1):
        hip = np.array([side * hip_x, hip_y, 0.0])
        foot = np.array([side * (hip_x + spread * leg_len), leg_r, 0.0])
        pieces.append(("leg", capsule(hip, foot, leg_r)))
        shoulder = np.array([side * (torso_r + arm_r), shoulder_y, 0.0])
        hand = shoulder + arm_len * np.array([side * np.sin(arm_angle), -np.cos(arm_angle), 0.0])
        pieces.append(("arm", capsule(shoulder, hand, arm_r)))
    return pieces


def build_rocket(rng: np.random.Generator) -> list[Piece]:
    """Cylinder body, conical or ogive nose, 3 or 4 fins, optional nozzle."""
    radius, body_h = vary(rng, 0.2, 0.2), vary(rng, 1.3)
    nozzle_h = vary(rng, 0.2) if rng.random() < 0.6 else 0.0
    body_top = nozzle_h + body_h
    nose_h = vary(rng, 0.45)
    if rng.random() < 0.5:
        nose = cone([0, body_top, 0], [0, body_top + nose_h, 0], radius)
    else:  # ogive: radius falls off as sqrt(1 - s^2)
        s = np.linspace(0.0, 1.0, 9)
        profile = [(0.0, 0.0), *zip(radius * np.sqrt(1.0 - s**2), nose_h * s)]
        nose = lathe(profile, [0, body_top, 0])
    pieces: list[Piece] = [("body", rod([0, nozzle_h, 0], [0, body_top, 0], radius)), ("nose", nose)]
    n_fins = int(rng.integers(3, 5))
    span, fin_h, fin_t = vary(rng, 0.25), vary(rng, 0.4), 0.03
    for k in range(n_fins):
        yaw = 2.0 * np.pi * k / n_fins
        offset = rotation_matrix(yaw, UP)[:3, :3] @ [radius + span / 2 - 0.01, 0, 0]
        center = offset + [0, nozzle_h + fin_h / 2, 0]
        pieces.append(("fin", box(center, [span, fin_h, fin_t], yaw=yaw)))
    if nozzle_h > 0:
        profile = [(0.0, 0.0), (0.8 * radius, 0.0), (0.55 * radius, nozzle_h), (0.0, nozzle_h)]
        pieces.append(("nozzle", lathe(profile, [0, 0, 0])))
    return pieces


def build_airplane(rng: np.random.Generator) -> list[Piece]:
    """Capsule fuselage, swept wings (high or low), tail fin + stabilisers, optional engines."""
    length, fus_r = vary(rng, 2.0, 0.2), vary(rng, 0.14, 0.2)
    span, chord, wing_t = vary(rng, 2.0, 0.25), vary(rng, 0.4), 0.04
    sweep = rng.uniform(0.0, 0.5)
    wing_y = fus_r * rng.choice([-0.5, 0.5])
    wing_z = length * rng.uniform(-0.05, 0.15)
    pieces: list[Piece] = [("body", capsule([0, 0, -length / 2], [0, 0, length / 2], fus_r))]
    half = span / 2
    for side in (-1, 1):
        # half-wing from the fuselage axis outwards, turned back by the sweep angle
        direction = np.array([side * np.cos(sweep), 0.0, -np.sin(sweep)])
        center = np.array([0, wing_y, wing_z]) + direction * half / 2
        pieces.append(("wing", box(center, [half, wing_t, chord], yaw=side * sweep)))
    tail_z, tail_chord = -length / 2, vary(rng, 0.35, 0.2)
    fin_h = vary(rng, 0.4, 0.2)
    pieces.append(("tail", box([0, fus_r * 0.5 + fin_h / 2, tail_z], [0.03, fin_h, tail_chord])))
    pieces.append(("tail", box([0, fus_r * 0.3, tail_z], [vary(rng, 0.8, 0.2), 0.03, tail_chord])))
    if rng.random() < 0.7:
        eng_r, eng_len = vary(rng, 0.09, 0.2), vary(rng, 0.45, 0.2)
        fractions = [0.35] if rng.random() < 0.6 else [0.3, 0.65]
        for side in (-1, 1):
            for f in fractions:
                x = side * f * half * np.cos(sweep)
                z = wing_z - f * half * np.sin(sweep) + chord * 0.3
                y = wing_y - wing_t / 2 - 0.8 * eng_r
                pieces.append(("engine", rod([x, y, z - eng_len / 2], [x, y, z + eng_len / 2], eng_r)))
    return pieces


def build_car(rng: np.random.Generator) -> list[Piece]:
    """Box body with a cabin on top and four short-cylinder wheels."""
    length, width, height = vary(rng, 2.0, 0.2), vary(rng, 0.9, 0.2), vary(rng, 0.4, 0.25)
    wheel_radius, wheel_w = vary(rng, 0.22, 0.2), vary(rng, 0.16, 0.25)
    bottom = 0.6 * wheel_radius
    pieces: list[Piece] = [("body", box([0, bottom + height / 2, 0], [width, height, length]))]
    cab_len, cab_h = length * rng.uniform(0.4, 0.6), vary(rng, 0.38, 0.25)
    cab_z = length * rng.uniform(-0.15, 0.1)
    pieces.append(("cabin", box([0, bottom + height + cab_h / 2, cab_z],
                                 [width * rng.uniform(0.8, 0.95), cab_h, cab_len])))
    for x in (-1, 1):
        for z in (-1, 1):
            center = [x * (width / 2 - 0.3 * wheel_w), wheel_radius, z * length * 0.32]
            pieces.append(("wheel", disc(center, wheel_radius, wheel_w, axis=X)))
    return pieces


def build_cart(rng: np.random.Generator) -> list[Piece]:
    """Box body on a tubular frame with 3 or 4 ring wheels and a push handle."""
    width, length, depth = vary(rng, 0.6, 0.2), vary(rng, 1.0, 0.2), vary(rng, 0.45, 0.2)
    wheel_major = vary(rng, 0.18, 0.2)
    wheel_minor = wheel_major * rng.uniform(0.22, 0.3)
    rail_r = vary(rng, 0.03, 0.2)
    axle_y = wheel_major + wheel_minor
    frame_y = axle_y + wheel_major * rng.uniform(0.3, 0.8)
    pieces: list[Piece] = [("body", box([0, frame_y + rail_r + depth / 2, 0], [width, depth, length]))]
    hx, hz = width / 2, length / 2
    rect = corners(hx, hz, frame_y)[[0, 1, 3, 2]]  # walk the rectangle
    pieces += [("frame", rod(rect[i], rect[(i + 1) % 4], rail_r)) for i in range(4)]
    wheel_x = hx + wheel_minor + 0.02
    axles_z = [-0.35 * length, 0.35 * length]
    three_wheels = rng.random() < 0.3
    for i, z in enumerate(axles_z):
        # each axle hangs from the frame on a strut and runs between its wheels
        pieces.append(("frame", rod([0, frame_y, z], [0, axle_y, z], rail_r)))
        if three_wheels and i == 1:  # single front wheel on a forward fork
            hub = [0, axle_y, z + wheel_major + wheel_minor]
            pieces.append(("wheel", torus(hub, wheel_major, wheel_minor, X)))
            pieces.append(("frame", rod([0, axle_y, z], hub, rail_r)))
            continue
        pieces.append(("frame", rod([-wheel_x, axle_y, z], [wheel_x, axle_y, z], rail_r)))
        pieces += [("wheel", torus([s * wheel_x, axle_y, z], wheel_major, wheel_minor, X)) for s in (-1, 1)]
    grip_r, rise = vary(rng, 0.035, 0.2), vary(rng, 0.7, 0.2)
    lean = rise * rng.uniform(0.1, 0.4)
    top = [frame_y + rise, -hz - lean]
    for s in (-1, 1):
        pieces.append(("handle", rod([s * hx, frame_y, -hz], [s * hx, *top], grip_r)))
    pieces.append(("handle", rod([-hx - grip_r, *top], [hx + grip_r, *top], grip_r)))
    return pieces


def build_bed(rng: np.random.Generator) -> list[Piece]:
    """Mattress in a rail frame on 4 or 6 legs, headboard, optional pillows."""
    length, width = vary(rng, 2.0, 0.15), vary(rng, 1.4, 0.3)
    leg_h, leg_w = vary(rng, 0.36, 0.2), vary(rng, 0.16, 0.2)
    rail_h, rail_t = vary(rng, 0.2, 0.2), vary(rng, 0.06, 0.2)
    mat_h = vary(rng, 0.16, 0.2)
    hx, hz = width / 2, length / 2
    rail_y = leg_h + rail_h / 2
    pieces: list[Piece] = [
        ("frame", box([-hx + rail_t / 2, rail_y, 0], [rail_t, rail_h, length])),
        ("frame", box([hx - rail_t / 2, rail_y, 0], [rail_t, rail_h, length])),
        ("frame", box([0, rail_y, -hz + rail_t / 2], [width, rail_h, rail_t])),
        ("frame", box([0, rail_y, hz - rail_t / 2], [width, rail_h, rail_t])),
    ]
    mat_y = leg_h + 0.5 * rail_h + mat_h / 2
    pieces.append(("mattress", box([0, mat_y, 0], [width - 2 * rail_t, mat_h, length - 2 * rail_t])))
    n_rows = 3 if rng.random() < 0.5 else 2
    for z in np.linspace(-hz + leg_w / 2, hz - leg_w / 2, n_rows):
        for x in (-hx + leg_w / 2, hx - leg_w / 2):
            pieces.append(("leg", box([x, leg_h / 2, z], [leg_w, leg_h, leg_w])))
    head_t, head_top = vary(rng, 0.08, 0.2), mat_y + mat_h / 2 + vary(rng, 0.5)
    head_bottom = leg_h * 0.5
    pieces.append(("headboard", box([0, (head_bottom + head_top) / 2, -hz - head_t / 2],
                                     [width, head_top - head_bottom, head_t])))
    if rng.random() < 0.6:
        n_pillows = 2 if width > 1.2 else 1
        radii = [width / (2.3 * n_pillows), vary(rng, 0.09, 0.2), vary(rng, 0.2, 0.2)]
        for x in np.linspace(-hx, hx, n_pillows + 2)[1:-1]:
            center = [x, mat_y + mat_h / 2 + 0.7 * radii[1], -hz + rail_t + radii[2]]
            pieces.append(("pillow", ellipsoid(center, radii)))
    return pieces


def build_bicycle(rng: np.random.Generator) -> list[Piece]:
    """Two spoked ring wheels, diamond tube frame, saddle on a post, handlebar on a stem."""
    wheel_major, rim_r = vary(rng, 0.33, 0.15), vary(rng, 0.022, 0.2)
    tube_r = vary(rng, 0.022, 0.2)
    base = 2 * wheel_major + vary(rng, 0.25)
    rear, front = np.array([0, wheel_major, -base / 2]), np.array([0, wheel_major, base / 2])
    n_spokes = int(rng.integers(3, 6))
    pieces: list[Piece] = [("wheel", m) for hub in (rear, front) for m in spoked_wheel(hub, wheel_major, rim_r, X, n_spokes)]

    bracket = np.array([0, 0.8 * wheel_major, -0.1 * base])
    seat_h = vary(rng, 0.55, 0.2)
    seat_top = bracket + [0, seat_h, -0.3 * seat_h]
    head_top = np.array([0, seat_top[1] + vary(rng, 0.05, 0.5), base / 2 - 0.45 * wheel_major])
    head_bottom = head_top + [0, -0.18, 0.04]
    tubes = [(seat_top, head_top), (bracket, head_bottom), (bracket, seat_top), (bracket, rear),
             (seat_top, rear), (head_bottom, head_top), (head_bottom, front)]
    pieces += [("frame", rod(a, b, tube_r)) for a, b in tubes]

    post_top = seat_top + [0, vary(rng, 0.12, 0.3), -0.03]
    pieces.append(("frame", rod(seat_top, post_top, 0.8 * tube_r)))
    size = [vary(rng, 0.11, 0.2), vary(rng, 0.05, 0.2), vary(rng, 0.18, 0.2)]
    pieces.append(("saddle", saddle(post_top + [0, 0.5 * size[1], 0], *size)))

    stem_top = head_top + [0, vary(rng, 0.12, 0.3), -0.04]
    pieces.append(("frame", rod(head_top, stem_top, tube_r)))
    pieces += [("handle", m) for m in handlebar(stem_top, vary(rng, 0.26, 0.2), tube_r)]
    return pieces


def build_sofa(rng: np.random.Generator) -> list[Piece]:
    """One to three seat cushions on a plinth-less base, back, two armrests, optional pillows."""
    width, depth = vary(rng, 1.8, 0.2), vary(rng, 0.85, 0.15)
    seat_h, seat_t = vary(rng, 0.42, 0.15), vary(rng, 0.22, 0.2)
    back_h, back_t = vary(rng, 0.45, 0.2), vary(rng, 0.2, 0.2)
    arm_w, arm_h = vary(rng, 0.16, 0.2), vary(rng, 0.2, 0.3)
    inner = width - 2 * arm_w
    n_cushions = int(rng.integers(1, 4))
    cushion_w = inner / n_cushions
    pieces: list[Piece] = []
    for i in range(n_cushions):  # cushions over the whole seat depth, from the floor up
        x = -inner / 2 + (i + 0.5) * cushion_w
        pieces.append(("seat", box([x, seat_h / 2, back_t / 2], [cushion_w * 0.98, seat_h, depth - back_t])))
    pieces.append(("back", box([0, (seat_h + back_h) / 2 + seat_h / 2 - seat_t / 2, -depth / 2 + back_t / 2],
                               [inner, seat_h + back_h, back_t])))
    for s in (-1, 1):
        pieces.append(("armrest", box([s * (width - arm_w) / 2, (seat_h + arm_h) / 2, 0], [arm_w, seat_h + arm_h, depth])))
    if rng.random() < 0.6:
        size = [vary(rng, 0.28, 0.15), vary(rng, 0.25, 0.15), vary(rng, 0.1, 0.2)]
        for s in (-1, 1):
            pieces.append(("pillow", ellipsoid([s * (inner / 2 - size[0]), seat_h + 0.8 * size[1],
                                                -depth / 2 + back_t + size[2]], size)))
    return pieces


def build_bench(rng: np.random.Generator) -> list[Piece]:
    """Long slab or slatted seat on four legs or two slab ends, optional slatted back."""
    length, depth = vary(rng, 1.5, 0.25), vary(rng, 0.4, 0.2)
    seat_y, thick = vary(rng, 0.45, 0.15), vary(rng, 0.05, 0.2)
    pieces: list[Piece] = []
    if rng.random() < 0.5:
        pieces.append(("seat", box([0, seat_y - thick / 2, 0], [length, thick, depth])))
    else:
        n = int(rng.integers(3, 5))
        slat = depth / n
        for z in np.linspace(-depth / 2 + slat / 2, depth / 2 - slat / 2, n):
            pieces.append(("seat", box([0, seat_y - thick / 2, z], [length, thick, 0.8 * slat])))
    inset = length * rng.uniform(0.05, 0.15)
    if rng.random() < 0.6:
        leg_r, square = vary(rng, 0.035, 0.2), bool(rng.random() < 0.5)
        for foot in corners(length / 2 - inset, depth / 2 - leg_r, 0.0):
            pieces.append(("leg", leg(foot, foot + [0, seat_y - thick, 0], leg_r, square)))
    else:  # two slab ends
        for s in (-1, 1):
            pieces.append(("leg", box([s * (length / 2 - inset), (seat_y - thick) / 2, 0],
                                      [vary(rng, 0.06, 0.2), seat_y - thick, depth * 0.9])))
    if rng.random() < 0.6:
        back_h, n = vary(rng, 0.4, 0.2), int(rng.integers(2, 4))
        for y in np.linspace(seat_y + 0.1, seat_y + back_h, n):
            pieces.append(("back", box([0, y, -depth / 2 - 0.02], [length, back_h / (2 * n), 0.04])))
        for s in (-1, 1):
            pieces.append(("back", box([s * (length / 2 - inset), seat_y + back_h / 2, -depth / 2 - 0.02],
                                       [0.05, back_h, 0.04])))
    return pieces


def build_wheelchair(rng: np.random.Generator) -> list[Piece]:
    """Seat and back on a tube frame, two large spoked wheels, two small front casters, push handles."""
    seat_y, half_x, half_z = vary(rng, 0.5, 0.1), vary(rng, 0.23, 0.15), vary(rng, 0.22, 0.15)
    tube_r, thick = vary(rng, 0.018, 0.2), vary(rng, 0.05, 0.2)
    back_h = vary(rng, 0.45, 0.2)
    pieces: list[Piece] = [("seat", box([0, seat_y, 0], [2 * half_x, thick, 2 * half_z])),
                           ("back", box([0, seat_y + back_h / 2, -half_z], [2 * half_x, back_h, thick]))]
    big_r, rim_r = vary(rng, 0.3, 0.1), vary(rng, 0.025, 0.2)
    wheel_x = half_x + 0.05
    hub_z = -half_z * rng.uniform(0.2, 0.6)
    n_spokes = int(rng.integers(3, 6))
    for s in (-1, 1):
        hub = np.array([s * wheel_x, big_r, hub_z])
        pieces += [("wheel", m) for m in spoked_wheel(hub, big_r, rim_r, X, n_spokes, hub_width=0.05)]
        caster_r = vary(rng, 0.07, 0.2)
        caster = np.array([s * half_x, caster_r, half_z + 0.05])
        pieces.append(("wheel", disc(caster, caster_r, 0.04, axis=X)))
        # side frame: a rail under the seat, a post down to the caster, a post up the back
        pieces.append(("frame", rod([s * half_x, seat_y - thick, -half_z], [s * half_x, seat_y - thick, half_z + 0.05], tube_r)))
        pieces.append(("frame", rod([s * half_x, seat_y - thick, half_z + 0.05], caster + [0, caster_r, 0], tube_r)))
        pieces.append(("frame", rod([s * half_x, seat_y - thick, -half_z], [s * half_x, seat_y + back_h, -half_z], tube_r)))
        pieces.append(("frame", rod([s * half_x, seat_y - thick, hub_z], hub * [1, 0, 1] + [-s * 0.05, big_r, 0], tube_r)))
        # push handle: up from the top of the back post, then backwards into a grip
        top = np.array([s * half_x, seat_y + back_h, -half_z])
        bend = top + [0, vary(rng, 0.12, 0.2), 0]
        pieces.append(("handle", rod(top, bend, 1.5 * tube_r)))
        pieces.append(("handle", capsule(bend, bend + [0, 0.02, -vary(rng, 0.18, 0.2)], 2.2 * tube_r)))
    if rng.random() < 0.5:
        arm_y = seat_y + vary(rng, 0.22, 0.2)
        for s in (-1, 1):
            pieces.append(("armrest", box([s * half_x, arm_y, 0], [0.06, 0.04, 1.6 * half_z])))
    return pieces


def build_scooter(rng: np.random.Generator) -> list[Piece]:
    """Kick scooter: low deck between two small wheels, steering column, handlebar with grips."""
    length, width = vary(rng, 0.8, 0.2), vary(rng, 0.16, 0.2)
    wheel_r = vary(rng, 0.1, 0.2)
    deck_y, deck_t = wheel_r * rng.uniform(0.9, 1.3), vary(rng, 0.05, 0.2)
    pieces: list[Piece] = [("deck", box([0, deck_y, 0], [width, deck_t, length]))]
    rear, front = np.array([0, wheel_r, -length / 2]), np.array([0, wheel_r, length / 2 + wheel_r * 0.6])
    for hub in (rear, front):
        pieces.append(("wheel", disc(hub, wheel_r, vary(rng, 0.05, 0.2), axis=X)))
    tube_r = vary(rng, 0.022, 0.2)
    height = vary(rng, 0.95, 0.15)
    top = front + [0, height, -rng.uniform(0.05, 0.2)]
    pieces.append(("frame", rod(front, top, tube_r)))
    pieces.append(("frame", rod(front + [0, 0.1, -0.05], [0, deck_y, length / 2], tube_r)))  # neck to the deck
    pieces += [("handle", m) for m in handlebar(top, vary(rng, 0.25, 0.2), tube_r, grip_length=0.12)]
    return pieces


def build_wheelbarrow(rng: np.random.Generator) -> list[Piece]:
    """Tray on a frame, one front wheel, two rear legs, two long handles with grips."""
    length, width = vary(rng, 0.8, 0.2), vary(rng, 0.6, 0.2)
    depth = vary(rng, 0.3, 0.2)
    wheel_r = vary(rng, 0.2, 0.2)
    tray_y = wheel_r + vary(rng, 0.25, 0.2)
    top_r, bottom = 0.5 * width, 0.5 * width * rng.uniform(0.5, 0.75)
    profile = [(0.0, 0.0), (bottom, 0.0), (top_r, depth), (top_r * 0.93, depth), (bottom * 0.93, 0.05), (0.0, 0.05)]
    tray = lathe(profile, [0, 0, 0]).apply_scale([1.0, 1.0, length / width]).apply_translation([0, tray_y, 0])
    pieces: list[Piece] = [("body", tray)]
    hub = np.array([0, wheel_r, length / 2 + wheel_r * 0.6])
    if rng.random() < 0.5:
        pieces += [("wheel", m) for m in spoked_wheel(hub, wheel_r, 0.3 * wheel_r, X, int(rng.integers(3, 6)))]
    else:
        pieces.append(("wheel", disc(hub, wheel_r, vary(rng, 0.08, 0.2), axis=X)))
    tube_r, grip = vary(rng, 0.02, 0.2), vary(rng, 0.5, 0.2)
    for s in (-1, 1):
        x = s * bottom * 0.8
        back = np.array([x, tray_y + 0.1, -length / 2 - grip])
        pieces.append(("frame", rod(hub + [s * 0.06, 0, 0], [x, tray_y, -length / 2], tube_r)))
        pieces.append(("handle", capsule([x, tray_y, -length / 2], back, 1.6 * tube_r)))
        pieces.append(("leg", rod([x, tray_y, -length / 3], [x, 0.0, -length / 3 - 0.05], 1.5 * tube_r)))
    return pieces


def build_lounger(rng: np.random.Generator) -> list[Piece]:
    """Sun lounger: a mattress (flat part and raised back part) on a rail frame on four legs."""
    length, width = vary(rng, 1.9, 0.15), vary(rng, 0.65, 0.2)
    leg_h, mat_t = vary(rng, 0.3, 0.2), vary(rng, 0.1, 0.3)
    rail_r = vary(rng, 0.025, 0.2)
    flat = length * rng.uniform(0.6, 0.7)
    tilt = rng.uniform(0.3, 1.1)  # raised back, radians from flat
    hz, hx = length / 2, width / 2
    y = leg_h + rail_r
    pieces: list[Piece] = [("mattress", box([0, y + mat_t / 2, hz - flat / 2], [width, mat_t, flat]))]
    back_len = length - flat
    hinge = np.array([0, y + mat_t / 2, hz - flat])
    direction = np.array([0.0, np.sin(tilt), -np.cos(tilt)])
    back = box([0, 0, 0], [width, mat_t, back_len])
    back.apply_transform(rotation_matrix(-tilt, X))
    back.apply_translation(hinge + direction * back_len / 2)
    pieces.append(("mattress", back))
    rect = corners(hx, hz, leg_h)[[0, 1, 3, 2]]
    pieces += [("frame", rod(rect[i], rect[(i + 1) % 4], rail_r)) for i in range(4)]
    for foot in corners(hx - rail_r, hz * 0.9, 0.0):
        pieces.append(("leg", leg(foot, foot + [0, leg_h, 0], vary(rng, 0.03, 0.2), bool(rng.random() < 0.5))))
    return pieces


def build_windmill(rng: np.random.Generator) -> list[Piece]:
    """Square base, tapering round tower, conical roof, four to six sails on a hub at the front."""
    base_w, base_h = vary(rng, 0.9, 0.2), vary(rng, 0.15, 0.3)
    tower_h, r_low = vary(rng, 1.3, 0.2), vary(rng, 0.35, 0.2)
    r_top = r_low * rng.uniform(0.55, 0.8)
    roof_h = vary(rng, 0.35, 0.2)
    pieces: list[Piece] = [
        ("base", box([0, base_h / 2, 0], [base_w, base_h, base_w])),
        ("tower", lathe([(0.0, 0.0), (r_low, 0.0), (r_top, tower_h), (0.0, tower_h)], [0, base_h, 0])),
        ("roof", cone([0, base_h + tower_h, 0], [0, base_h + tower_h + roof_h, 0], r_top * 1.15)),
    ]
    hub = np.array([0, base_h + tower_h * 0.9, r_top + 0.08])
    n_sails, span, sail_w = int(rng.integers(4, 7)), vary(rng, 0.85, 0.2), vary(rng, 0.18, 0.2)
    phase = rng.uniform(0, np.pi)
    for k in range(n_sails):
        a = phase + 2 * np.pi * k / n_sails
        d = np.array([np.cos(a), np.sin(a), 0.0])
        sail = box([0, 0, 0], [span, sail_w, 0.02])
        sail.apply_transform(rotation_matrix(a, Z))
        sail.apply_translation(hub + d * (span / 2 + 0.05))
        pieces.append(("sail", sail))
    return pieces
