"""Benchmark datasets (ShapeNetPart, FAUST, Find3D's Objaverse benchmark, PartNet-Mobility, PartNetE, ScanObjectNN).

Every loader yields :class:`PartShape` items (``labels`` index ``part_names``, ``-1`` = unlabelled);
:func:`build_dataset` opens one by benchmark name. Generic point/mesh reading lives in
:mod:`patchalign3d.data.io`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from patchalign3d.data.base import (
    DatasetFormatError,
    Find3DKey,
    PartDataset,
    PartShape,
    ShapeRecord,
    read_pcd,
)
from patchalign3d.data.faust import FAUST
from patchalign3d.data.labelled_meshes import LabelledMeshes
from patchalign3d.data.objaverse_bench import ObjaverseBench
from patchalign3d.data.partnet import PartNetMobility
from patchalign3d.data.partnete import PartNetE
from patchalign3d.data.scanobjectnn import ScanObjectNN
from patchalign3d.data.shapenetpart import (
    SHAPENETPART_PARTS,
    ShapeNetPart,
    ShapeNetPartH5,
    load_shapenetpart,
)

#: Benchmark name -> factory ``(root, **options) -> PartDataset``.
DATASETS: dict[str, Callable[..., PartDataset]] = {
    "shapenetpart": load_shapenetpart,
    "shapenetpart-h5": ShapeNetPartH5,
    "faust": FAUST,
    "objaverse": ObjaverseBench,
    "partnet": PartNetMobility,
    "partnete": PartNetE,
    "scanobjectnn": ScanObjectNN,
    "labelled-meshes": LabelledMeshes,
}


def dataset_options(name: str) -> list[str]:
    """The options the loader of benchmark ``name`` accepts (besides ``root``)."""
    factory = DATASETS[name.lower()]
    if factory is load_shapenetpart:  # opens either release: the options of both
        return sorted(set(_own_options(ShapeNetPart.__init__)) | set(_own_options(ShapeNetPartH5.__init__)))
    return _own_options(factory.__init__ if isinstance(factory, type) else factory)


def _own_options(func: Callable[..., Any]) -> list[str]:
    params = inspect.signature(func).parameters.values()
    return [p.name for p in params if p.name not in ("self", "root") and p.kind is not p.VAR_KEYWORD]


def build_dataset(name: str, root: str | Path, **options: Any) -> PartDataset:
    """Open benchmark ``name`` at ``root``; ``options`` go to the loader (``split``, ``categories``, ``limit``...).

    Raises:
        ValueError: an unknown benchmark, or an option its loader does not take (the message lists those it takes).
    """
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {sorted(DATASETS)}")
    known = dataset_options(key)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"the {key} loader takes no option {unknown}; its options: {known}")
    return DATASETS[key](root, **options)


__all__ = [
    "DATASETS",
    "build_dataset",
    "dataset_options",
    "DatasetFormatError",
    "PartDataset",
    "PartShape",
    "ShapeRecord",
    "read_pcd",
    "SHAPENETPART_PARTS",
    "ShapeNetPart",
    "ShapeNetPartH5",
    "load_shapenetpart",
    "FAUST",
    "ObjaverseBench",
    "PartNetMobility",
    "PartNetE",
    "ScanObjectNN",
    "Find3DKey",
    "LabelledMeshes",
]
