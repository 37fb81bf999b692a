"""KeyPointDiffuser (Newbury et al. 2025) as a LightningModule over a frozen PatchAlign3D model.

``lightning fit -c configs/keypoints/diffuser.yaml`` trains it on a training store (any shapes: the keypoints
are learnt without labels); :meth:`KeyPointDiffuser.predict` gives the K keypoints of a new shape, in the same
slot order on every shape. Losses (the paper's, weights ours):

- **diffusion**: EDM's denoising loss of the decoder reconstructing ``recon_points`` of the shape from the
  keypoints and the auxiliary latent (the authors' code blocks this loss's gradient from reaching the encoder,
  ``detach_condition``; off by default here, so reconstruction shapes the keypoints, the paper's argument);
- **deformation consistency**: keypoints of a stretched, tapered and twisted copy equal the same deformation
  of the keypoints (:class:`~patchalign3d.keypoints.discover.augment.DeformDraw`);
- **FPS coverage**: Chamfer distance between the keypoints and K farthest-point samples of the shape;
- **surface**: each keypoint's squared distance to its nearest point (convex combinations may leave the
  surface);
- **KL** of the auxiliary latent to a standard normal.

Per-point features: the backbone's patch tokens spread to the points by inverse-distance weights over the 3
nearest patch centres, L2-normalised (what :func:`patchalign3d.api.point_features` gives as ``tokens``),
computed without gradient; the backbone stays frozen and in eval mode.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning import LightningModule
from torch import Tensor
from torchmetrics import MeanMetric

from patchalign3d.keypoints.discover.augment import DeformDraw, from_model_frame, model_frame
from patchalign3d.keypoints.discover.diffuser_net import (
    Denoiser,
    EDMPrecond,
    KeypointEncoder,
    chamfer,
    kl_to_standard,
)
from patchalign3d.keypoints.discover.embeddings import keypoint_names
from patchalign3d.keypoints.result import Keypoints
from patchalign3d.model.grouping import farthest_point_sample
from patchalign3d.model.patchalign3d import PatchAlign3D, PatchAlign3DConfig

# The frozen backbone is in eval mode on purpose; Lightning's generic hint about it is noise.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")


class KeyPointDiffuser(LightningModule):
    """Unsupervised keypoints that condition a diffusion decoder reconstructing the shape.

    Args:
        backbone: the frozen PatchAlign3D model (a checkpoint path or Hub id :func:`patchalign3d.load_model`
            reads). Its weights are saved in this module's checkpoints, which therefore stand alone.
        k: keypoints.
        width, heads, aux_dim: encoder size and auxiliary latent dimensions.
        decoder_width, decoder_depth: denoiser size.
        recon_points: points the decoder reconstructs per shape and step (the paper: 2048).
        sigma_data, p_mean, p_std: EDM's data scale and log-normal noise levels (authors: 0.3, -1.2, 1.2).
        detach_condition: block the diffusion loss's gradient from the encoder (the authors' code does).
        deform_strength: size of the random deformations.
        diffusion_weight, deform_weight, fps_weight, surface_weight, kl_weight: loss weights.
        lr, weight_decay: AdamW.
        backbone_config: filled in from the backbone (lets a checkpoint rebuild it when the file is gone).
    """

    def __init__(
        self,
        backbone: str | None = None,
        k: int = 10,
        width: int = 64,
        heads: int = 4,
        aux_dim: int = 5,
        decoder_width: int = 64,
        decoder_depth: int = 3,
        recon_points: int = 2048,
        sigma_data: float = 0.3,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        detach_condition: bool = False,
        deform_strength: float = 0.2,
        diffusion_weight: float = 1.0,
        deform_weight: float = 10.0,
        fps_weight: float = 10.0,
        surface_weight: float = 10.0,
        kl_weight: float = 1e-3,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        backbone_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if k < 1 or recon_points < 1:
            raise ValueError(f"k and recon_points must be >= 1, got {k} and {recon_points}")
        self.backbone = self._build_backbone(backbone, backbone_config)
        backbone_config = self.backbone.config.to_dict()
        self.save_hyperparameters()
        # LightningCLI saves the arguments it was given (backbone_config None), not this local: set it here so
        # that every checkpoint rebuilds its backbone when the backbone file is gone
        self.hparams["backbone_config"] = backbone_config
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.encoder = KeypointEncoder(self.backbone.config.embed_dim, k, width, heads, aux_dim)
        self.decoder = EDMPrecond(Denoiser(k, aux_dim, decoder_width, decoder_depth, heads), sigma_data)
        self.val_loss = MeanMetric()

    @staticmethod
    def _build_backbone(source: str | None, config: dict[str, Any] | None) -> PatchAlign3D:
        from patchalign3d.model.checkpoint import load_model

        if source is not None and (os.path.exists(source) or config is None):
            return load_model(source)
        if config is None:
            raise ValueError("KeyPointDiffuser needs a backbone: a PatchAlign3D checkpoint path (model.init_args.backbone)")
        # restored from a checkpoint whose backbone file is gone: the weights come with the state dict
        return PatchAlign3D(PatchAlign3DConfig.from_dict(config))

    def train(self, mode: bool = True) -> KeyPointDiffuser:
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm statistics and drop-path stay as trained
        return self

    # -- features, encoding ---------------------------------------------------------------------------------
    @torch.no_grad()
    def point_features(self, points: Tensor) -> Tensor:
        """``(B, N, 3)`` model-frame points -> ``(B, N, C)`` L2-normalised backbone tokens at every point."""
        patches = self.backbone.group(points.float())
        tokens = self.backbone.encode_patches(patches)
        return F.normalize(self.backbone.point_logits(points.float(), patches, tokens, "interpolate"), dim=-1)

    def encode(self, points: Tensor) -> dict[str, Tensor]:
        """``(B, N, 3)`` -> ``keypoints`` ``(B, K, 3)``, ``weights`` ``(B, K, N)``, ``aux_mean``, ``aux_logvar``."""
        keypoints, weights, mean, logvar = self.encoder(points, self.point_features(points))
        return {"keypoints": keypoints, "weights": weights, "aux_mean": mean, "aux_logvar": logvar}

    # -- losses -------------------------------------------------------------------------------------------------
    def losses(self, points: Tensor) -> dict[str, Tensor]:
        """Every loss term (unweighted) and ``loss`` (weighted sum) for ``(B, N, 3)`` model-frame points."""
        hp = self.hparams
        out = self.encode(points)
        kp, mean, logvar = out["keypoints"], out["aux_mean"], out["aux_logvar"]
        aux = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if self.training else mean
        b, n, _ = points.shape
        draw = DeformDraw.sample(b, points.device, strength=hp.deform_strength)
        deformed = self.encode(draw(points))["keypoints"]
        fps = torch.gather(points, 1, farthest_point_sample(points.detach(), min(hp.k, n)).to(points.device)
                           .unsqueeze(-1).expand(-1, -1, 3))
        recon = points if hp.recon_points >= n else points[:, torch.randperm(n, device=points.device)[: hp.recon_points]]
        cond_kp, cond_aux = (kp.detach(), aux.detach()) if hp.detach_condition else (kp, aux)
        terms = {
            "diffusion": self.decoder.loss(recon, cond_kp, cond_aux, p_mean=hp.p_mean, p_std=hp.p_std),
            "deform": F.mse_loss(deformed, draw(kp)),
            "fps": chamfer(kp, fps),
            "surface": (torch.cdist(kp, points) ** 2).min(dim=-1).values.mean(),
            "kl": kl_to_standard(mean, logvar),
        }
        terms["loss"] = (hp.diffusion_weight * terms["diffusion"] + hp.deform_weight * terms["deform"]
                         + hp.fps_weight * terms["fps"] + hp.surface_weight * terms["surface"]
                         + hp.kl_weight * terms["kl"])
        return terms

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        terms = self.losses(batch["points"])
        bs = batch["points"].shape[0]
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}": v for k, v in terms.items() if k != "loss"}, batch_size=bs)
        return terms["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        terms = self.losses(batch["points"])
        self.val_loss.update(terms["loss"], batch["points"].shape[0])
        self.log("val/loss", self.val_loss, prog_bar=True, batch_size=batch["points"].shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # -- inference -----------------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return keypoint_names(self.hparams.k)

    @torch.no_grad()
    def predict(self, shape: Any, *, num_points: int = 2048, seed: int = 0, up_axis: str = "y") -> Keypoints:
        """The K keypoints of a cloud, mesh or file (meshes sampled with ``num_points``, ``seed``), slot ``i``
        named ``kp{i}`` on every shape. ``positions`` are the convex combinations; ``indices`` their nearest
        points; ``field`` ``(N, K)`` the attention weights."""
        from patchalign3d.keypoints.shapes import as_shape

        was_training = self.training
        self.eval()
        points = as_shape(shape, num_points=num_points, seed=seed).points
        frame, centre, radius = model_frame(points, up_axis)
        device = next(self.encoder.parameters()).device
        out = self.encode(torch.from_numpy(frame)[None].to(device))
        self.train(was_training)
        kp = out["keypoints"][0].cpu().numpy()
        field = out["weights"][0].T.cpu().numpy()
        indices = ((frame[None] - kp[:, None]) ** 2).sum(-1).argmin(axis=1).astype(np.int64)
        labels = np.arange(self.hparams.k, dtype=np.int64)
        return Keypoints(names=self.names, points=points, field=field.astype(np.float32), indices=indices,
                         labels=labels, scores=field[indices, labels].astype(np.float32), mode="discover",
                         positions=from_model_frame(kp, centre, radius, up_axis),
                         info={"method": "diffuser", "k": int(self.hparams.k)})

    @torch.no_grad()
    def reconstruct(self, shape: Any, num_points: int = 2048, *, steps: int = 18, seed: int = 0,
                    up_axis: str = "y") -> np.ndarray:
        """``(num_points, 3)`` points the decoder draws from a shape's keypoints and latent (input frame)."""
        from patchalign3d.keypoints.shapes import as_shape

        self.eval()
        frame, centre, radius = model_frame(as_shape(shape, seed=seed).points, up_axis)
        device = next(self.encoder.parameters()).device
        out = self.encode(torch.from_numpy(frame)[None].to(device))
        gen = torch.Generator().manual_seed(seed)
        x = self.decoder.sample(out["keypoints"], out["aux_mean"], num_points, steps=steps, generator=gen)
        return from_model_frame(x[0].cpu().numpy(), centre, radius, up_axis)


def load_diffuser(path: str | os.PathLike, *, trust_pickle: bool = False) -> KeyPointDiffuser:
    """A trained :class:`KeyPointDiffuser` from its checkpoint (CPU), or a one-line error naming the file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a KeyPointDiffuser checkpoint (cut short, another kind of file, pickled
            objects refused without ``trust_pickle``).
    """
    from patchalign3d.file_kind import sniff_file_kind

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such diffuser checkpoint: {path}")
    kind = sniff_file_kind(path)
    if not kind.is_torch:  # never handed to the unpickler
        raise ValueError(f"{path} is not a KeyPointDiffuser checkpoint: it is {kind.what}")
    try:
        return KeyPointDiffuser.load_from_checkpoint(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as err:  # torch, pickle and Lightning each raise their own kinds for a bad file
        reason = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
        if "Weights only load failed" in str(err):
            reason = "it holds pickled objects beyond tensors; pass --trust-pickle if you trust its source"
        elif isinstance(err, KeyError):
            reason = f"no {err} entry: not a Lightning checkpoint of a KeyPointDiffuser"
        raise ValueError(f"{path} is not a KeyPointDiffuser checkpoint ({kind.what}): {reason}") from None
