"""Run a benchmark: dataset -> protocol -> :func:`patchalign3d.segment` -> IoU -> JSON, tables, pictures.

The jobs live in their own modules: :mod:`~patchalign3d.evaluation.dataset` (shapes through a protocol),
:mod:`~patchalign3d.evaluation.scoring` (the per-batch code, shared with the Lightning wrapper in
:mod:`patchalign3d.evaluation.lit` so that one process and many GPUs compute the same figures),
:mod:`~patchalign3d.evaluation.report` (JSON, tables, pictures) and :mod:`~patchalign3d.evaluation.cli`.

Python::

    from patchalign3d.evaluation import evaluate, Protocol
    report = evaluate("shapenetpart", "data/shapenetcore_partanno_segmentation_benchmark_v0_normal",
                      model="patchalign3d.pt", protocol=Protocol(points=None, metric="release"))
    report["metric"]["miou"], report["metric"]["ciou"]

Command line::

    patchalign3d evaluate shapenetpart --root R -c configs/eval/shapenetpart.yaml --json out.json
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patchalign3d.data import PartDataset, build_dataset
from patchalign3d.evaluation.dataset import EvalDataset, make_dataloader
from patchalign3d.evaluation.metrics import PartIoU, default_unlabelled
from patchalign3d.evaluation.protocols import Protocol, benchmark_protocol
from patchalign3d.evaluation.report import build_report, environment, render_extremes
from patchalign3d.evaluation.scoring import PromptEmbedder, predict_batch, score_batch
from patchalign3d.model.checkpoint import DEFAULT_REPO, load_model
from patchalign3d.model.patchalign3d import PatchAlign3D
from patchalign3d.precision import DEFAULT_DTYPE, dtype_name, resolve_dtype

__all__ = ["DEFAULT_DTYPE", "evaluate"]


def eval_dtype(dtype: str | None) -> str:
    """The one place where an evaluation picks its precision: ``dtype``, else :data:`DEFAULT_DTYPE` (the
    package-wide default of :mod:`patchalign3d.precision`; the report records it as ``timing.dtype`` and what
    it ran in, ``"auto"`` resolved, as ``timing.dtype_run``)."""
    return DEFAULT_DTYPE if dtype is None else str(dtype)


def _resolve_model(model: Any, trust_pickle: bool = False) -> tuple[Any, str]:
    if isinstance(model, PatchAlign3D):
        return model.eval(), "<in-memory model>"
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            f"model must be a PatchAlign3D, a checkpoint path or Hub id, or None; got {type(model).__name__}"
        )
    return load_model(model, trust_pickle=trust_pickle), DEFAULT_REPO if model is None else str(model)


def evaluate(
    benchmark: str | PartDataset,
    root: str | os.PathLike | None = None,
    *,
    model: Any = None,
    text: Any = None,
    protocol: Protocol | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    dtype: str | None = None,
    batch_size: int = 16,
    workers: int = 0,
    json_path: str | os.PathLike | None = None,
    markdown_path: str | os.PathLike | None = None,
    png_dir: str | os.PathLike | None = None,
    num_pictures: int = 3,
    progress: bool = False,
    trust_pickle: bool = False,
) -> dict[str, Any]:
    """Evaluate a model on a benchmark under a protocol.

    Args:
        benchmark: a name from :data:`patchalign3d.data.DATASETS` or an opened dataset.
        root: the benchmark folder (when ``benchmark`` is a name).
        model: a :class:`~patchalign3d.PatchAlign3D`, a checkpoint path / Hub id, or None (the release).
        text: see :class:`PromptEmbedder`.
        protocol: defaults to :func:`~patchalign3d.evaluation.protocols.benchmark_protocol` of the benchmark.
        dataset_options: loader options (``split``, ``categories``, ``limit``, ``granularity``, ``missing``...).
        device, dtype, batch_size: passed to :func:`patchalign3d.segment` (``dtype=None``: :func:`eval_dtype`).
        workers: data-loading processes.
        json_path, markdown_path: where to write the report and the per-category table.
        png_dir: where to draw the ``num_pictures`` best and worst shapes (prediction beside ground truth).
        trust_pickle: let :func:`~patchalign3d.load_model` unpickle a checkpoint given by path.

    Returns:
        The report: ``metric`` (mIoU, cIoU and PartSLIP's ``partslip_miou`` in percent, and which is the
        ``headline``), ``per_category``, ``shapes``, ``protocol`` (complete), ``dataset`` (with the loader's
        ``choices``), ``rules`` (which publisher's rule each figure follows, with the source file and line),
        ``model``, ``text``, ``timing``, ``environment``, ``markdown``, ``pictures``.
    """
    t_start = time.perf_counter()
    dtype = eval_dtype(dtype)
    if isinstance(benchmark, PartDataset):
        dataset, name = benchmark, benchmark.name
    else:
        if root is None:
            raise ValueError("root is required when the benchmark is given by name")
        dataset, name = build_dataset(benchmark, root, **dict(dataset_options or {})), benchmark.lower()
    protocol = protocol or benchmark_protocol(name)
    data = EvalDataset(dataset, protocol)
    if len(data) == 0:
        raise ValueError(data.why_empty())
    net, model_source = _resolve_model(model, trust_pickle)
    embed = PromptEmbedder(text, net, protocol.text_templates)
    unlabelled = protocol.unlabelled or default_unlabelled(protocol.metric)
    metric = PartIoU(data.categories, protocol.metric, unlabelled)
    keep_preds = png_dir is not None and num_pictures > 0
    preds_kept: dict[int, np.ndarray] = {}

    loader = make_dataloader(data, batch_size, workers)
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc=f"evaluating {name}", unit="batch")
    t_loop = time.perf_counter()
    for items in loader:
        preds = predict_batch(net, items, embed, protocol, device=device, dtype=dtype, batch_size=batch_size)
        score_batch(metric, items, preds)
        if keep_preds:
            preds_kept.update({it.index: p.astype(np.int16) for it, p in zip(items, preds)})
    seconds = time.perf_counter() - t_loop
    summary = metric.compute()

    report = build_report(summary, data, name=name, root=root, protocol=protocol, unlabelled=unlabelled)
    report["model"] = {
        "source": model_source,
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "config": net.config.to_dict(),
    }
    report["text"] = embed.describe()
    run_device = torch.device(device) if device is not None else next(net.parameters()).device
    report["timing"] = {
        "seconds": round(seconds, 3),
        "total_seconds": round(time.perf_counter() - t_start, 3),
        "shapes_per_second": round(len(data) / seconds, 3) if seconds > 0 else None,
        "device": str(run_device),
        "dtype": dtype,
        "dtype_run": dtype_name(resolve_dtype(dtype, run_device)),
        "batch_size": batch_size,
        "workers": workers,
    }
    report["environment"] = environment()
    report["pictures"] = []
    if keep_preds:
        report["pictures"] = render_extremes(data, summary, preds_kept, png_dir, num_pictures)
    if markdown_path is not None:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown_path).write_text(report["markdown"] + "\n", encoding="utf-8")
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(
            json.dumps(report, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8"
        )
    return report
