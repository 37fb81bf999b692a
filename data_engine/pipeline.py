"""The data engine end to end: one mesh (``process_mesh``) or a whole collection (``precompute``).

``precompute`` finds the meshes, gives each a uid and a split, and runs ``litdata.optimize`` once per
split. Each LitData worker (one GPU each when there are GPUs; several nodes via LitData's
``DATA_OPTIMIZER_NUM_NODES`` / ``DATA_OPTIMIZER_NODE_RANK``) processes shapes with ``ShapeWorker``, which
stages every finished record atomically before handing it to LitData. A killed run therefore loses only
the shapes in flight and the hidden, half-built chunk folder; rerunning reuses every staged record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from .backproject import BackprojectConfig, backproject, point_visibility, resolve_visibility
from .cameras import CameraConfig, CameraRig, make_rig
from .labels import (
    LabelConfig,
    PartLabels,
    ShapeAnnotation,
    from_face_labels,
    from_point_labels,
    has_find3d_files,
    read_find3d,
    read_sidecar,
    sidecar_path,
)
from .mesh import MeshConfig, check_mesh, load_mesh, normalize_mesh, sample_surface, shape_seed
from .render import RenderConfig, Renderer, make_renderer
from .store import (
    REPORT,
    SCHEMA_VERSION,
    SPLITS,
    STAGING,
    STORE_INFO,
    Staging,
    assign_split,
    atomic_write_json,
    building_dir,
    make_record,
    optimize_split,
    publish_split,
    read_uid_list,
    write_uid_list,
)
from .teachers import Teacher, TeacherConfig


class EngineError(RuntimeError):
    """A run-wide failure (the teacher cannot load, the renderer cannot start, ...)."""


MESH_PATTERNS = ["**/*.glb", "**/*.gltf", "**/*.obj", "**/*.ply", "**/*.off", "**/*.stl"]


# ------------------------------------------------------------------------------------------- config
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
class DataEngineConfig:
    """Everything the data engine needs; YAML files under ``configs/data`` fill it (``load_config``).

    Attributes:
        output: the store folder.
        num_workers: LitData workers; 0 means one per GPU, or one on a CPU machine.
        threads_per_worker: torch CPU threads per worker (0: cores divided among workers).
        chunk_bytes: LitData chunk size.
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
    num_workers: int = 0
    threads_per_worker: int = 0
    chunk_bytes: str = "64MB"
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
    teacher = dataclasses.asdict(config.teacher)
    for key in ("device", "batch_size"):
        teacher.pop(key)
    return {
        "schema_version": SCHEMA_VERSION,
        "mesh": dataclasses.asdict(config.mesh),
        "camera": dataclasses.asdict(config.camera),
        "render": dataclasses.asdict(config.render),
        "teacher": teacher,
        "backproject": dataclasses.asdict(config.backproject),
        "labels": dataclasses.asdict(config.labels),
    }


# --------------------------------------------------------------------------------------- one shape
class StageTimer:
    """Wall time per named stage, accumulated (``timer("render")`` is a context manager)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            _cuda_sync()  # GPU work is asynchronous; charge it to the stage that queued it
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def _cuda_sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@dataclass
class ShapePoints:
    """The points a record is made of: ``points`` ``(N, 3)`` normalised, their ``faces`` ``(N,)`` or
    ``None`` (given points), and the ``labels`` over them."""

    points: np.ndarray
    faces: np.ndarray | None
    labels: PartLabels
    label_source: str


def find_sidecar(path: str | os.PathLike | None, config: LabelConfig) -> ShapeAnnotation | None:
    """The ``<stem>.parts.json`` annotation next to ``path``, when there is one and sidecars are on."""
    if path is None or not config.sidecar or not sidecar_path(path).is_file():
        return None
    return read_sidecar(sidecar_path(path))


def find_find3d_dir(uid: str, config: LabelConfig) -> Path | None:
    """``<find3d_root>/<uid>`` when it holds Find3D's three per-object files."""
    if not config.find3d_root:
        return None
    folder = Path(config.find3d_root) / uid
    return folder if has_find3d_files(folder) else None


def shape_points(
    mesh: trimesh.Trimesh,
    transform: np.ndarray,
    uid: str,
    config: DataEngineConfig,
    annotation: ShapeAnnotation | None,
    find3d_dir: Path | None,
) -> ShapePoints:
    """Choose the shape's points and labels: Find3D's points, a sidecar's labelled points, or surface samples.

    ``mesh`` is already normalised; ``transform`` took the file's coordinates there (sidecar points are
    in file coordinates, Find3D points are already normalised).
    """
    drop = config.labels.drop
    if find3d_dir is not None:
        points, labels = read_find3d(find3d_dir, drop)
        return ShapePoints(points, None, labels, "find3d")
    if annotation is not None and annotation.point_labels is not None:
        points = trimesh.transform_points(annotation.points, transform).astype(np.float32)
        return ShapePoints(
            points, None, from_point_labels(annotation.point_labels, annotation.part_names, drop), "points"
        )
    points, faces = sample_surface(mesh, config.mesh.num_points, seed=shape_seed(config.mesh.seed, uid))
    if annotation is not None and annotation.face_labels is not None:
        if len(annotation.face_labels) != len(mesh.faces):
            raise ValueError(
                f"the sidecar labels {len(annotation.face_labels)} faces, the mesh has {len(mesh.faces)}"
            )
        return ShapePoints(
            points,
            faces,
            from_face_labels(annotation.face_labels, annotation.part_names, faces, drop),
            "faces",
        )
    return ShapePoints(points, faces, PartLabels.empty(len(points)), "none")


def process_mesh(
    mesh_or_path: trimesh.Trimesh | str | os.PathLike,
    config: DataEngineConfig | None = None,
    *,
    uid: str | None = None,
    category: str | None = None,
    annotation: ShapeAnnotation | None = None,
    teacher: Teacher | None = None,
    renderer: Renderer | None = None,
    rig: CameraRig | None = None,
    timer: StageTimer | None = None,
) -> dict[str, Any]:
    """Turn one mesh into its store record (points, back-projected teacher features, part labels).

    Args:
        mesh_or_path: a mesh file (GLB, OBJ, PLY, OFF, ...) or a ``trimesh.Trimesh``.
        config: settings (defaults: Find3D settings with the pretrained DINOv2-base teacher).
        uid: record uid (default: the sidecar's, else the file stem, else ``"mesh"``).
        category: category (default: the sidecar's, else ``""``).
        annotation: labels to use instead of looking for a ``<stem>.parts.json`` sidecar.
        teacher, renderer, rig: reuse across calls (built from ``config`` when omitted).
        timer: collects per-stage wall time (load, sample, render, teacher, backproject, write).

    Returns:
        The store item: ``uid``, ``category``, ``points`` (N, 3) float32, ``features`` (N, D) float16,
        ``part_names`` (JSON list), ``part_masks`` (K, N) uint8, ``meta`` (JSON dict).

    Raises:
        MeshError: the mesh is empty, corrupt, not a mesh, or degenerate.
    """
    config = config or DataEngineConfig()
    timer = timer or StageTimer()
    teacher = teacher or Teacher(config.teacher)
    renderer = renderer or make_renderer(config.render)
    rig = rig or make_rig(config.camera)
    path = None if isinstance(mesh_or_path, trimesh.Trimesh) else Path(mesh_or_path)
    with timer("load"):
        if path is None:
            mesh = mesh_or_path
            check_mesh(mesh)
        else:
            mesh = load_mesh(path)
        annotation = annotation or find_sidecar(path, config.labels)
        uid = (
            uid
            or (annotation.uid if annotation and annotation.uid else None)
            or (path.stem if path else "mesh")
        )
        category = category if category is not None else (annotation.category if annotation else "")
        find3d_dir = find_find3d_dir(uid, config.labels)
    with timer("sample"):
        mesh, transform = normalize_mesh(mesh, config.mesh)
        shape = shape_points(mesh, transform, uid, config, annotation, find3d_dir)
    with timer("render"):
        views = renderer.render(mesh, rig)
    with timer("teacher"):
        grids = teacher.patch_features(views.rgb)
    with timer("backproject"):
        uv, visible = point_visibility(rig, views, shape.points, shape.faces, config.backproject)
        features, view_counts = backproject(
            grids, uv, visible, shape.points, rig.resolution, config.backproject
        )
    with timer("write"):
        meta = {
            "teacher": teacher.name,
            "pretrained": teacher.pretrained,
            "views": rig.num_views,
            "resolution": rig.resolution,
            "img_size": teacher.config.img_size,
            "feature_dim": int(features.shape[1]),
            "num_points": len(shape.points),
            "render_backend": config.render.backend,
            "visibility": resolve_visibility(config.backproject.visibility, shape.faces is not None),
            "seen_fraction": float((view_counts > 0).mean()),
            "label_source": shape.label_source,
            "source": str(path) if path is not None else "",
        }
        record = make_record(
            uid, category, shape.points, features, shape.labels.names, shape.labels.masks, meta
        )
    return record


# -------------------------------------------------------------------------------------- collection
@dataclass(frozen=True)
class ShapeTask:
    """One mesh to process: its ``uid``, file ``path`` and ``category``."""

    uid: str
    path: str
    category: str = ""


def _expand(entry: str, patterns: Sequence[str]) -> tuple[Path, list[Path]]:
    """A config input entry as ``(root, files)``; ``root`` is what uids are relative to."""
    path = Path(entry)
    if path.is_dir():
        files = {Path(f) for pattern in patterns for f in glob.glob(str(path / pattern), recursive=True)}
        return path, sorted(f for f in files if f.is_file())
    if path.suffix.lower() == ".txt" and path.is_file():
        lines = read_uid_list(path)
        return path.parent, [p if p.is_absolute() else path.parent / p for p in map(Path, lines)]
    if path.is_file():
        return path.parent, [path]
    if glob.has_magic(entry):
        fixed = list(_leading_literal_parts(path))
        root = Path(*fixed) if fixed else Path(".")
        return root, sorted(Path(f) for f in glob.glob(entry, recursive=True) if Path(f).is_file())
    raise FileNotFoundError(
        f"input {entry!r} is neither a folder, a file, a list file nor a glob that matches"
    )


def _leading_literal_parts(path: Path) -> Iterator[str]:
    """The parts of a glob pattern before the first one with a wildcard."""
    for part in path.parts:
        if glob.has_magic(part):
            return
        yield part


def _task_for(file: Path, root: Path, config: InputConfig) -> ShapeTask:
    try:
        rel = file.relative_to(root)
    except ValueError:  # a list file may name meshes elsewhere
        rel = Path(file.name)
    uid = str(rel.with_suffix("").as_posix()) if config.uid == "relpath" else file.stem
    category = ""
    if config.category_level is not None and len(rel.parts) > config.category_level + 1:
        category = rel.parts[config.category_level]
    if sidecar_path(file).is_file():  # synthetic shapes carry their uid and category
        with contextlib.suppress(Exception):
            ann = read_sidecar(sidecar_path(file))
            uid, category = ann.uid or uid, ann.category or category
    return ShapeTask(uid=uid, path=str(file), category=category)


def discover(config: InputConfig) -> tuple[list[ShapeTask], list[dict[str, str]]]:
    """All meshes named by ``config``, sorted by uid, and problems found on the way.

    Returns:
        ``tasks`` (unique uids, sorted) and ``problems`` (``{"uid", "path", "reason"}``: missing files,
        duplicate uids). Unreadable files are found later, shape by shape.
    """
    if config.uid not in ("relpath", "stem"):
        raise ValueError(f"input.uid must be 'relpath' or 'stem', got {config.uid!r}")
    by_uid: dict[str, ShapeTask] = {}
    problems: list[dict[str, str]] = []
    for entry in config.paths:
        root, files = _expand(entry, config.patterns)
        for file in files:
            if not file.is_file():
                problems.append({"uid": file.stem, "path": str(file), "reason": "file not found"})
                continue
            task = _task_for(file, root, config)
            if task.uid in by_uid:
                reason = f"duplicate uid (also {by_uid[task.uid].path})"
                problems.append({"uid": task.uid, "path": task.path, "reason": reason})
                continue
            by_uid[task.uid] = task
    return [by_uid[u] for u in sorted(by_uid)], problems


def split_tasks(tasks: Sequence[ShapeTask], config: SplitConfig) -> dict[str, list[ShapeTask]]:
    """Tasks per split, each list in uid order."""
    if config.train_file or config.val_file:
        train = set(read_uid_list(config.train_file)) if config.train_file else set()
        val = set(read_uid_list(config.val_file)) if config.val_file else set()
        return {"train": [t for t in tasks if t.uid in train], "val": [t for t in tasks if t.uid in val]}
    out: dict[str, list[ShapeTask]] = {s: [] for s in SPLITS}
    for task in tasks:
        out[assign_split(task.uid, config.val_fraction, config.seed)].append(task)
    return out


def worker_device() -> str:
    """This LitData worker's device: GPU ``global rank % GPUs`` when there are GPUs, else CPU."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    # LitData numbers its workers across nodes in this variable; it is set before `fn` first runs.
    rank = int(os.environ.get("DATA_OPTIMIZER_GLOBAL_RANK", "0"))
    return f"cuda:{rank % torch.cuda.device_count()}"


class ShapeWorker:
    """The function LitData runs per shape: staged record if there is one, else compute and stage it.

    Picklable; the teacher and renderer are built lazily inside the worker process.

    Args:
        config: engine settings.
        staging_root: the staging folder.
        threads: torch CPU threads for this worker (0 leaves torch's default).
    """

    def __init__(self, config: DataEngineConfig, staging_root: str | os.PathLike, threads: int = 0) -> None:
        self.config = config
        self.staging_root = str(staging_root)
        self.threads = threads
        self._teacher: Teacher | None = None
        self._renderer: Renderer | None = None
        self._rig: CameraRig | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_teacher": None, "_renderer": None, "_rig": None}

    def _setup(self) -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        device = worker_device() if self.config.teacher.device == "auto" else self.config.teacher.device
        if device.startswith("cuda"):
            index = torch.device(device).index or 0
            torch.cuda.set_device(index)
            os.environ.setdefault("EGL_DEVICE_ID", str(index))  # pyrender renders on the same GPU
        self._teacher = Teacher(self.config.teacher, device=device)
        self._renderer = make_renderer(self.config.render)
        self._rig = make_rig(self.config.camera)

    def __call__(self, task: ShapeTask) -> Iterator[dict[str, Any]]:
        staging = Staging(self.staging_root)
        if staging.has_record(task.uid):
            yield staging.read_record(task.uid)
            return
        if staging.has_failure(task.uid) or staging.fatal() is not None:
            return
        if self._teacher is None:
            try:
                self._setup()
            except Exception as err:  # noqa: BLE001 - every shape would fail the same way: stop the run
                # Raising here would leave LitData's parent waiting forever; the parent raises this instead.
                staging.write_fatal(f"{type(err).__name__}: {err}")
                return
        try:
            record = process_mesh(
                task.path, self.config, uid=task.uid, category=task.category,
                teacher=self._teacher, renderer=self._renderer, rig=self._rig,
            )  # fmt: skip
        except Exception as err:  # noqa: BLE001 - one bad shape must never stop the run
            staging.write_failure(task.uid, task.path, f"{type(err).__name__}: {err}")
            return
        staging.write_record(record)
        yield record


@contextlib.contextmanager
def _progress(staging: Staging, total: int, done: int, enabled: bool) -> Iterator[None]:
    """A tqdm bar (shapes/s, ETA) fed by counting staged files, which every worker and node writes."""
    if not enabled or total == 0:
        yield
        return
    from tqdm.auto import tqdm

    baseline = staging.count_done()
    stop = threading.Event()
    with tqdm(total=total, initial=done, unit="shape", desc="shapes", dynamic_ncols=True) as bar:

        def poll() -> None:
            while not stop.wait(1.0):
                bar.n = min(total, done + staging.count_done() - baseline)
                bar.refresh()

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            bar.n = min(total, done + staging.count_done() - baseline)
            bar.refresh()


def _node_rank() -> int:
    return int(os.environ.get("DATA_OPTIMIZER_NODE_RANK", "0"))


def _default_workers(config: DataEngineConfig) -> int:
    import torch

    if config.num_workers > 0:
        return config.num_workers
    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def plan(config: DataEngineConfig, limit: int | None = None) -> dict[str, Any]:
    """What a run would do: tasks per split and how many are already staged, failed, or pending."""
    tasks, problems = discover(config.input)
    tasks = tasks[:limit] if limit is not None else tasks
    staging = Staging(Path(config.output) / STAGING)
    splits = split_tasks(tasks, config.split)
    counts = {
        split: {
            "shapes": len(ts),
            "staged": sum(staging.has_record(t.uid) for t in ts),
            "failed": sum(staging.has_failure(t.uid) for t in ts),
        }
        for split, ts in splits.items()
    }
    for c in counts.values():
        c["pending"] = c["shapes"] - c["staged"] - c["failed"]
    return {"tasks": tasks, "splits": splits, "problems": problems, "counts": counts}


def precompute(
    config: DataEngineConfig,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    retry_failed: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build (or finish) the store of ``config``.

    Args:
        config: settings.
        limit: only the first ``limit`` shapes in uid order.
        dry_run: report the plan, write nothing.
        retry_failed: process shapes that failed in earlier runs again.
        overwrite: delete the output folder first.
        progress: show a progress bar.

    Returns:
        A summary: ``counts`` per split (before the run), ``written`` uids per split, ``failed`` notes.
    """
    out = Path(config.output)
    if overwrite and not dry_run and out.exists():
        shutil.rmtree(out)
    work = plan(config, limit)
    if dry_run:
        return {"counts": work["counts"], "problems": work["problems"], "written": {}, "failed": []}
    staging = Staging(out / STAGING)
    staging.bind_config(records_fingerprint(config))
    staging.clear_fatal()
    if retry_failed:
        staging.clear_failures()
    workers = _default_workers(config)
    threads = config.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    worker = ShapeWorker(config, staging.root, threads)
    tasks, splits = work["tasks"], work["splits"]
    done = sum(staging.has_record(t.uid) or staging.has_failure(t.uid) for t in tasks)
    publish = _node_rank() == 0
    with _progress(staging, len(tasks), done, progress and publish):
        for split in SPLITS:
            if splits[split]:
                optimize_split(
                    worker, splits[split], out / split, num_workers=workers, chunk_bytes=config.chunk_bytes,
                    start_method=config.start_method,
                )  # fmt: skip
                if staging.fatal() is not None:  # keep what was published before; drop the half-run
                    shutil.rmtree(building_dir(out / split), ignore_errors=True)
                    raise EngineError(f"the run stopped: {staging.fatal()}")
                if publish:
                    publish_split(out / split)
            elif publish:
                shutil.rmtree(out / split, ignore_errors=True)
    written = {s: [t.uid for t in splits[s] if staging.has_record(t.uid)] for s in SPLITS}
    failed = work["problems"] + staging.failures([t.uid for t in tasks])
    if publish:
        _write_summary_files(out, config, staging, written, failed)
    return {"counts": work["counts"], "problems": work["problems"], "written": written, "failed": failed}


def _write_summary_files(
    out: Path, config: DataEngineConfig, staging: Staging, written: dict[str, list[str]], failed: list[dict]
) -> None:
    """Split lists, report and store info, each written atomically."""
    for split in SPLITS:
        write_uid_list(out / f"{split}.txt", written[split])
    atomic_write_json(out / REPORT, {"failed": failed, "done": sum(len(u) for u in written.values())})
    uids = [u for s in SPLITS for u in written[s]]
    feature_dim = int(staging.read_field(uids[0], "features").shape[1]) if uids else None
    vocabulary = sorted({name for u in uids for name in json.loads(staging.read_field(u, "part_names"))})
    info = {
        "schema_version": SCHEMA_VERSION,
        "feature_dim": feature_dim,
        "teacher": config.teacher.name,
        "pretrained": bool(config.teacher.pretrained),
        "views": config.camera.num_views,
        "resolution": config.camera.resolution,
        "num_points": config.mesh.num_points,
        "img_size": config.teacher.img_size,
        "render_backend": config.render.backend,
        "part_names": vocabulary,
        "splits": {s: len(written[s]) for s in SPLITS},
        "config": records_fingerprint(config),
    }
    atomic_write_json(out / STORE_INFO, info)
