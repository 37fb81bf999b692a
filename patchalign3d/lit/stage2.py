"""Stage 2: align patch embeddings with text embeddings of part names.

The encoder starts from a stage-1 checkpoint (``init_from``) and is frozen except a configurable set of
parameters (paper: the last block and the final norm; release: also ``reduce_dim`` and the class token and
position). A new linear head maps patch tokens to the text width. Every patch is scored against the texts
of the batch (the union of its shapes' part names, ``negatives="batch"``) or of its own shape only
(``negatives="shape"``, as released), with fractional labels ``y_ij`` = fraction of patch ``i``'s members
labelled ``j``; the loss is the paper's SigLIP loss (learnable scale and bias) or the release's
``pos_weight``-balanced BCE (learnable scale only).

Text embeddings come from a :class:`~patchalign3d.text.TextBank` made once per run in ``setup``: either a
given bank file, or built on global rank 0 from the store's vocabulary, written next to the run's outputs,
and read by the other ranks after a barrier. Nothing is encoded during training steps.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric

from patchalign3d.errors import CheckpointError
from patchalign3d.losses import (
    patch_accuracy,
    patch_label_fractions,
    release_bce_loss,
    shapes_with_texts,
    siglip_loss,
)
from patchalign3d.model.patchalign3d import MAX_LOGIT_SCALE, RELEASE_TEMPERATURE
from patchalign3d.text import TextBank, get_text_encoder
from patchalign3d.text.bank import MissingPartNamesError

from .errors import TrainingSetupError
from .stage1 import Schedule, _PatchAlignModule, build_model

__all__ = ["DEFAULT_NEGATIVES", "TRAINABLE_PRESETS", "Stage2Module", "resolve_trainable"]

# Frozen modules are in eval mode on purpose (see Stage2Module); Lightning's generic hint about it is noise.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

#: Trainable encoder parameters, as state-dict prefixes; ``blocks.-k`` is the k-th block from the end.
TRAINABLE_PRESETS: dict[str, tuple[str, ...]] = {
    "paper": ("blocks.-1", "norm"),
    "release": ("blocks.-1", "norm", "reduce_dim", "cls_token", "cls_pos"),
    "last2": ("blocks.-2", "blocks.-1", "norm"),
    "all": ("",),
}
#: Config fields that decide the encoder's weights (must agree with the ``init_from`` checkpoint).
_WEIGHT_FIELDS = ("embed_dim", "depth", "num_heads", "mlp_ratio", "tokenizer_dim", "tokenizer_hidden", "pos_hidden",
                  "use_cls_token")
_BLOCK = re.compile(r"^blocks\.(-?\d+)$")

Loss = Literal["siglip", "release"]
Negatives = Literal["batch", "shape"]
#: What each loss scores a shape against when ``negatives`` is not set. The release scores every shape against
#: its own part names only (``K - 1`` weighting). SigLIP keeps the batch's names: on the demo's validation split
#: batch and shape were within seed noise (78.7 vs 78.3 mIoU over two seeds; BENCHMARKS.md), and batch
#: negatives are SigLIP's own rule.
DEFAULT_NEGATIVES: dict[str, Negatives] = {"release": "shape", "siglip": "batch"}


def resolve_trainable(spec: str | list[str], encoder: nn.Module, depth: int) -> list[str]:
    """Encoder parameter names to train, from a preset name or a list of prefixes.

    Prefixes are encoder state-dict prefixes (``"norm"``, ``"reduce_dim"``, ``"encoder"`` for the tokenizer,
    ``"blocks.blocks.11"``); ``"blocks.i"`` is block ``i`` and negative ``i`` counts from the end.
    """
    if isinstance(spec, str):
        if spec not in TRAINABLE_PRESETS:
            raise ValueError(f"unknown trainable preset {spec!r}; expected one of {sorted(TRAINABLE_PRESETS)} or a list")
        prefixes = list(TRAINABLE_PRESETS[spec])
    else:
        prefixes = list(spec)
    names = [n for n, _ in encoder.named_parameters()]
    chosen: set[str] = set()
    for prefix in prefixes:
        if m := _BLOCK.match(prefix):
            i = int(m.group(1))
            if not -depth <= i < depth:
                raise ValueError(f"trainable entry {prefix!r}: the encoder has {depth} blocks")
            prefix = f"blocks.blocks.{i % depth}"
        hits = {n for n in names if not prefix or n == prefix or n.startswith(prefix + ".")}
        if not hits:
            raise ValueError(f"trainable entry {prefix!r} matches no encoder parameter")
        chosen |= hits
    return sorted(chosen)


def _top_frozen_modules(module: nn.Module) -> list[nn.Module]:
    """Largest sub-modules whose parameters are all frozen (they are kept in eval mode)."""
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        return [module]
    return [m for child in module.children() for m in _top_frozen_modules(child)]


class Stage2Module(_PatchAlignModule):
    """Patch-text alignment with fractional labels.

    Args:
        arch, arch_overrides: architecture (as in stage 1; must match the ``init_from`` checkpoint).
        text_dim: width of the text embeddings (1280 for OpenCLIP ViT-bigG-14, 384 for MiniLM).
        init_from: a stage-1 checkpoint (or any file ``load_model`` reads) whose encoder weights start this
            stage. Use ``--ckpt_path`` only to resume a stage-2 run.
        trainable: encoder parameters to train: ``"paper"`` (last block + final norm), ``"release"`` (plus
            ``reduce_dim``, ``cls_token``, ``cls_pos``), ``"last2"``, ``"all"``, or a list of prefixes (see
            :func:`resolve_trainable`). The head and the logit scale (and bias) always train. Frozen modules
            stay in eval mode (BatchNorm statistics and drop-path untouched).
        loss: ``"siglip"`` (paper: ``s = cos / τ + b``, learnable τ and b) or ``"release"`` (BCE with
            ``pos_weight = max(1, K - 1)`` per shape, learnable scale, no bias).
        negatives: score each shape against all texts of the batch (``"batch"``) or only its own (``"shape"``);
            ``None`` takes the loss's own (:data:`DEFAULT_NEGATIVES`: ``shape`` for ``release``, as released).
            Shapes with nothing to be scored against are skipped and counted (``train/shapes_without_names``).
        init_scale: initial logit scale ``1/τ`` (default: 10 for siglip as in SigLIP, 1/0.07 for release);
            the scale is clamped at 100.
        init_bias: initial logit bias for siglip (default -10 as in SigLIP).
        text_encoder: spec for :func:`patchalign3d.text.get_text_encoder` used to build the bank.
        text_bank: an existing bank file covering the store's names (then nothing is encoded).
        text_cache_dir: embedding cache of the bank builder (default: the text package's cache).
        lr_encoder / lr_head: AdamW learning rates (paper 3e-4; release 1e-4 encoder, 5e-4 head and scale).
        weight_decay, betas, lr_schedule, warmup_steps, random_fps_start: as in stage 1 (no decay on the scale
            and bias).
    """

    stage = 2

    def __init__(
        self,
        arch: str = "base",
        arch_overrides: dict[str, Any] | None = None,
        text_dim: int = 1280,
        init_from: str | None = None,
        trainable: str | list[str] = "paper",
        loss: Loss = "siglip",
        negatives: Negatives | None = None,
        init_scale: float | None = None,
        init_bias: float | None = None,
        text_encoder: str = "openclip:ViT-bigG-14/laion2b_s39b_b160k",
        text_bank: str | None = None,
        text_cache_dir: str | None = None,
        lr_encoder: float = 3e-4,
        lr_head: float = 3e-4,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        lr_schedule: Schedule = "constant",
        warmup_steps: int = 0,
        random_fps_start: bool = True,
    ) -> None:
        super().__init__()
        if loss not in ("siglip", "release"):
            raise ValueError(f"unknown loss {loss!r}; expected 'siglip' or 'release'")
        if negatives not in ("batch", "shape", None):
            raise ValueError(f"unknown negatives {negatives!r}; expected 'batch', 'shape' or null (the loss's own)")
        if loss == "release" and init_bias is not None:
            raise ValueError("the release loss has no logit bias: leave init_bias unset")
        if text_dim < 1:
            raise ValueError(f"text_dim must be positive, got {text_dim}")
        self.save_hyperparameters()
        self.negatives: Negatives = negatives or DEFAULT_NEGATIVES[loss]
        self.model = build_model(arch, arch_overrides, text_dim=text_dim)
        if init_from is not None:
            self._load_encoder(init_from)

        scale = init_scale if init_scale is not None else (10.0 if loss == "siglip" else 1.0 / RELEASE_TEMPERATURE)
        if not 0 < scale <= MAX_LOGIT_SCALE:
            raise ValueError(f"init_scale must be in (0, {MAX_LOGIT_SCALE}], got {scale}")
        with torch.no_grad():
            self.model.log_scale.fill_(math.log(scale))
        self.logit_bias: nn.Parameter | None = None
        if loss == "siglip":
            self.logit_bias = nn.Parameter(torch.tensor(-10.0 if init_bias is None else float(init_bias)))

        depth = self.model.config.depth
        trainable_names = set(resolve_trainable(trainable, self.model.encoder, depth))
        for name, p in self.model.encoder.named_parameters():
            p.requires_grad_(name in trainable_names)
        self._frozen = _top_frozen_modules(self.model.encoder)  # a plain list: not registered as sub-modules
        self._frozen_to_eval()

        self.bank: TextBank | None = None
        self.val_loss, self.val_acc = MeanMetric(), MeanMetric()
        self._warned_without_names = False

    # -- initialisation ------------------------------------------------------------------------------
    def _load_encoder(self, path: str) -> None:
        from patchalign3d.model.checkpoint import load_model

        try:
            source = load_model(path)
        except (OSError, CheckpointError) as err:
            raise TrainingSetupError(
                f"init_from={path!r}: {err}; init_from names the stage-1 checkpoint to start from (e.g. "
                "outputs/stage1/checkpoints/last.ckpt once stage 1 ran)"
            ) from err
        mine, theirs = self.model.config.to_dict(), source.config.to_dict()
        diff = {k: (theirs[k], mine[k]) for k in _WEIGHT_FIELDS if theirs[k] != mine[k]}
        if diff:
            desc = ", ".join(f"{k}: checkpoint {a} vs module {b}" for k, (a, b) in diff.items())
            raise ValueError(f"init_from={path!r} has another architecture ({desc}); set arch/arch_overrides to match")
        self.model.encoder.load_state_dict(source.encoder.state_dict())

    def _frozen_to_eval(self) -> None:
        for module in self._frozen:  # frozen BatchNorm must not update its statistics
            module.eval()

    def train(self, mode: bool = True) -> Stage2Module:
        # Lightning (and DDP) switch modes with .train(); frozen modules stay in eval mode whatever is asked.
        super().train(mode)
        self._frozen_to_eval()
        return self

    def on_train_epoch_start(self) -> None:
        self._frozen_to_eval()  # also if someone set modes on sub-modules directly

    # -- text bank -------------------------------------------------------------------------------------
    def _vocabulary(self) -> list[str] | None:
        dm = getattr(self.trainer, "datamodule", None)
        return dm.part_names() if dm is not None and hasattr(dm, "part_names") else None

    def setup(self, stage: str) -> None:
        if self.bank is None:
            self.bank = self._make_bank()
        if self.bank.dim != self.hparams.text_dim:
            raise ValueError(
                f"the text bank holds {self.bank.dim}-d embeddings but the head is {self.hparams.text_dim}-d: "
                f"set model.init_args.text_dim={self.bank.dim}"
            )

    def _make_bank(self) -> TextBank:
        hp, strategy = self.hparams, self.trainer.strategy
        if hp.text_bank:  # a given bank: every rank reads it, nothing is written
            bank = TextBank.load(hp.text_bank)
            vocab = self._vocabulary()
            missing = [n for n in vocab or [] if n not in bank]
            if missing:
                raise MissingPartNamesError(missing, len(bank))
            return bank
        path = os.path.join(self.trainer.default_root_dir, "text_bank.pt")
        if strategy.is_global_zero:
            vocab = self._vocabulary()
            if not vocab:
                raise ValueError("no part names to encode: use a datamodule with part_names() or pass text_bank")
            if not self._reusable(path, vocab):  # a resumed run finds its bank and loads no text encoder
                encoder = get_text_encoder(hp.text_encoder, device=strategy.root_device)
                bank = TextBank.build(vocab, encoder, cache_dir=hp.text_cache_dir)
                bank.meta["encoder_spec"] = hp.text_encoder
                bank.save(path)
                del encoder
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        strategy.barrier("patchalign3d_text_bank")
        return TextBank.load(path)

    def _reusable(self, path: str, vocab: list[str]) -> bool:
        if not os.path.isfile(path):
            return False
        try:
            bank = TextBank.load(path)
        except ValueError:
            return False
        return bank.meta.get("encoder_spec") == self.hparams.text_encoder and all(n in bank for n in vocab)

    def text_embeddings(self, texts: list[str]) -> Tensor:
        """``(T, D)`` bank embeddings of the batch's texts, on this module's device."""
        if self.bank is None:
            raise RuntimeError("the text bank is made in setup(); run through a Trainer or call setup() first")
        return self.bank.lookup(texts).to(self.device, non_blocking=True)

    def _checkpoint_entry(self) -> dict[str, Any]:
        return {**super()._checkpoint_entry(), "text": dict(self.bank.meta) if self.bank is not None else None}

    # -- steps ---------------------------------------------------------------------------------------------
    def forward(self, points: Tensor, texts: list[str]) -> tuple[Tensor, Any]:
        """``(B, N, 3)`` points and T texts -> ``((B, G, T)`` logits ``cos / τ (+ b)``, patches)."""
        patches = self._group(points)
        emb = self.model.embed_patches(self.model.encode_patches(patches))
        # Logits in float32 even under bf16 autocast: at scales up to 100, bf16 would round them by ~0.4.
        with torch.autocast(device_type=emb.device.type, enabled=False):
            if texts:
                logits = self.model.patch_logits(emb.float(), self.text_embeddings(texts), temperature=None)
            else:  # a batch without a single part name: (B, G, 0), still tied to every trainable parameter
                logits = emb.float()[..., :0] * self.model.logit_scale()
            if self.logit_bias is not None:
                logits = logits + self.logit_bias
        return logits, patches

    def _shared_step(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss, per-patch hits, (B,) bool shapes skipped for want of texts)``."""
        if "labels" not in batch:
            raise KeyError("stage 2 needs part labels in the batch: set data.init_args.with_labels=true")
        logits, patches = self(batch["points"], batch["texts"])
        targets = patch_label_fractions(batch["labels"], patches.member_idx)
        mask = batch["text_mask"] if self.negatives == "shape" else None
        loss_fn = siglip_loss if self.hparams.loss == "siglip" else release_bce_loss
        loss = loss_fn(logits, targets, mask)
        skipped = ~shapes_with_texts(mask, logits)
        return loss, patch_accuracy(logits.detach(), targets, batch["text_mask"]), skipped

    def _count_skipped(self, skipped: Tensor, uids: list[str], split: str) -> None:
        # Summed over the epoch (and ranks): how many shapes taught nothing because they carry no part name.
        self.log(f"{split}/shapes_without_names", skipped.sum().float(), reduce_fx="sum", on_step=False,
                 on_epoch=True, batch_size=len(uids), sync_dist=True)  # fmt: skip
        if skipped.any() and not self._warned_without_names:
            self._warned_without_names = True
            first = uids[int(skipped.nonzero()[0])]
            rank_zero_warn(
                f"stage 2 skips shapes with no part names to be scored against (first: {first!r}); their number "
                f"is logged as {split}/shapes_without_names"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss, hits, skipped = self._shared_step(batch)
        bs = batch["points"].shape[0]
        self._count_skipped(skipped, batch["uid"], "train")
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/patch_acc", hits.mean() if hits.numel() else hits.new_zeros(()), batch_size=bs)
        self.log("train/logit_scale", self.model.logit_scale().detach(), batch_size=bs)
        if self.logit_bias is not None:
            self.log("train/logit_bias", self.logit_bias.detach(), batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, hits, skipped = self._shared_step(batch)
        bs = batch["points"].shape[0]
        self._count_skipped(skipped, batch["uid"], "val")
        self.val_loss.update(loss, bs)
        if hits.numel():
            self.val_acc.update(hits)
        self.log("val/loss", self.val_loss, prog_bar=True, batch_size=bs)
        self.log("val/patch_acc", self.val_acc, prog_bar=True, batch_size=bs)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        loss, hits, _ = self._shared_step(batch)
        bs = batch["points"].shape[0]
        acc = hits.mean() if hits.numel() else hits.new_zeros(())
        self.log_dict({"test/loss": loss, "test/patch_acc": acc}, batch_size=bs, sync_dist=True)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        logits, patches = self(batch["points"], batch["texts"])
        return {"uid": batch["uid"], "texts": batch["texts"], "text_mask": batch["text_mask"],
                "centers": patches.centers, "patch_logits": logits}

    def _param_groups(self) -> list[dict[str, Any]]:
        hp = self.hparams
        scalars = [self.model.log_scale] + ([self.logit_bias] if self.logit_bias is not None else [])
        return [
            {"params": [p for p in self.model.encoder.parameters() if p.requires_grad], "lr": hp.lr_encoder},
            {"params": list(self.model.proj.parameters()), "lr": hp.lr_head},
            {"params": scalars, "lr": hp.lr_head, "weight_decay": 0.0},  # decay would pull the scale to 1
        ]
