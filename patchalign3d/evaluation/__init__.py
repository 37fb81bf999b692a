"""Benchmark evaluation: IoU conventions, protocols and the runner behind ``patchalign3d evaluate``.

The Lightning wrapper (:mod:`patchalign3d.evaluation.lit`) is not imported here, so that the runner does not
pull in Lightning.
"""

from patchalign3d.evaluation.averaging import PartSlipAverage, partslip_average, release_batch_ciou
from patchalign3d.evaluation.cli import evaluate_main, load_config
from patchalign3d.evaluation.dataset import EvalDataset, EvalItem, make_dataloader
from patchalign3d.evaluation.metrics import (
    CONVENTIONS,
    IoUSummary,
    PartIoU,
    default_unlabelled,
    part_counts,
    part_ious,
    shape_iou,
)
from patchalign3d.evaluation.protocols import (
    PROMPT_TABLES,
    PromptTable,
    Protocol,
    benchmark_protocol,
    load_prompt_table,
)
from patchalign3d.evaluation.report import markdown_table
from patchalign3d.evaluation.runner import evaluate
from patchalign3d.evaluation.scoring import PromptEmbedder, predict_batch, score_batch

__all__ = [
    "PartSlipAverage",
    "partslip_average",
    "release_batch_ciou",
    "CONVENTIONS",
    "IoUSummary",
    "PartIoU",
    "default_unlabelled",
    "part_counts",
    "part_ious",
    "shape_iou",
    "PROMPT_TABLES",
    "PromptTable",
    "Protocol",
    "benchmark_protocol",
    "load_prompt_table",
    "EvalDataset",
    "EvalItem",
    "PromptEmbedder",
    "evaluate",
    "evaluate_main",
    "load_config",
    "make_dataloader",
    "markdown_table",
    "predict_batch",
    "score_batch",
]
