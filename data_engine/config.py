"""Settings of the data engine: which meshes, where the store goes, and every stage's options.

``configs/data/*.yaml`` files fill :class:`DataEngineConfig` through :func:`load_config` (omegaconf, with
dotted ``key=value`` overrides).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .backproject import BackprojectConfig
from .cameras import CameraConfig, rig_angles
from .labels import LabelConfig
from .mesh import MeshConfig
from .render import RenderConfig
from .store import SCHEMA_VERSION
from .teachers import TeacherConfig

MESH_PATTERNS = ["**/*.glb", "**/*.gltf", "**/*.obj", "**/*.ply", "**/*.off", "**/*.stl"]


@dataclass
class InputConfig:
    """Which meshes to process.

    Attributes:
        paths: folders (searched with ``patterns``), mesh files, glob patterns, or ``.txt`` list files
            (one mesh path per line, relative to the list file).
        patterns: globs used inside folders.
        uid: ``relpath`` (path below its folder without suffix: ``03001627/<id>/models/model_normalized``)
            or ``stem`` (file name without suffix, e.g. Objaverse's uid). A sidecar's ``uid`` wins.
        category_level: which folder below the input folder names the category (0 = the first), or
            ``None`` for none. A sidecar's ``category`` wins.
    """

    paths: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=lambda: list(MESH_PATTERNS))
    uid: str = "relpath"
    category_level: int | None = None


@dataclass
class SplitConfig:
    """Train/val split: explicit uid lists, or a stable hash of each uid.

    Attributes:
        val_fraction: share of uids in ``val`` when no list files are given.
        seed: salt of the hash.
        train_file, val_file: uid lists; with either, uids in neither are left out.
    """

    val_fraction: float = 0.05
    seed: int = 0
    train_file: str | None = None
    val_file: str | None = None


@dataclass
class CheckConfig:
    """Checks of each shape's quality.

    Attributes:
        max_point_distance: given points (Find3D's ``points.pt``, a sidecar's ``points``) must lie on the
            mesh as this engine normalises it: a shape fails when the 95th percentile of their distance to
            the surface exceeds this (normalised units; Find3D's box half-extent is 0.75). ``null`` skips it.
        min_seen_fraction: shapes whose share of points seen by at least one view is below this are listed
            under ``warnings`` in ``report.json`` (their other points only get nearest-neighbour features).
    """

    max_point_distance: float | None = 0.01
    min_seen_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.max_point_distance is not None and not self.max_point_distance > 0:
            raise ValueError(f"checks.max_point_distance must be positive or null, got {self.max_point_distance}")
        if not 0.0 <= self.min_seen_fraction <= 1.0:
            raise ValueError(f"checks.min_seen_fraction must be in [0, 1], got {self.min_seen_fraction}")


@dataclass
class DataEngineConfig:
    """Everything the data engine needs; YAML files under ``configs/data`` fill it (``load_config``).

    Attributes:
        output: the store folder.
        num_workers: LitData workers; 0 means one per GPU, or one on a CPU machine.
        threads_per_worker: torch CPU threads per worker (0: cores divided among workers).
        chunk_bytes: LitData chunk size.
        write_order_seed: seed of the shuffled order records are written in (``null``: uid order). LitData's
            reader shuffles chunk order and items within a chunk only, so records written in uid order (which
            groups categories) would make batches of one or two categories.
        start_method: multiprocessing start method for LitData workers (``spawn`` when unset; ``fork`` is
            quicker to start on CPU-only machines).
    """

    input: InputConfig = field(default_factory=InputConfig)
    output: str = "outputs/store"
    mesh: MeshConfig = field(default_factory=MeshConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    backproject: BackprojectConfig = field(default_factory=BackprojectConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    checks: CheckConfig = field(default_factory=CheckConfig)
    num_workers: int = 0
    threads_per_worker: int = 0
    chunk_bytes: str = "64MB"
    write_order_seed: int | None = 0
    start_method: str | None = None


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> DataEngineConfig:
    """A ``DataEngineConfig`` from a YAML file and ``key=value`` overrides (``teacher.pretrained=false``)."""
    from omegaconf import OmegaConf

    schema = OmegaConf.structured(DataEngineConfig)
    parts = [schema]
    if path is not None:
        parts.append(OmegaConf.load(path))
    parts.append(OmegaConf.from_dotlist(list(overrides)))
    return OmegaConf.to_object(OmegaConf.merge(*parts))


def records_fingerprint(config: DataEngineConfig) -> dict[str, Any]:
    """The settings a record depends on (not where or how fast it is computed)."""
    _, azimuths = rig_angles(config.camera)
    teacher = dataclasses.asdict(config.teacher)
    for key in ("device", "batch_size"):
        teacher.pop(key)
    return {
        "schema_version": SCHEMA_VERSION,
        "mesh": dataclasses.asdict(config.mesh),
        # The angles themselves: the same settings meant other views before the Find3D rig was corrected.
        "camera": {**dataclasses.asdict(config.camera), "azimuths": azimuths.tolist()},
        "render": dataclasses.asdict(config.render),
        "teacher": teacher,
        "backproject": dataclasses.asdict(config.backproject),
        "labels": dataclasses.asdict(config.labels),
    }
