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

