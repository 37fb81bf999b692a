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

from patchalign3d.api import segment
from patchalign3d.evaluation.dataset import EvalItem
from patchalign3d.evaluation.metrics import PartIoU
from patchalign3d.evaluation.protocols import Protocol
from patchalign3d.precision import DEFAULT_DTYPE
from patchalign3d.text import (
    TEMPLATE_SETS,
    TextBank,
    TextEncoder,
    UnknownTextEncoderError,
    clean_name,
    get_text_encoder,
    spec_from_meta,
)
from patchalign3d.text.bank import template_fields

__all__ = ["PromptEmbedder", "predict_batch", "score_batch"]


class PromptEmbedder:
    """Turns prompt lists into ``(K, D)`` embeddings, each list (per category, when templates need one) once.

    Args:
        text: a :class:`~patchalign3d.text.TextBank`, ``{prompt: (D,) tensor}``, a text encoder, an encoder
            spec string, or None (the encoder the model was trained with, else OpenCLIP ViT-bigG-14).
        model: consulted for its training text encoder when ``text`` is None.
        text_templates: ``"release"`` (the release's ``part_only``), ``"category"`` (``part_plus_cat``),
            ``"ensemble"`` (both kinds averaged) or a list of templates.

    A bank is used as it is when it holds what the templates ask for: a bank keyed by part names serves
    ``"release"``; a bank keyed ``"part||category"`` (the release's part+category banks) serves each shape's
    category. Other templates are encoded with the encoder the bank's metadata names; a bank that does not
    say is refused (:class:`~patchalign3d.text.UnknownTextEncoderError`), never replaced by another encoder.
    """

    def __init__(
        self, text: Any = None, model: Any = None, text_templates: str | Sequence[str] = "release"
    ) -> None:
        self._memo: dict[tuple[str | None, tuple[str, ...]], Tensor] = {}
        self.bank = text if isinstance(text, TextBank) else None
        self.mapping = text if isinstance(text, Mapping) else None
        self.encoder = None
        if isinstance(text_templates, str):
            if text_templates not in TEMPLATE_SETS:
                raise ValueError(f"text_templates must be one of {sorted(TEMPLATE_SETS)} or a list, got {text_templates!r}")
            self.templates = TEMPLATE_SETS[text_templates]
        else:
            self.templates = tuple(text_templates)
        # two "{}" fields (part, category): encode each category's prompts with its own name
        self.per_category = any(template_fields(t) == 2 for t in self.templates)
        self.bank_serves = False  # the bank's own embeddings are used
        if self.mapping is not None and text_templates != "release":
            raise ValueError(
                f"text_templates={text_templates!r} needs a text encoder: a mapping holds fixed embeddings"
            )
        if self.bank is not None:
            if self.bank.paired and text_templates in ("release", "category"):
                self.bank_serves, self.per_category = True, True
            elif not self.bank.paired and text_templates == "release":
                self.bank_serves = True
            else:  # templates the bank was not built with: its own encoder, or a clear refusal
                self.encoder = get_text_encoder(_bank_encoder_spec(self.bank, text_templates))
                if self.encoder.dim != self.bank.dim:
                    raise ValueError(
                        f"the text bank is {self.bank.dim}-d but the encoder its metadata names "
                        f"({self.encoder.identifier}) gives {self.encoder.dim}-d embeddings"
                    )
        elif self.mapping is None:
            if text is None:
                text = spec_from_meta(getattr(model, "text_meta", None), source="the checkpoint's text metadata")
            if text is not None and not isinstance(text, (str, TextEncoder)):
                raise TypeError(
                    f"text must be a TextBank, a mapping, a TextEncoder, a spec string or None; got {type(text).__name__}"
                )
            self.encoder = get_text_encoder(text)

    def describe(self) -> dict[str, Any]:
        """What produced the embeddings, for the report."""
        if self.mapping is not None:
            return {"kind": "mapping", "names": len(self.mapping)}
        out: dict[str, Any] = {}
        if self.bank is not None:
            out = {"kind": "text_bank", "names": len(self.bank), "paired": self.bank.paired,
                   "meta": _jsonable(self.bank.meta), "bank_embeddings_used": self.bank_serves}
            if self.bank_serves:
                return {**out, "per_category": self.per_category}
        return {
            "kind": "encoder",
            **out,
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
        cat = (category or "object") if self.per_category else None
        if self.bank_serves:
            return self.bank.lookup(prompts, category=cat)
        if self.mapping is not None:
            lut = {**{clean_name(k): v for k, v in self.mapping.items()}, **dict(self.mapping)}
            missing = [p for p in prompts if p not in lut and clean_name(p) not in lut]
            if missing:
                raise KeyError(f"no text embedding for prompts {missing}")
            return torch.stack(
                [torch.as_tensor(lut[p] if p in lut else lut[clean_name(p)]).float() for p in prompts]
            )
        bank = TextBank.build(prompts, self.encoder, templates=self.templates, category=cat)
        return bank.lookup(prompts, category=cat)


def _bank_encoder_spec(bank: Any, text_templates: Any) -> str:
    """The encoder that built ``bank``; when its metadata does not say, advice that works with a bank (the
    encoder's own advice, ``--text-encoder``, cannot be combined with ``--text-bank``)."""
    try:
        return bank.encoder_spec(f"the text bank's metadata {bank.meta}")
    except UnknownTextEncoderError:
        own = "category" if bank.paired else "release"
        raise UnknownTextEncoderError(
            f"the text bank's metadata {bank.meta} does not say which text encoder built it, so the templates of "
            f"text_templates={text_templates!r}, which the bank was not built with, cannot be encoded: keep the bank "
            f"with its own templates (--text-templates {own}; Python: text_templates={own!r}), or replace "
            "--text-bank with --text-encoder SPEC naming the encoder that built it (Python: text=SPEC)"
        ) from None


def predict_batch(
    model: Any,
    items: Sequence[EvalItem],
    embed: PromptEmbedder,
    protocol: Protocol,
    *,
    device: str | torch.device | None = None,
    dtype: str = DEFAULT_DTYPE,
    batch_size: int = 16,
) -> list[np.ndarray]:
    """Predicted labels ``(M,)`` (index into each item's ``part_names``; ``-1`` = a foreign part or no part)
    per item.

    Items sharing a candidate list go through :func:`patchalign3d.segment` together. Two protocol rules act on
    the point logits: under ``assign="membership_release"`` a point in no patch (all-zero logits) takes what the
    release predicts for it (:attr:`EvalItem.zero_logit_label`), and ``none_if_negative`` makes a point whose
    every logit is at most 0 no part, as Find3D's zero "no label" column does (it wins ties, being first).
    """
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
            pred = items[i].to_label[seg.labels]
            if protocol.assign == "membership_release":
                # exactly zero only for points in no patch: a covered point averages nonzero cosine logits
                pred[~seg.point_logits.any(axis=-1)] = items[i].zero_logit_label
            if protocol.none_if_negative:
                pred[seg.point_logits.max(axis=-1) <= 0] = -1
            out[i] = pred
    return out  # type: ignore[return-value]


def score_batch(metric: PartIoU, items: Sequence[EvalItem], preds: Sequence[np.ndarray]) -> None:
    """Add each item's IoU to ``metric``."""
    for it, pred in zip(items, preds):
        metric.update(
            torch.from_numpy(pred), torch.from_numpy(it.labels), len(it.part_names), it.category, it.index,
            scored=it.scored_parts,
        )


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))

