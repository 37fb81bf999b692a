"""Named keypoints of the procedural shapes, located by rules over the named pieces a builder returns.

A builder of :mod:`data_engine.synthetic` returns ``[(part_name, trimesh), ...]`` before the pieces are merged.
Each rule here names a keypoint, the part whose pieces carry it, and how to find it on one piece ("the lowest
point of each ``leg``", "the top corners of the ``seat``", "the centre of each ``wheel``"). Rules are keyed by
part name, not by category, so they keep working when categories are added or rebuilt: any shape with a
``leg`` gets leg ends. A rule may be limited to some categories where a part name is too generic (the
airplane's nose is the front of its ``body``).

Points from one rule closer than :data:`MERGE_FRACTION` of the shape's size are one instance (a bicycle wheel
is a ring, a hub and spokes, all centred on the axle), and every keypoint is moved to the nearest point of
the assembled surface, so it is a point of the shape and has a nearest sampled point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import trimesh

Piece = tuple[str, trimesh.Trimesh]
#: ``(piece, shape_centre) -> candidate points (M, 3)``, in the builder's frame (y up, z front).
Locator = Callable[[trimesh.Trimesh, np.ndarray], np.ndarray]

#: Instances of one keypoint closer than this fraction of the shape's bounding-box diagonal are merged.
MERGE_FRACTION = 0.03
#: Vertices within this fraction of a piece's size of an extreme count as "at" the extreme (a flat end).
_TOLERANCE = 0.02


def _extreme(axis: int, sign: float) -> Locator:
    """The centre of the piece's vertices at its extreme along ``sign * axis`` (a flat end gives its middle)."""

    def locate(piece: trimesh.Trimesh, centre: np.ndarray) -> np.ndarray:
        v = np.asarray(piece.vertices, dtype=np.float64)
        coord = sign * v[:, axis]
        tol = _TOLERANCE * float(np.ptp(v, axis=0).max())
        return v[coord >= coord.max() - tol].mean(axis=0, keepdims=True)

    return locate


def _top_corners(piece: trimesh.Trimesh, centre: np.ndarray) -> np.ndarray:
    """The corners of the piece's top face when it is a quadrilateral (boxes); nothing for round tops."""
    from scipy.spatial import ConvexHull

    v = np.asarray(piece.vertices, dtype=np.float64)
    tol = _TOLERANCE * float(np.ptp(v, axis=0).max())
    top = np.unique(v[v[:, 1] >= v[:, 1].max() - tol].round(9), axis=0)
    if len(top) < 4:
        return np.zeros((0, 3))
    hull = ConvexHull(top[:, [0, 2]])
    return top[hull.vertices] if len(hull.vertices) == 4 else np.zeros((0, 3))


def _far_end(piece: trimesh.Trimesh, centre: np.ndarray) -> np.ndarray:
    """The end of the piece farthest from the shape's centre (a wing's tip)."""
    v = np.asarray(piece.vertices, dtype=np.float64)
    dist = np.linalg.norm(v - centre, axis=1)
    tol = _TOLERANCE * float(np.ptp(v, axis=0).max())
    return v[dist >= dist.max() - tol].mean(axis=0, keepdims=True)


def _centre(piece: trimesh.Trimesh, centre: np.ndarray) -> np.ndarray:
    """The centre of the piece's bounding box (a wheel's hub)."""
    return np.asarray(piece.bounds, dtype=np.float64).mean(axis=0, keepdims=True)


@dataclass(frozen=True)
class KeypointRule:
    """One named keypoint: which pieces carry it and how to find it on each.

    Attributes:
        name: the keypoint's name (what a user would type), e.g. ``"leg end"``.
        part: the part name of the pieces it is found on.
        locate: ``(piece, shape_centre) -> (M, 3)`` points on one piece.
        categories: only these categories (None: every category with the part).
    """

    name: str
    part: str
    locate: Locator
    categories: tuple[str, ...] | None = None


#: The rules, in the order their names appear in a sidecar.
RULES: tuple[KeypointRule, ...] = (
    KeypointRule("leg end", "leg", _extreme(1, -1.0)),
    KeypointRule("seat corner", "seat", _top_corners),
    KeypointRule("top corner", "top", _top_corners),
    KeypointRule("wheel centre", "wheel", _centre),
    KeypointRule("wing tip", "wing", _far_end),
    KeypointRule("nose", "body", _extreme(2, 1.0), categories=("airplane",)),
    KeypointRule("nose", "nose", _extreme(1, 1.0)),
    KeypointRule("head top", "head", _extreme(1, 1.0)),
    KeypointRule("headstock tip", "headstock", _extreme(1, 1.0)),
    KeypointRule("cap top", "cap", _extreme(1, 1.0)),
    KeypointRule("shade top", "shade", _extreme(1, 1.0)),
)


def keypoint_names(rules: Sequence[KeypointRule] = RULES) -> list[str]:
    """Every keypoint name the rules can produce, in order, without repeats."""
    return list(dict.fromkeys(r.name for r in rules))


def _merge(points: np.ndarray, radius: float) -> np.ndarray:
    """Greedy merge: each point joins the first kept point within ``radius`` (kept points are cluster means)."""
    groups: list[list[np.ndarray]] = []
    for p in points:
        for g in groups:
            if np.linalg.norm(np.mean(g, axis=0) - p) <= radius:
                g.append(p)
                break
        else:
            groups.append([p])
    return np.array([np.mean(g, axis=0) for g in groups]).reshape(-1, 3)


def locate_keypoints(
    pieces: Sequence[Piece], category: str, surface: trimesh.Trimesh, rules: Sequence[KeypointRule] = RULES
) -> dict[str, np.ndarray]:
    """Keypoints of one shape, in the builders' frame.

    Args:
        pieces: the builder's ``[(part_name, mesh), ...]``.
        category: the shape's category (for rules limited to some categories).
        surface: the assembled mesh; keypoints are moved to its nearest point.
        rules: the rules to apply.

    Returns:
        ``{name: (M, 3) float64}`` for every name with at least one instance.
    """
    bounds = surface.bounds
    centre = bounds.mean(axis=0)
    radius = MERGE_FRACTION * float(np.linalg.norm(bounds[1] - bounds[0]))
    found: dict[str, list[np.ndarray]] = {}
    for rule in rules:
        if rule.categories is not None and category not in rule.categories:
            continue
        for part, piece in pieces:
            if part == rule.part:
                found.setdefault(rule.name, []).append(rule.locate(piece, centre))
    out = {}
    for name, chunks in found.items():
        points = _merge(np.concatenate(chunks), radius)
        if len(points):
            out[name] = trimesh.proximity.closest_point(surface, points)[0]
    return out


def transform_keypoints(keypoints: dict[str, np.ndarray], transform: np.ndarray) -> dict[str, list[list[float]]]:
    """Apply a ``(4, 4)`` transform; JSON-ready ``{name: [[x, y, z], ...]}`` rounded to 1e-6."""
    return {
        name: np.round(trimesh.transform_points(points, transform), 6).tolist()
        for name, points in keypoints.items()
    }
