"""Benchmark shapes seen through a protocol: :class:`EvalItem`, :class:`EvalDataset` and its data loader.

:class:`EvalDataset` wraps a :class:`~patchalign3d.data.PartDataset`, applies the protocol's prompt table, point
draw and rotation, and says which prompts compete for each shape's points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset

from patchalign3d.data import PartDataset
from patchalign3d.data.base import DatasetFormatError
from patchalign3d.evaluation.find3d import Find3DFiles
from patchalign3d.evaluation.protocols import PromptTable, Protocol, sample_points
from patchalign3d.text import clean_name

__all__ = ["EvalItem", "EvalDataset", "make_dataloader"]


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
        zero_logit_label: what the release predicts for a point with all-zero logits (a point in no patch
            under ``assign="membership_release"``): the label of its first logit column, ``-1`` when that
            column is not one of this shape's parts.
        scored_parts: ``(K,)`` bool, the parts that are scored (None: all); a part the prompt table gives no
            prompt is never predicted and not scored.
    """

    index: int
    uid: str
    category: str
    points: np.ndarray
    labels: np.ndarray
    part_names: list[str]
    candidates: tuple[str, ...]
    to_label: np.ndarray
    zero_logit_label: int = 0
    scored_parts: np.ndarray | None = None


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

    With Find3D's subset only its shapes are kept; with Find3D's rotations each shape is posed by its published
    row (:mod:`patchalign3d.evaluation.find3d`, files read from ``protocol.protocol_dir``). Shapes are reordered
    so that those sharing a candidate list are adjacent (they batch together); within a group the dataset's
    order is kept.
    """

    def __init__(self, dataset: PartDataset, protocol: Protocol) -> None:
        self.dataset = dataset
        self.protocol = protocol
        self.table: PromptTable = protocol.prompt_table
        self.find3d: Find3DFiles | None = None
        self.subset_absent: list[str] = []
        kept = list(range(len(dataset)))
        if protocol.uses_find3d_files:
            self.find3d = Find3DFiles.for_dataset(
                dataset, protocol.protocol_dir, rotation=protocol.rotation == "find3d", subset=protocol.subset == "find3d"
            )
            if protocol.subset == "find3d":
                kept = self._find3d_subset(dataset, self.find3d)
        records = [dataset.records[i] for i in kept]
        prompts = [protocol.prompts_for(r.category, r.part_names, self.table) for r in records]
        # parts past a short prompt list (allow_fewer tables): {category: [part, ...]}, for the report
        self.unscored: dict[str, list[str]] = {}
        self._scored: dict[int, np.ndarray] = {}
        for i, r, ps in zip(kept, records, prompts):
            if len(ps) < len(r.part_names):
                self._scored[i] = np.arange(len(r.part_names)) < len(ps)
                self.unscored.setdefault(r.category, list(r.part_names[len(ps):]))
        self.collisions = sorted(
            {
                f"{r.category}: {p}"
                for r, ps in zip(records, prompts)
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
        cands = dict(zip(kept, (_candidates(ps, pool) for ps in prompts)))
        self._cands = cands
        rank: dict[tuple[str, ...], int] = {}
        for c, _ in cands.values():
            rank.setdefault(c, len(rank))
        self.order = sorted(kept, key=lambda i: (rank[cands[i][0]], i))
        self.categories: list[str] = sorted({r.category for r in records})

    def _find3d_subset(self, dataset: PartDataset, files: Find3DFiles) -> list[int]:
        """Indices of the dataset's records in Find3D's subset; subset shapes the dataset lacks are an error
        unless the dataset was opened with ``missing="skip"`` (then they are listed in ``subset_absent``)."""
        kept = [i for i, r in enumerate(dataset.records) if files.in_subset(r.extra["find3d"])]
        present = {(k.category, k.member) for k in (dataset.records[i].extra["find3d"] for i in kept)}
        wanted = {r.extra["find3d"].category for r in dataset.records}
        absent = sorted(
            f"{c}/{m}" for c, members in (files.subset or {}).items() if c in wanted for m in members
            if (c, m) not in present
        )
        if absent and dataset.missing_policy != "skip":
            raise DatasetFormatError(
                files.files["subset"]["path"],
                f"names {len(absent)} shapes of the categories evaluated that {dataset.root} does not hold (first: "
                f"{absent[0]}). To score the {len(kept)} present ones only, pass --dataset-option missing=skip "
                "(Python: missing='skip'); the report then lists the shapes left out",
            )
        self.subset_absent = absent
        return kept

    def __len__(self) -> int:
        return len(self.order)

    def record(self, index: int):
        return self.dataset.records[self.order[index]]

    def __getitem__(self, index: int) -> EvalItem:
        i = self.order[index]
        shape = self.dataset[i]
        rotation = None
        if self.protocol.rotation == "find3d":
            assert self.find3d is not None
            rotation = self.find3d.rotation(self.dataset.records[i].extra["find3d"])
        points, labels = sample_points(shape.points, shape.labels, shape.uid, self.protocol, rotation)
        cands, to_label = self._cands[i]
        return EvalItem(
            index, shape.uid, shape.category, points, labels, list(shape.part_names), cands, to_label,
            self.dataset.zero_logit_label(self.dataset.records[i]), self._scored.get(i),
        )

    def release_positions(self) -> np.ndarray:
        """``(len(self),)`` int64: each shape's position in the order the release's loader would read the kept
        shapes (:meth:`~patchalign3d.data.PartDataset.release_order`), for the release's per-batch cIoU."""
        rank = {rec: pos for pos, rec in enumerate(r for r in self.dataset.release_order() if r in self._cands)}
        return np.array([rank[i] for i in self.order], dtype=np.int64)

    def why_empty(self) -> str:
        """A sentence on why no shape is left and what to pass instead (for an empty dataset)."""
        ds = self.dataset
        if self.protocol.subset == "find3d" and len(ds):
            absent = f" ({len(self.subset_absent)} of its shapes are absent from this copy)" if self.subset_absent else ""
            return (
                f"none of the {len(ds)} shapes {ds.root} holds is in Find3D's subset{absent}: pass --subset all to "
                f"evaluate every shape it holds (Python: Protocol(subset='all'))"
            )
        if ds.skipped:
            return (
                f"every shape {ds.root} lists is absent from the copy ({len(ds.skipped)} left out, first: "
                f"{ds.skipped[0][1]}): point --root at a complete copy"
            )
        return f"{ds!r} holds no shapes to evaluate: check --root, --split, --categories and --limit"


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

