"""Benchmark evaluation as a Lightning ``test`` run, for many GPUs or nodes.

``test_step`` runs the same per-batch code as :func:`patchalign3d.evaluation.evaluate`
(:func:`~patchalign3d.evaluation.scoring.predict_batch`, :func:`~patchalign3d.evaluation.scoring.score_batch`);
the :class:`~patchalign3d.evaluation.metrics.PartIoU` metric gathers every process's shapes (dropping the
duplicates a distributed sampler pads with) before reducing, so the figures equal a single-process run's::

    data = EvalDataset(build_dataset("shapenetpart", root), protocol)
    module = EvaluationModule(model, data, protocol, text=bank)
    trainer = lightning.Trainer(accelerator="gpu", devices=8, strategy="ddp")
    trainer.test(module, dataloaders=make_dataloader(data, batch_size=16, workers=4))
    module.summary.miou, module.summary.ciou
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from patchalign3d.evaluation.averaging import PartSlipAverage, partslip_average, release_batch_ciou
from patchalign3d.evaluation.dataset import EvalDataset, EvalItem
from patchalign3d.evaluation.metrics import IoUSummary, PartIoU, default_unlabelled
from patchalign3d.evaluation.protocols import Protocol
from patchalign3d.evaluation.scoring import PromptEmbedder, predict_batch, score_batch
from patchalign3d.precision import DEFAULT_DTYPE

__all__ = ["EvaluationModule"]


class EvaluationModule(L.LightningModule):
    """Wraps a :class:`~patchalign3d.PatchAlign3D` for ``Trainer.test`` on an :class:`EvalDataset`.

    Args:
        model: the network (moved to each process's device by Lightning).
        data: the evaluation dataset (its categories fix the metric's category order on every process).
        protocol: the protocol the dataset was built with.
        text: as for :class:`~patchalign3d.evaluation.scoring.PromptEmbedder`.
        batch_size: clouds per forward pass inside :func:`patchalign3d.segment`.
        dtype: ``"auto"``, ``"float32"`` or ``"bfloat16"`` (as for :func:`patchalign3d.segment`).

    After ``trainer.test`` the reduced figures are in ``self.summary`` (and PartSLIP's part-first average in
    ``self.partslip``), logged as ``test/miou``, ``test/ciou`` (by the protocol's ``ciou`` rule, in
    ``self.ciou``) and ``test/partslip_miou``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data: EvalDataset,
        protocol: Protocol,
        text: Any = None,
        batch_size: int = 16,
        dtype: str = DEFAULT_DTYPE,
    ) -> None:
        super().__init__()
        self.model = model
        self.protocol = protocol
        self.embed = PromptEmbedder(text, model, protocol.text_templates)
        self.metric = PartIoU(
            data.categories, protocol.metric, protocol.unlabelled or default_unlabelled(protocol.metric)
        )
        self.segment_batch_size = batch_size
        self.dtype_name = dtype
        self.summary: IoUSummary | None = None
        self.partslip: PartSlipAverage | None = None
        # category and part names by shape index (a plain list, so the module stays picklable for spawned DDP)
        self._shape_info = [(data.record(i).category, list(data.record(i).part_names)) for i in range(len(data))]
        self._release_positions = data.release_positions()
        self.ciou: float | None = None

    def transfer_batch_to_device(
        self, batch: list[EvalItem], device: torch.device, dataloader_idx: int
    ) -> list[EvalItem]:
        return batch  # numpy items; segment() moves what the model needs

    def test_step(self, batch: list[EvalItem], batch_idx: int) -> None:
        preds = predict_batch(
            self.model,
            batch,
            self.embed,
            self.protocol,
            device=self.device,
            dtype=self.dtype_name,
            batch_size=self.segment_batch_size,
        )
        score_batch(self.metric, batch, preds)

    def on_test_epoch_end(self) -> None:
        self.summary = self.metric.compute()  # synchronised across processes by torchmetrics
        self.partslip = partslip_average(self.summary, self._shape_info.__getitem__)
        s = self.summary
        self.ciou = s.ciou if self.protocol.ciou == "categories" else release_batch_ciou(
            s.shape_category, s.shape_iou, self._release_positions[s.shape_index], self.protocol.ciou_batch_size
        )
        self.log("test/miou", float(s.miou), rank_zero_only=True)
        self.log("test/ciou", float(self.ciou), rank_zero_only=True)
        self.log("test/partslip_miou", float(self.partslip.miou), rank_zero_only=True)
        self.metric.reset()
