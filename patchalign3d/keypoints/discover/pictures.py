"""The picture that shows whether unsupervised keypoints mean anything: the same K keypoints, each in its
own colour, on several shapes of a category side by side."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def consistency_png(
    shapes: Sequence[tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    labels: Sequence[str] | None = None,
    up_axis: str = "y",
    dpi: int = 100,
) -> Path:
    """Save a row of shapes, grey points with keypoint slot ``i`` in colour ``i`` on every one.

    Args:
        shapes: ``[(points (N, 3), keypoints (K, 3)), ...]``, the same K and slot order on every shape.
        labels: a caption per shape (its uid).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from patchalign3d.viz import draw_cloud, part_colors

    if not shapes:
        raise ValueError("consistency_png needs at least one shape")
    k = len(shapes[0][1])
    colors = part_colors(k)

    def view(x: np.ndarray) -> np.ndarray:  # matplotlib's 3D axes are z-up
        x = np.asarray(x, dtype=np.float64).reshape(-1, 3)
        return x[:, [0, 2, 1]] if up_axis == "y" else x

    fig = plt.figure(figsize=(3.2 * len(shapes), 3.6))
    for i, (points, keypoints) in enumerate(shapes):
        ax = fig.add_subplot(1, len(shapes), i + 1, projection="3d")
        pts, kps = view(points), view(keypoints)
        draw_cloud(ax, pts, np.full((len(pts), 3), 0.75), title=labels[i] if labels is not None else None, size=1.5)
        ax.scatter(kps[:, 0], kps[:, 1], kps[:, 2], c=colors[: len(kps)], s=60, edgecolors="black", linewidths=0.7,
                   depthshade=False)
    handles = [plt.Line2D([], [], marker="o", ls="", color=colors[j], markeredgecolor="black", label=f"kp{j}")
               for j in range(k)]
    fig.legend(handles=handles, loc="lower center", ncol=min(k, 10), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0, right=1, bottom=0.1, top=0.88, wspace=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
