"""Pictures of segmentations: coloured point clouds as PNG (matplotlib, headless). Files: :mod:`patchalign3d.outputs`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Distinct colours for parts (matplotlib's tab10 then tab20b), RGB in [0, 1]. Unlabelled (-1) is grey.
_UNLABELLED = (0.75, 0.75, 0.75)


def part_colors(num_parts: int) -> np.ndarray:
    """``(K, 3)`` RGB colours in [0, 1], stable for a given K."""
    from matplotlib import colormaps

    base = list(colormaps["tab10"].colors) + list(colormaps["tab20b"].colors) + list(colormaps["tab20c"].colors)
    reps = -(-num_parts // len(base)) if num_parts else 1
    return np.asarray((base * reps)[:num_parts], dtype=np.float64).reshape(-1, 3)


def label_colors(labels: np.ndarray, num_parts: int) -> np.ndarray:
    """``(N,)`` labels (-1 = none) -> ``(N, 3)`` uint8 RGB."""
    labels = np.asarray(labels)
    table = np.vstack([part_colors(num_parts), _UNLABELLED])
    return (table[np.where(labels < 0, num_parts, labels)] * 255).round().astype(np.uint8)


#: The camera of every picture: 20 degrees above the horizon, azimuth -60 degrees (matplotlib's default view).
#: A y-up shape (front +z) is seen from the front, somewhat from its +x side.
VIEW_ELEVATION, VIEW_AZIMUTH = 20, -60


def plot_frame(points: np.ndarray, up_axis: str = "y") -> np.ndarray:
    """``(N, 3)`` points in matplotlib's z-up frame by a rotation, never a reflection.

    A y-up shape turns +90 degrees about x, ``(x, y, z) -> (x, -z, y)``: up stays up and left stays left. (Swapping
    y and z instead would mirror the picture: a shape's left side would be drawn on the right.)
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if up_axis == "y":
        return np.stack([points[:, 0], -points[:, 2], points[:, 1]], axis=1)
    if up_axis == "z":
        return points
    raise ValueError(f"up_axis must be 'y' or 'z', got {up_axis!r}")


def _draw(ax, pts: np.ndarray, labels: np.ndarray, part_names: Sequence[str], title: str | None, size: float) -> None:
    draw_cloud(ax, pts, label_colors(labels, len(part_names)) / 255.0, title, size)


def draw_cloud(ax, pts: np.ndarray, colors: np.ndarray, title: str | None = None, size: float = 4.0) -> None:
    """Scatter ``(N, 3)`` points (in the plot frame, :func:`plot_frame`) with ``(N, 3)`` RGB colours in [0, 1] on a
    3D axis, equal aspect, no axes."""
    ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=colors, s=size, linewidths=0, depthshade=False)
    lo, hi = pts.min(0), pts.max(0)
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2 or 1.0
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_zlim(centre[2] - half, centre[2] + half)
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=VIEW_ELEVATION, azim=VIEW_AZIMUTH)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def render_segmentation_png(
    points: np.ndarray,
    labels: np.ndarray,
    part_names: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    true_labels: np.ndarray | None = None,
    up_axis: str = "y",
    point_size: float = 4.0,
    dpi: int = 110,
) -> Path:
    """Save a PNG of ``(N, 3)`` points coloured by ``(N,)`` labels, with a legend of part names.

    With ``true_labels`` the picture shows prediction and ground truth side by side.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    points = np.asarray(points, dtype=np.float64)
    pts = plot_frame(points, up_axis)
    panels = [("predicted" if true_labels is not None else None, np.asarray(labels))]
    if true_labels is not None:
        panels.append(("ground truth", np.asarray(true_labels)))
    fig = plt.figure(figsize=(4.2 * len(panels) + 1.6, 4.4))
    for i, (sub, lab) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1, projection="3d")
        _draw(ax, pts, lab, part_names, sub, point_size)
    colors = part_colors(len(part_names))
    fig.legend(handles=[Patch(color=colors[k], label=n) for k, n in enumerate(part_names)], loc="center right",
               fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.0, right=0.82 if len(panels) == 1 else 0.88, bottom=0.0, top=0.9, wspace=0.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
