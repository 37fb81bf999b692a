"""Training: the two LightningModules, the store DataModule and the LightningCLI entry point.

``Stage1Module`` distils teacher features into the patch encoder; ``Stage2Module`` aligns patch embeddings
with part-name text embeddings; ``StoreDataModule`` reads the LitData store written by ``data_engine``;
``ResumableCheckpoint`` writes checkpoints a preempted run resumes from exactly;
:func:`patchalign3d.lit.cli.cli_main` is what ``lightning fit -c configs/stage1.yaml`` runs.
"""

from patchalign3d.lit.checkpoint_callback import ResumableCheckpoint
from patchalign3d.lit.checkpoint_files import AtomicCheckpointIO
from patchalign3d.lit.datamodule import ShapeTransform, StoreDataModule, collate_shapes, read_store_info
from patchalign3d.lit.errors import TrainingSetupError
from patchalign3d.lit.stage1 import Stage1Module, build_model
from patchalign3d.lit.stage2 import TRAINABLE_PRESETS, Stage2Module, resolve_trainable

__all__ = [
    "TRAINABLE_PRESETS",
    "AtomicCheckpointIO",
    "ResumableCheckpoint",
    "ShapeTransform",
    "Stage1Module",
    "Stage2Module",
    "StoreDataModule",
    "TrainingSetupError",
    "build_model",
    "collate_shapes",
    "read_store_info",
    "resolve_trainable",
]
