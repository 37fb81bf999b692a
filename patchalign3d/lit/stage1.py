"""Stage 1: distil 2D teacher features (back-projected onto points) into the patch encoder.

The encoder's patch tokens go through a linear head to the teacher width and are L2-normalised; the target of
each patch is the normalised mean of its member points' stored features, for the patches the model itself
draws this step (FPS from a random start during training). Loss: mean over patches of ``1 - cos``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanMetric

from patchalign3d.losses import cosine_distillation_loss, patch_feature_targets
from patchalign3d.model import PatchAlign3D, patchalign3d_base, patchalign3d_tiny

from .seeding import mixed_seed, run_seed

__all__ = ["ARCHS", "CHECKPOINT_KEY", "Stage1Module", "build_model", "lr_lambda"]

#: Architecture presets (``PatchAlign3DConfig`` fields can be overridden with ``arch_overrides``).
ARCHS = {"base": patchalign3d_base, "tiny": patchalign3d_tiny}
#: Key of the checkpoint entry that ``patchalign3d.model.checkpoint.load_model`` reads.
CHECKPOINT_KEY = "patchalign3d"
#: Key of the checkpoint entry holding the seed the run's per-step seeds derive from.
RUN_SEED_KEY = "patchalign3d_run_seed"

Schedule = Literal["constant", "cosine"]


def build_model(arch: str, arch_overrides: dict[str, Any] | None, text_dim: int | None) -> PatchAlign3D:
    """A :class:`PatchAlign3D` from a preset name, config overrides and the text-head width (None: no head)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    overrides = dict(arch_overrides or {})
    if "text_dim" in overrides:
        raise ValueError("set the text head width with the module's text_dim argument, not arch_overrides")
    return ARCHS[arch](**overrides, text_dim=text_dim)


def lr_lambda(schedule: Schedule, warmup_steps: int, total_steps: int | Callable[[], int]) -> Callable[[int], float]:
    """Multiplier of the base learning rates at each optimizer step: linear warm-up, then constant or cosine.

    ``total_steps`` may be a callable, asked only once the cosine decay starts.
    """
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown lr schedule {schedule!r}; expected 'constant' or 'cosine'")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")

    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant" or step == warmup_steps:
            return 1.0
        total = total_steps() if callable(total_steps) else total_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


class _PatchAlignModule(LightningModule):
    """What both stages share: the network as ``self.model``, optimiser set-up, the checkpoint entry, and the
    per-step seeding.

    Each training step starts by seeding torch with ``(run seed, global step, rank)``: the random FPS start and
    drop-path of step ``k`` are then the same in a run resumed at any step as in the uninterrupted run, whatever
    ran in between (validation, loader start-up, checkpoint writes). The run seed is ``seed_everything``'s and
    travels in the checkpoint.
    """

    stage: int
    model: PatchAlign3D
    _run_seed: int | None = None

    def on_fit_start(self) -> None:
        if self._run_seed is None:  # restored by on_load_checkpoint when resuming
            self._run_seed = run_seed()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        torch.manual_seed(mixed_seed(self._run_seed or 0, self.global_step, self.global_rank))

    def _param_groups(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        groups = [g for g in self._param_groups() if g["params"]]
        optimizer = torch.optim.AdamW(groups, weight_decay=hp.weight_decay, betas=tuple(hp.betas))
        total: list[int] = []

        def total_steps() -> int:
            # Asked lazily: reading estimated_stepping_batches inside configure_optimizers builds the train
            # loader before Lightning restores its state, and a resumed run would restart the epoch.
            if not total:
                total.append(int(self.trainer.estimated_stepping_batches))
            return total[0]

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(hp.lr_schedule, hp.warmup_steps, total_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _checkpoint_entry(self) -> dict[str, Any]:
        return {"stage": self.stage, "config": self.model.config.to_dict()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # What load_model() needs to rebuild the network without this class.
        checkpoint[CHECKPOINT_KEY] = self._checkpoint_entry()
        if self._run_seed is not None:
            checkpoint[RUN_SEED_KEY] = self._run_seed

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._run_seed = checkpoint.get(RUN_SEED_KEY, self._run_seed)
        stage = (checkpoint.get(CHECKPOINT_KEY) or {}).get("stage")
        if stage is not None and stage != self.stage:
            hint = " pass it as model.init_args.init_from instead of --ckpt_path" if self.stage == 2 else ""
            raise ValueError(
                f"this is a stage-{stage} checkpoint; --ckpt_path resumes a stage-{self.stage} run only;{hint}"
            )

    def _group(self, points: Tensor):
        # Random FPS start while training (a different patching each step); index 0 otherwise, as at inference.
        return self.model.group(points, random_start=self.training and self.hparams.random_fps_start)


class Stage1Module(_PatchAlignModule):
    """Encoder + linear head to the teacher width, trained with the cosine distillation loss.

    Args:
        arch: architecture preset, ``"base"`` (the released size) or ``"tiny"`` (CPU tests and demos).
        arch_overrides: ``PatchAlign3DConfig`` fields to change, e.g. ``{"num_groups": 64}``.
        teacher_dim: teacher feature width (768 for DINOv2-base), checked against the store; None takes the
            store's ``feature_dim`` (the head is then built in ``setup``).
        lr_encoder / lr_head: AdamW learning rates of the encoder and the head (paper: 3e-4 for both;
            release: 1e-4 / 5e-4).
        weight_decay, betas: AdamW settings (release: 0.05).
        lr_schedule, warmup_steps: per-step schedule of both learning rates.
        random_fps_start: start FPS at a random point during training.
    """

    stage = 1

    def __init__(
        self,
        arch: str = "base",
        arch_overrides: dict[str, Any] | None = None,
        teacher_dim: int | None = 768,
        lr_encoder: float = 3e-4,
        lr_head: float = 3e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        lr_schedule: Schedule = "constant",
        warmup_steps: int = 0,
        random_fps_start: bool = True,
    ) -> None:
        super().__init__()
        if teacher_dim is not None and teacher_dim < 1:
            raise ValueError(f"teacher_dim must be positive, got {teacher_dim}")
        self.save_hyperparameters()
        self.model = build_model(arch, arch_overrides, text_dim=None)
        # Stage 1 has no text side: the logit scale gets no gradient, so keep it out of DDP's bookkeeping.
        self.model.log_scale.requires_grad_(False)
        self.head = nn.Linear(self.model.config.embed_dim, teacher_dim) if teacher_dim else None
        self.val_loss, self.val_cos = MeanMetric(), MeanMetric()

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        dim = getattr(dm, "feature_dim", None)
        if self.head is None:
            if dim is None:
                raise ValueError("teacher_dim=None needs a datamodule with feature_dim; set teacher_dim explicitly")
            self.head = nn.Linear(self.model.config.embed_dim, dim)
            self.hparams["teacher_dim"] = dim  # saved with the checkpoint, so it rebuilds without the store
        elif dim is not None and dim != self.head.out_features:
            raise ValueError(
                f"the store holds {dim}-d teacher features but the head is {self.head.out_features}-d: "
                f"set model.init_args.teacher_dim={dim} (or null to follow the store)"
            )

    def forward(self, points: Tensor) -> tuple[Tensor, Any]:
        """``(B, N, 3)`` points -> ``((B, G, D)`` unit-norm predicted teacher features, patches)."""
        patches = self._group(points)
        pred = F.normalize(self.head(self.model.encode_patches(patches)), dim=-1)
        return pred, patches

    def _shared_step(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        if "features" not in batch:
            raise KeyError("stage 1 needs teacher features in the batch: set data.init_args.with_features=true")
        pred, patches = self(batch["points"])
        target = patch_feature_targets(batch["features"], patches.member_idx)
        return cosine_distillation_loss(pred, target)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, cos = self._shared_step(batch)
        bs = batch["points"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/cosine", cos, batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, cos = self._shared_step(batch)
        bs = batch["points"].shape[0]
        self.val_loss.update(loss, bs)
        self.val_cos.update(cos, bs)
        self.log("val/loss", self.val_loss, prog_bar=True, batch_size=bs)
        self.log("val/cosine", self.val_cos, batch_size=bs)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, cos = self._shared_step(batch)
        bs = batch["points"].shape[0]
        self.log_dict({"test/loss": loss, "test/cosine": cos}, batch_size=bs, sync_dist=True)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        pred, patches = self(batch["points"])
        return {"uid": batch["uid"], "centers": patches.centers, "features": pred}

    def _param_groups(self) -> list[dict[str, Any]]:
        hp = self.hparams
        return [
            {"params": [p for p in self.model.encoder.parameters() if p.requires_grad], "lr": hp.lr_encoder},
            {"params": list(self.head.parameters()), "lr": hp.lr_head},
        ]
