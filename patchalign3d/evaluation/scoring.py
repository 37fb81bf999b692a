"""The per-batch code shared by :func:`~patchalign3d.evaluation.evaluate` and the Lightning wrapper
(:mod:`patchalign3d.evaluation.lit`): prompts to embeddings, shapes to predicted labels, predictions to IoU.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from patchalign3d.evaluation.dataset import EvalItem
from patchalign3d.evaluation.metrics import PartIoU
from patchalign3d.evaluation.protocols import Protocol
from patchalign3d.text import clean_name

__all__ = ["PromptEmbedder", "predict_batch", "score_batch"]


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


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))

