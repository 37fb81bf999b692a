"""What a keypoint detector returns, and its JSON and PNG forms."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from patchalign3d.viz import draw_cloud, part_colors, plot_frame


@dataclass
class Keypoints:
    """Named keypoints of one shape. Arrays are numpy.

    Attributes:
        names: the K names asked for.
        points: ``(N, 3)`` the cloud the indices refer to: the input cloud, or the points sampled on a mesh.
        field: ``(N, K)`` score of every point for every name (higher is more likely).
        indices: ``(M,)`` int64 keypoints as indices into ``points`` (a name may have several).
        labels: ``(M,)`` int64 index into ``names`` of each keypoint.
        scores: ``(M,)`` the field's value at each keypoint.
        mode: ``zero_shot``, ``few_shot`` or ``lift``.
        positions: ``(M, 3)`` where each keypoint is; ``points[indices]`` except for lifting, which finds
            positions off the sampled points (``indices`` are then their nearest points).
        absent: the names the detector found not there (no keypoint by decision, not for want of a peak).
        info: anything the detector wants to report (timings, parameters).
    """

    names: list[str]
    points: np.ndarray
    field: np.ndarray
    indices: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    mode: str
    positions: np.ndarray | None = None
    absent: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.positions is None:
            self.positions = np.asarray(self.points)[self.indices].astype(np.float32)

    def __len__(self) -> int:
        return len(self.indices)

    def of(self, name: str) -> np.ndarray:
        """Indices of the keypoints named ``name``, best first."""
        if name not in self.names:
            raise KeyError(f"{name!r} was not asked for; names: {self.names}")
        return self.indices[self.labels == self.names.index(name)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"mode", "names", "num_points", "keypoints": [{"name", "index", "position", "score"}],
        "absent", "info"}``."""
        return {
            "mode": self.mode,
            "names": list(self.names),
            "num_points": int(len(self.points)),
            "keypoints": [
                {"name": self.names[int(k)], "index": int(i), "position": np.round(p, 6).tolist(), "score": float(s)}
                for i, k, p, s in zip(self.indices, self.labels, self.positions, self.scores)
            ],
            "absent": list(self.absent),
            "info": self.info,
        }

    def save_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    def to_png(self, path: str | os.PathLike, *, title: str | None = None, up_axis: str = "y") -> Path:
        """The shape in grey with each keypoint marked in its name's colour and labelled."""
        return render_keypoints_png(self.points, self.positions, [self.names[k] for k in self.labels], path,
                                    names=self.names, title=title, up_axis=up_axis)


def render_keypoints_png(
    points: np.ndarray,
    keypoints: np.ndarray,
    keypoint_names: list[str],
    path: str | os.PathLike,
    *,
    names: list[str] | None = None,
    title: str | None = None,
    up_axis: str = "y",
    dpi: int = 110,
) -> Path:
    """Save a PNG: ``(N, 3)`` points in grey, ``(M, 3)`` keypoints as coloured markers with their names."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(names or keypoint_names))
    colors = part_colors(len(names))

    pts, kps = plot_frame(points, up_axis), plot_frame(keypoints, up_axis)
    fig = plt.figure(figsize=(6.0, 5.2))
    ax = fig.add_subplot(1, 1, 1, projection="3d")
    ax.computed_zorder = False  # the markers stay on top of the cloud instead of being sorted into it by depth
    draw_cloud(ax, pts, np.full((len(pts), 3), 0.72), title, size=2.0)
    for p, n in zip(kps, keypoint_names):
        c = colors[names.index(n)]
        ax.scatter([p[0]], [p[1]], [p[2]], c=[c], s=70, edgecolors="black", linewidths=0.8, depthshade=False, zorder=2)
        ax.text(p[0], p[1], p[2], f" {n}", fontsize=7, color=c * 0.7, zorder=3)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=0.94)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
