"""The functions LitData's workers run: per shape, compute and stage its record (one GPU each); per uid, read a
staged record back for the store."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import faults
from .cameras import CameraRig, make_rig
from .config import DataEngineConfig
from .discovery import ShapeTask
from .process import process_mesh
from .render import Renderer, make_renderer
from .store import Staging, atomic_write_json, uid_to_filename
from .teachers import Teacher


def worker_device() -> str:
    """This LitData worker's device: GPU ``global rank % GPUs`` when there are GPUs, else CPU."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    # LitData numbers its workers in this variable before `fn` first runs; each node runs LitData on its own
    # share (see litdata_jobs.run_map), so this is the worker's index on this node.
    rank = int(os.environ.get("DATA_OPTIMIZER_GLOBAL_RANK", "0"))
    return f"cuda:{rank % torch.cuda.device_count()}"


class ShapeWorker:
    """The function ``litdata.map`` runs per shape: nothing if it is staged already, else compute and stage it.

    A shape ends with a staged record or a failure note (or, for a run-wide failure, a fatal note for the
    node); records already staged are never rewritten.

    Picklable; the teacher and renderer are built lazily inside the worker process.

    Args:
        config: engine settings.
        staging_root: the staging folder.
        threads: torch CPU threads for this worker (0 leaves torch's default).
        node: this node's rank (run-wide failures are noted per node).
    """

    def __init__(
        self, config: DataEngineConfig, staging_root: str | os.PathLike, threads: int = 0, node: int = 0
    ) -> None:
        self.config = config
        self.staging_root = str(staging_root)
        self.threads = threads
        self.node = node
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

    def __call__(self, task: ShapeTask, output_dir: str) -> None:
        # LitData makes an empty scratch folder per input for map functions and keeps it; nothing goes there.
        with contextlib.suppress(OSError):
            os.rmdir(output_dir)
        staging = Staging(self.staging_root)
        if staging.has_record(task.uid) or staging.has_failure(task.uid) or staging.fatal(self.node) is not None:
            return
        if self._teacher is None:
            try:
                self._setup()
            except Exception as err:
                # Raising here would leave LitData's parent waiting forever; the parent raises this instead.
                staging.write_fatal(f"{type(err).__name__}: {err}", self.node)
                return
        try:
            record = process_mesh(
                task.path, self.config, uid=task.uid, category=task.category,
                teacher=self._teacher, renderer=self._renderer, rig=self._rig,
            )  # fmt: skip
        except ImportError as err:  # a missing package fails every shape the same way: stop the run
            staging.write_fatal(f"{type(err).__name__}: {err}", self.node)
            return
        except Exception as err:
            staging.write_failure(task.uid, task.path, f"{type(err).__name__}: {err}")
            return
        staging.write_record(record)
        faults.reached("record-written")


class StagedRecords:
    """The function ``litdata.optimize`` runs per uid when a store is built: the staged record, as it is.

    A record that cannot be read yields nothing (raising would hang LitData's parent); its uid is noted in
    ``<problems_dir>/<uid>`` so that verification names it.
    """

    def __init__(self, staging_root: str | os.PathLike, problems_dir: str | os.PathLike) -> None:
        self.staging_root = str(staging_root)
        self.problems_dir = str(problems_dir)

    def __call__(self, uid: str) -> Iterator[dict[str, Any]]:
        staging = Staging(self.staging_root)
        try:
            record = staging.read_record(uid)
        except Exception as err:
            note = {"uid": uid, "reason": f"{type(err).__name__}: {err}"}
            atomic_write_json(Path(self.problems_dir) / f"{uid_to_filename(uid)}.json", note)
            return
        yield record
