"""Data engine: meshes -> normalised points, back-projected 2D-teacher features and part labels -> store.

One mesh, interactively::

    from data_engine import process_mesh, load_config
    record = process_mesh("chair.glb", load_config("patchalign3d/configs/data/demo.yaml"))

A collection, on one CPU or many GPUs and nodes (LitData workers), then published from its records and
verified (:mod:`.publish`, :mod:`.verify`)::

    python -m data_engine precompute -c configs/data/objaverse.yaml
    python -m data_engine publish outputs/stores/objaverse      # (the last node does it already)
    python -m data_engine verify outputs/stores/objaverse
"""

from .backproject import BackprojectConfig, BackprojectError
from .cameras import CameraConfig, CameraRig, make_rig
from .config import DataEngineConfig, InputConfig, SplitConfig, load_config
from .discovery import ShapeTask, discover
from .labels import LabelConfig, PartLabels
from .mesh import MeshConfig, MeshError, load_mesh, normalize_mesh, sample_surface
from .pipeline import EngineError, plan, precompute
from .process import StageTimer, process_mesh
from .render import PyrenderRenderer, RaycastRenderer, RenderConfig, RenderOutput, make_renderer
from .store import SCHEMA_VERSION, decode_record, open_split, read_store_info
from .teachers import Teacher, TeacherConfig, TeacherLoadError

__all__ = [
    "SCHEMA_VERSION",
    "BackprojectConfig",
    "BackprojectError",
    "CameraConfig",
    "CameraRig",
    "DataEngineConfig",
    "EngineError",
    "InputConfig",
    "LabelConfig",
    "MeshConfig",
    "MeshError",
    "PartLabels",
    "PyrenderRenderer",
    "RaycastRenderer",
    "RenderConfig",
    "RenderOutput",
    "ShapeTask",
    "SplitConfig",
    "StageTimer",
    "Teacher",
    "TeacherConfig",
    "TeacherLoadError",
    "decode_record",
    "discover",
    "load_config",
    "load_mesh",
    "make_renderer",
    "make_rig",
    "normalize_mesh",
    "open_split",
    "plan",
    "precompute",
    "process_mesh",
    "read_store_info",
    "sample_surface",
]
