"""Run a benchmark: dataset -> protocol -> :func:`patchalign3d.segment` -> IoU -> JSON, tables, pictures.

The per-batch code (:func:`predict_batch`, :func:`score_batch`) is shared with the Lightning wrapper in
:mod:`patchalign3d.evaluation.lit`, so one process and many GPUs compute the same figures.

Python::

    from patchalign3d.evaluation import evaluate, Protocol
    report = evaluate("shapenetpart", "data/shapenetcore_partanno_segmentation_benchmark_v0_normal",
                      model="patchalign3d.pt", protocol=Protocol(points=None, metric="release"))
    report["metric"]["miou"], report["metric"]["ciou"]

Command line::

    patchalign3d evaluate shapenetpart --root R -c configs/eval/shapenetpart.yaml --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from patchalign3d.data import DATASETS, PartDataset, build_dataset
from patchalign3d.evaluation.metrics import IoUSummary, PartIoU, default_unlabelled
from patchalign3d.evaluation.protocols import PromptTable, Protocol, benchmark_protocol, sample_points
from patchalign3d.text import clean_name

__all__ = [
    "EvalItem",
    "EvalDataset",
    "PromptEmbedder",
    "predict_batch",
    "score_batch",
    "make_dataloader",
    "evaluate",
    "evaluate_main",
    "markdown_table",
]


# ---------------------------------------------------------------------------------------------------
# items: one shape, sampled and posed by the protocol, with the prompts that compete for its points
# ---------------------------------------------------------------------------------------------------
@dataclass
class EvalItem:
    """A shape ready for the model.

    Attributes:
        index: position in the :class:`EvalDataset` (stable key for metrics and pictures).
        uid, category: from the dataset.
        points: ``(M, 3)`` float32 after the protocol's draw and rotation (not normalised: segment() does it).
        labels: ``(M,)`` int64 ground truth, index into ``part_names``, ``-1`` = unlabelled.
        part_names: the shape's label space.
        candidates: the ``C`` prompts that compete (the shape's own, or the whole benchmark's).
        to_label: ``(C,)`` int64, the label each candidate stands for (``-1``: not a part of this shape).
    """

    index: int
    uid: str
    category: str
    points: np.ndarray
    labels: np.ndarray
    part_names: list[str]
    candidates: tuple[str, ...]
    to_label: np.ndarray


def _candidates(prompts: Sequence[str], pool: Sequence[str] | None) -> tuple[tuple[str, ...], np.ndarray]:
    """Candidates (distinct after cleaning, as the text side requires) and the label each stands for.

    ``pool`` (every prompt of the benchmark, when the category is not given away) replaces the shape's own
    prompts as candidates; a candidate that is none of the shape's parts maps to ``-1``.
    """
    if pool is None:
        seen: dict[str, str] = {}
        for p in prompts:
            seen.setdefault(clean_name(p), p)
        pool = list(seen.values())
    # two labels with one prompt: the first label wins (reported in the report's "prompt_collisions")
    first: dict[str, int] = {}
    for j, p in enumerate(prompts):
        first.setdefault(clean_name(p), j)
    to_label = np.array([first.get(clean_name(c), -1) for c in pool], dtype=np.int64)
    return tuple(pool), to_label


class EvalDataset(Dataset):
    """A :class:`~patchalign3d.data.PartDataset` seen through a :class:`Protocol`, yielding :class:`EvalItem`.

    Shapes are reordered so that those sharing a candidate list are adjacent (they batch together); within a
    group the dataset's order is kept.
    """

    def __init__(self, dataset: PartDataset, protocol: Protocol) -> None:
        self.dataset = dataset
        self.protocol = protocol
        self.table: PromptTable = protocol.prompt_table
        prompts = [protocol.prompts_for(r.category, r.part_names, self.table) for r in dataset.records]
        self.collisions = sorted(
            {
                f"{r.category}: {p}"
                for r, ps in zip(dataset.records, prompts)
                for p in ps
                if sum(clean_name(q) == clean_name(p) for q in ps) > 1
            }
        )
        pool = None
        if not protocol.category_mask:
            seen: dict[str, str] = {}
            for ps in prompts:
                for p in ps:
                    seen.setdefault(clean_name(p), p)
            pool = list(seen.values())
        self._cands = [_candidates(ps, pool) for ps in prompts]
        rank: dict[tuple[str, ...], int] = {}
        for c, _ in self._cands:
            rank.setdefault(c, len(rank))
        self.order = sorted(range(len(dataset)), key=lambda i: (rank[self._cands[i][0]], i))
        self.categories: list[str] = sorted(dataset.categories)

    def __len__(self) -> int:
        return len(self.order)

    def record(self, index: int):
        return self.dataset.records[self.order[index]]

    def __getitem__(self, index: int) -> EvalItem:
        i = self.order[index]
        shape = self.dataset[i]
        points, labels = sample_points(shape.points, shape.labels, shape.uid, self.protocol)
        cands, to_label = self._cands[i]
        return EvalItem(
            index, shape.uid, shape.category, points, labels, list(shape.part_names), cands, to_label
        )


def _collate(items: list[EvalItem]) -> list[EvalItem]:
    return items


def make_dataloader(data: EvalDataset, batch_size: int = 16, workers: int = 0, **kwargs: Any) -> DataLoader:
    """A loader of lists of :class:`EvalItem`, in the dataset's (grouped) order."""
    return DataLoader(
        data,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        persistent_workers=False,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------------
# text: prompts -> embeddings, once per distinct prompt list
# ---------------------------------------------------------------------------------------------------
class PromptEmbedder:
    """Turns prompt lists into ``(K, D)`` embeddings, each list encoded once.

    Args:
        text: a :class:`~patchalign3d.text.TextBank`, ``{prompt: (D,) tensor}``, a text encoder, an encoder
            spec string, or None (the encoder the model was trained with, else OpenCLIP ViT-bigG-14).
        model: consulted for its training text encoder when ``text`` is None.
        text_templates: ``"release"``, ``"category"`` or a list (encoders only; a bank is used as it is).
    """

    def __init__(
        self, text: Any = None, model: Any = None, text_templates: str | Sequence[str] = "release"
    ) -> None:
        from patchalign3d.text import (
            CATEGORY_TEMPLATES,
            DEFAULT_TEMPLATES,
            TextBank,
            TextEncoder,
            get_text_encoder,
            spec_from_meta,
        )

        self._memo: dict[tuple[str | None, tuple[str, ...]], Tensor] = {}
        self.bank = text if isinstance(text, TextBank) else None
        self.mapping = text if isinstance(text, Mapping) else None
        self.encoder = None
        if text_templates == "release":
            self.templates = tuple(DEFAULT_TEMPLATES)
        elif text_templates == "category":
            self.templates = tuple(CATEGORY_TEMPLATES)
        else:
            self.templates = tuple(text_templates)
        # two "{}" fields (part, category): encode each category's prompts with its own name
        self.per_category = any(t.count("{}") == 2 for t in self.templates)
        if self.bank is not None or self.mapping is not None:
            if text_templates != "release":
                raise ValueError(
                    f"text_templates={text_templates!r} needs a text encoder: a text bank holds fixed embeddings "
                    "(build the bank with those templates instead)"
                )
        else:
            if text is None:
                text = spec_from_meta(getattr(model, "text_meta", None))
            if text is not None and not isinstance(text, (str, TextEncoder)):
                raise TypeError(
                    f"text must be a TextBank, a mapping, a TextEncoder, a spec string or None; got {type(text).__name__}"
                )
            self.encoder = get_text_encoder(text)

    def describe(self) -> dict[str, Any]:
        """What produced the embeddings, for the report."""
        if self.bank is not None:
            return {"kind": "text_bank", "names": len(self.bank), "meta": _jsonable(self.bank.meta)}
        if self.mapping is not None:
            return {"kind": "mapping", "names": len(self.mapping)}
        return {
            "kind": "encoder",
            "encoder": getattr(self.encoder, "identifier", repr(self.encoder)),
            "templates": list(self.templates),
            "per_category": self.per_category,
        }

    def __call__(self, prompts: Sequence[str], category: str = "") -> Tensor:
        key = (category if self.per_category else None, tuple(prompts))
        emb = self._memo.get(key)
        if emb is None:
            emb = self._memo[key] = self._embed(list(prompts), category)
        return emb

    def _embed(self, prompts: list[str], category: str) -> Tensor:
        from patchalign3d.text import TextBank

        if self.bank is not None:
            return self.bank.lookup(prompts)
        if self.mapping is not None:
            lut = {**{clean_name(k): v for k, v in self.mapping.items()}, **dict(self.mapping)}
            missing = [p for p in prompts if p not in lut and clean_name(p) not in lut]
            if missing:
                raise KeyError(f"no text embedding for prompts {missing}")
            return torch.stack(
                [torch.as_tensor(lut[p] if p in lut else lut[clean_name(p)]).float() for p in prompts]
            )
        bank = TextBank.build(
            prompts,
            self.encoder,
            templates=self.templates,
            category=(category or "object") if self.per_category else None,
        )
        return bank.lookup(prompts)


# ---------------------------------------------------------------------------------------------------
# the per-batch code shared by the runner and the Lightning module
# ---------------------------------------------------------------------------------------------------
def predict_batch(
    model: Any,
    items: Sequence[EvalItem],
    embed: PromptEmbedder,
    protocol: Protocol,
    *,
    device: str | torch.device | None = None,
    dtype: str = "float32",
    batch_size: int = 16,
) -> list[np.ndarray]:
    """Predicted labels ``(M,)`` (index into each item's ``part_names``; ``-1`` = a foreign part) per item.

    Items sharing a candidate list go through :func:`patchalign3d.segment` together.
    """
    from patchalign3d.api import segment

    groups: dict[tuple, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault((it.candidates, it.category if embed.per_category else None), []).append(i)
    out: list[np.ndarray | None] = [None] * len(items)
    for (cands, cat), members in groups.items():
        emb = embed(cands, cat or "")
        segs = segment(
            [items[i].points for i in members],
            list(cands),
            model=model,
            text=emb,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            **protocol.segment_kwargs(),
        )
        for i, seg in zip(members, segs):
            out[i] = items[i].to_label[seg.labels]
    return out  # type: ignore[return-value]


def score_batch(metric: PartIoU, items: Sequence[EvalItem], preds: Sequence[np.ndarray]) -> None:
    """Add each item's IoU to ``metric``."""
    for it, pred in zip(items, preds):
        metric.update(
            torch.from_numpy(pred), torch.from_numpy(it.labels), len(it.part_names), it.category, it.index
        )


# ---------------------------------------------------------------------------------------------------
# the Python API
# ---------------------------------------------------------------------------------------------------
def _resolve_model(model: Any, trust_pickle: bool = False) -> tuple[Any, str]:
    from patchalign3d.model.patchalign3d import PatchAlign3D

    if isinstance(model, PatchAlign3D):
        return model.eval(), "<in-memory model>"
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            f"model must be a PatchAlign3D, a checkpoint path or Hub id, or None; got {type(model).__name__}"
        )
    from patchalign3d.model.checkpoint import DEFAULT_REPO, load_model

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
    dtype: str = "float32",
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
        device, dtype, batch_size: passed to :func:`patchalign3d.segment`.
        workers: data-loading processes.
        json_path, markdown_path: where to write the report and the per-category table.
        png_dir: where to draw the ``num_pictures`` best and worst shapes (prediction beside ground truth).
        trust_pickle: let :func:`~patchalign3d.load_model` unpickle a checkpoint given by path.

    Returns:
        The report: ``metric`` (mIoU, cIoU in percent), ``per_category``, ``shapes``, ``protocol`` (complete),
        ``model``, ``text``, ``timing``, ``environment``, ``markdown``, ``pictures``.
    """
    t_start = time.perf_counter()
    if isinstance(benchmark, PartDataset):
        dataset, name = benchmark, benchmark.name
    else:
        if root is None:
            raise ValueError("root is required when the benchmark is given by name")
        dataset, name = build_dataset(benchmark, root, **dict(dataset_options or {})), benchmark.lower()
    protocol = protocol or benchmark_protocol(name)
    data = EvalDataset(dataset, protocol)
    if len(data) == 0:
        raise ValueError(f"{dataset!r} holds no shapes to evaluate")
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
    report["timing"] = {
        "seconds": round(seconds, 3),
        "total_seconds": round(time.perf_counter() - t_start, 3),
        "shapes_per_second": round(len(data) / seconds, 3) if seconds > 0 else None,
        "device": str(device or next(net.parameters()).device),
        "dtype": dtype,
        "batch_size": batch_size,
        "workers": workers,
    }
    report["environment"] = _environment()
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


def _pct(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def build_report(
    summary: IoUSummary, data: EvalDataset, *, name: str, root: Any, protocol: Protocol, unlabelled: str
) -> dict[str, Any]:
    """The figures of an evaluation as JSON-ready data (IoUs in percent; ``None`` = not scored)."""
    per_part: dict[str, dict[str, list[float]]] = {}
    for shape_idx, part_idx, iou in summary.part_rows:
        rec = data.record(int(shape_idx))
        per_part.setdefault(rec.category, {}).setdefault(rec.part_names[int(part_idx)], []).append(iou)
    per_category = []
    for cat in data.categories:
        stats = summary.per_category.get(cat)
        parts = {p: _pct(float(np.mean(v))) for p, v in per_part.get(cat, {}).items()}
        per_category.append(
            {
                "category": cat,
                "num_shapes": stats["num_shapes"] if stats else 0,
                "miou": _pct(stats["miou"]) if stats else None,
                "parts": parts,
            }
        )
    shapes = [
        {"index": int(i), "uid": data.record(int(i)).uid, "category": data.categories[int(c)], "iou": _pct(v)}
        for i, c, v in zip(summary.shape_index, summary.shape_category, summary.shape_iou)
    ]
    report: dict[str, Any] = {
        "benchmark": name,
        "root": None if root is None else str(root),
        "dataset": {
            "type": type(data.dataset).__name__,
            "split": getattr(data.dataset, "split", None),
            "num_shapes": len(data),
            "categories": data.categories,
        },
        "protocol": {
            **protocol.to_dict(),
            "prompt_table": data.table.to_dict(),
            "unlabelled_effective": unlabelled,
            "prompt_collisions": data.collisions,
        },
        "metric": {
            "convention": summary.convention,
            "unit": "percent",
            "miou": _pct(summary.miou),
            "ciou": _pct(summary.ciou),
            "num_shapes": summary.num_shapes,
            "num_scored": summary.num_scored,
        },
        "per_category": per_category,
        "shapes": shapes,
    }
    report["markdown"] = markdown_table(report)
    return report


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def markdown_table(report: Mapping[str, Any]) -> str:
    """One row per category (shapes, mIoU, per-part IoU), then the instance and class averages."""
    m = report["metric"]
    scored_cats = sum(1 for r in report["per_category"] if r["miou"] is not None)
    lines = [
        f"**{report['benchmark']}** — IoU convention `{m['convention']}`, "
        f"{m['num_scored']}/{m['num_shapes']} shapes scored",
        "",
        "| category | shapes | mIoU | parts (IoU) |",
        "|---|---:|---:|---|",
    ]
    for row in report["per_category"]:
        parts = ", ".join(f"{p} {_fmt(v)}" for p, v in row["parts"].items())
        lines.append(f"| {row['category']} | {row['num_shapes']} | {_fmt(row['miou'])} | {parts} |")
    lines.append(f"| **mIoU** (instance avg) | {m['num_scored']} | **{_fmt(m['miou'])}** | |")
    lines.append(f"| **cIoU** (class avg) | {scored_cats} categories | **{_fmt(m['ciou'])}** | |")
    return "\n".join(lines)


def render_extremes(
    data: EvalDataset,
    summary: IoUSummary,
    preds: Mapping[int, np.ndarray],
    out_dir: str | os.PathLike,
    k: int,
) -> list[str]:
    """Draw the ``k`` best and ``k`` worst scored shapes (prediction beside ground truth)."""
    from patchalign3d.viz import render_segmentation_png

    scored = [(float(v), int(i)) for i, v in zip(summary.shape_index, summary.shape_iou) if not math.isnan(v)]
    scored.sort()
    worst, best = scored[:k], scored[::-1][:k]
    out, paths = Path(out_dir), []
    for tag, chosen in (("best", best), ("worst", worst)):
        for rank, (iou, idx) in enumerate(chosen, 1):
            it = data[idx]
            safe = it.uid.replace("/", "_").replace(os.sep, "_")
            path = out / f"{tag}{rank:02d}_{safe}.png"
            render_segmentation_png(
                it.points,
                preds[idx].astype(np.int64),
                it.part_names,
                path,
                title=f"{it.category} {it.uid}: IoU {iou:.1f}",
                true_labels=it.labels,
                up_axis=data.protocol.up_axis,
            )
            paths.append(str(path))
    return paths


def _environment() -> dict[str, str]:
    import patchalign3d

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "patchalign3d": getattr(patchalign3d, "__version__", "?"),
        "platform": platform.platform(),
    }


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


# ---------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------
def _int_or_all(text: str) -> int | None:
    if text.lower() == "all":
        return None
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return v


def _temperature(text: str) -> float | None:
    if text.lower() in ("learned", "none"):
        return None
    return float(text)


def _parser() -> argparse.ArgumentParser:
    S = argparse.SUPPRESS  # flags left out keep the config's (or the benchmark's) value
    p = argparse.ArgumentParser(
        prog="patchalign3d evaluate",
        description="Evaluate a checkpoint on a part-segmentation benchmark under a stated protocol.",
        epilog="Precedence: the benchmark's paper protocol < the config file (-c) < flags.",
    )
    p.add_argument("benchmark", choices=sorted(DATASETS), help="which benchmark")
    p.add_argument("--root", default=S, help="the benchmark's folder")
    p.add_argument(
        "-c", "--config", default=None, help="YAML: benchmark, root, split, dataset, protocol, run options"
    )
    p.add_argument(
        "--split",
        default=S,
        help="dataset split (shapenetpart: test/val/train; objaverse: seen/unseen/shapenetpart)",
    )
    p.add_argument("--categories", default=S, help="comma-separated categories to keep")
    p.add_argument("--limit", type=int, default=S, help="evaluate the first N shapes only")
    p.add_argument(
        "--dataset-option",
        action="append",
        default=S,
        metavar="KEY=VALUE",
        help="loader option, e.g. granularity=fine (faust), missing=skip (shapenetpart), label_space=object (partnet)",
    )
    g = p.add_argument_group("model and text")
    g.add_argument(
        "--checkpoint", default=S, help="released .pt, Lightning .ckpt or Hub id (default: the release)"
    )
    t = g.add_mutually_exclusive_group()
    t.add_argument("--text-bank", default=S, help="a saved TextBank holding every prompt")
    t.add_argument(
        "--text-encoder", default=S, help="'openclip', 'openclip:MODEL/TAG', 'minilm' or 'hf:NAME'"
    )
    g = p.add_argument_group("protocol")
    g.add_argument("--prompts", default=S, help="prompt table: release, find3d or a YAML file")
    g.add_argument(
        "--template",
        dest="prompt_template",
        default=S,
        help="prompt decoration, e.g. '{part} of a {category}'",
    )
    g.add_argument(
        "--text-templates", default=S, choices=("release", "category"), help="templates the encoder averages"
    )
    g.add_argument(
        "--points", type=_int_or_all, default=S, help="score 'all' points or N drawn with the seed"
    )
    g.add_argument(
        "--replace", action=argparse.BooleanOptionalAction, default=S, help="draw points with replacement"
    )
    g.add_argument("--seed", type=int, default=S)
    g.add_argument("--rotation", default=S, choices=("canonical", "random", "random-up"))
    g.add_argument("--up-axis", default=S, choices=("y", "z"))
    g.add_argument(
        "--normalize", action=argparse.BooleanOptionalAction, default=S, help="centroid + unit sphere"
    )
    g.add_argument(
        "--category-mask",
        action=argparse.BooleanOptionalAction,
        default=S,
        help="only the shape's own parts compete (the category is known)",
    )
    g.add_argument("--assign", default=S, choices=("nearest", "membership", "interpolate"))
    g.add_argument("--temperature", type=_temperature, default=S, help="logit temperature, or 'learned'")
    g.add_argument("--max-points", type=_int_or_all, default=S, help="points the encoder sees ('all' or N)")
    g.add_argument("--num-groups", type=int, default=S)
    g.add_argument("--metric", default=S, choices=("release", "find3d", "pointbert"), help="IoU convention")
    g.add_argument("--unlabelled", default=S, choices=("ignore", "count"))
    g = p.add_argument_group("run and output")
    g.add_argument("--device", default=S)
    g.add_argument("--dtype", default=S, choices=("float32", "bfloat16"))
    g.add_argument("--batch-size", type=int, default=S)
    g.add_argument("--workers", type=int, default=S)
    g.add_argument("--json", dest="json_path", default=S, help="write the full report here")
    g.add_argument("--markdown", dest="markdown_path", default=S, help="write the per-category table here")
    g.add_argument("--png-dir", default=S, help="draw the best and worst shapes here")
    g.add_argument("--num-pictures", type=int, default=S)
    g.add_argument("--progress", action="store_true", default=S)
    g.add_argument(
        "--trust-pickle", action="store_true", default=False, help="allow checkpoints that need unpickling"
    )
    return p


_PROTOCOL_FIELDS = {f.name for f in dataclasses.fields(Protocol)}
_RUN_KEYS = {
    "device",
    "dtype",
    "batch_size",
    "workers",
    "json_path",
    "markdown_path",
    "png_dir",
    "num_pictures",
    "progress",
}
_TOP_KEYS = {
    "benchmark",
    "root",
    "split",
    "categories",
    "limit",
    "dataset",
    "protocol",
    "checkpoint",
    "text_bank",
    "text_encoder",
} | _RUN_KEYS


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read an evaluation config (see ``configs/eval/*.yaml``) and check its keys."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation config not found: {path}")
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    unknown = set(cfg) - _TOP_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    proto = cfg.get("protocol") or {}
    if not isinstance(proto, dict):
        raise ValueError(f"{path}: 'protocol' must be a mapping")
    bad = set(proto) - _PROTOCOL_FIELDS
    if bad:
        raise ValueError(f"{path}: unknown protocol keys {sorted(bad)}; known: {sorted(_PROTOCOL_FIELDS)}")
    return cfg


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``patchalign3d evaluate BENCHMARK ...``; returns the exit status."""
    args = vars(_parser().parse_args(list(sys.argv[1:] if argv is None else argv)))
    benchmark = args.pop("benchmark")
    cfg = load_config(args.pop("config")) if args.get("config") else {}
    args.pop("config", None)
    if cfg.get("benchmark") and str(cfg["benchmark"]).lower() != benchmark:
        raise SystemExit(f"patchalign3d evaluate: the config is for {cfg['benchmark']!r}, not {benchmark!r}")

    proto = {**benchmark_protocol(benchmark).to_dict(), **(cfg.get("protocol") or {})}
    proto.update({k: v for k, v in args.items() if k in _PROTOCOL_FIELDS})
    try:
        protocol = Protocol.from_dict(proto)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"patchalign3d evaluate: bad protocol: {e}") from None

    opts = dict(cfg.get("dataset") or {})
    for key in ("split", "limit"):
        if key in args:
            opts[key] = args[key]
        elif key in cfg:
            opts[key] = cfg[key]
    cats = args.get("categories", cfg.get("categories"))
    if cats is not None:
        opts["categories"] = [c.strip() for c in cats.split(",")] if isinstance(cats, str) else list(cats)
    for item in args.get("dataset_option", []):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"patchalign3d evaluate: --dataset-option wants KEY=VALUE, got {item!r}")
        opts[key.strip()] = _parse_value(value)
    root = args.get("root", cfg.get("root"))
    if root is None:
        raise SystemExit(
            "patchalign3d evaluate: give the benchmark folder with --root (or 'root:' in the config)"
        )

    run = {k: args.get(k, cfg.get(k)) for k in _RUN_KEYS if k in args or k in cfg}
    from patchalign3d.text import TextBank

    try:
        bank_path = args.get("text_bank", cfg.get("text_bank"))
        text = TextBank.load(bank_path) if bank_path else args.get("text_encoder", cfg.get("text_encoder"))
        report = evaluate(
            benchmark,
            root,
            model=args.get("checkpoint", cfg.get("checkpoint")),
            text=text,
            protocol=protocol,
            dataset_options=opts,
            trust_pickle=args["trust_pickle"],
            **run,
        )
    except (OSError, ValueError, KeyError) as e:
        # user-facing failures (missing or malformed files, weights not available offline, prompts missing
        # from a text bank) as one line; PATCHALIGN3D_DEBUG=1 shows the traceback
        if os.environ.get("PATCHALIGN3D_DEBUG"):
            raise
        print(f"patchalign3d evaluate: error: {e}", file=sys.stderr)
        return 1
    print(report["markdown"])
    m = report["metric"]
    print(
        f"\n{benchmark}: mIoU {m['miou']} cIoU {m['ciou']} ({m['convention']} convention, {m['num_scored']} shapes, "
        f"{report['timing']['shapes_per_second']} shapes/s)"
    )
    for path in report["pictures"]:
        print(f"picture: {path}")
    return 0
