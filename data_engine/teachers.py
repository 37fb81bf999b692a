"""2D teachers: timm ViTs by name, giving patch-grid features of rendered views.

Full-resolution feature maps are never built: ``sample_patch_grid`` reads the patch grid at the pixels the
caller needs, which equals upsampling the grid to the image and indexing it (the release's recipe) for the
memory of the points alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from patchalign3d.precision import dtype_name, resolve_dtype


class TeacherLoadError(RuntimeError):
    """A teacher's weights could not be loaded (offline without a cache, bad file, ...)."""


@dataclass
class TeacherConfig:
    """The 2D feature teacher.

    Attributes:
        name: timm model name with pretrained tag, e.g. ``vit_base_patch14_dinov2.lvd142m`` (DINOv2 sizes and
            ``_reg4_`` variants, ``vit_base_patch16_224.dino``, ``vit_base_patch16_clip_224.openai``, ...).
        pretrained: load the published weights through timm (Hugging Face cache). ``False`` gives random
            weights (always the same ones: seeded), for tests and benchmarks only; it is written into every
            record's metadata.
        weights_file: local checkpoint used instead of the download (timm ``pretrained_cfg_overlay``).
        img_size: square input size of the teacher (renders are resized to it; 518 for DINOv2 as released).
        interpolation: how the patch grid is read at pixel positions, ``bicubic`` (release) or ``bilinear``.
        batch_size: views per forward pass.
        device: ``auto`` (the worker's GPU when there is one, else CPU), or a torch device string.
        dtype: ``auto`` (bfloat16 autocast where the hardware runs bf16 natively: CUDA from Ampere on,
            CPUs with AMX or AVX-512-BF16; float32 elsewhere), ``float32``, ``bfloat16``, or ``float16``
            (CUDA only).
    """

    name: str = "vit_base_patch14_dinov2.lvd142m"
    pretrained: bool = True
    weights_file: str | None = None
    img_size: int = 518
    interpolation: str = "bicubic"
    batch_size: int = 10
    device: str = "auto"
    dtype: str = "auto"


def resolve_device(device: str) -> torch.device:
    """``auto`` means CUDA when available (the current device, which a worker may have set), else CPU."""
    if device == "auto":
        return (
            torch.device("cuda", torch.cuda.current_device())
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
    return torch.device(device)


def create_backbone(config: TeacherConfig) -> torch.nn.Module:
    """The timm model of ``config`` in eval mode, without a classifier head.

    Raises:
        ValueError: ``config.name`` is not a timm model.
        TeacherLoadError: pretrained weights were asked for and could not be loaded.
    """
    import timm

    if not timm.is_model(config.name):
        raise ValueError(f"unknown timm model {config.name!r} (see timm.list_models())")
    kwargs: dict = {"num_classes": 0, "img_size": config.img_size}
    if config.weights_file:
        kwargs["pretrained_cfg_overlay"] = {"file": config.weights_file}
    try:
        # Random weights come from a fixed seed, so every process and every run builds the same teacher.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = timm.create_model(config.name, pretrained=config.pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as err:  # HF offline/cache misses are OSErrors
        if not config.pretrained:
            raise
        raise TeacherLoadError(
            f"could not load pretrained weights for {config.name!r}: {type(err).__name__}: {err}\n"
            "The weights come from the Hugging Face hub through timm; when offline, populate the cache first "
            "(e.g. run once with network, or point HF_HOME at a cache that has them), or give "
            "teacher.weights_file. teacher.pretrained=false gives random weights (tests only)."
        ) from err
    return model.eval().requires_grad_(False)


class Teacher:
    """A timm ViT that maps rendered views to their patch-feature grids.

    Args:
        config: teacher settings.
        device: overrides ``config.device``.
    """

    def __init__(self, config: TeacherConfig | None = None, device: str | torch.device | None = None) -> None:
        import timm

        self.config = config or TeacherConfig()
        self.device = (
            resolve_device(str(device)) if device is not None else resolve_device(self.config.device)
        )
        self.compute_dtype = teacher_dtype(self.config.dtype, self.device)
        self.model = create_backbone(self.config).to(self.device)
        data_cfg = timm.data.resolve_model_data_config(self.model)
        self._mean = torch.tensor(data_cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(data_cfg["std"], device=self.device).view(1, 3, 1, 1)
        self.patch_size = int(self.model.patch_embed.patch_size[0])
        if self.config.img_size % self.patch_size:
            raise ValueError(
                f"img_size {self.config.img_size} is not a multiple of the patch size {self.patch_size}"
            )
        self.grid_size = self.config.img_size // self.patch_size

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def pretrained(self) -> bool:
        return bool(self.config.pretrained)

    @property
    def dtype(self) -> str:
        """The precision the teacher runs in (``float32``, or the autocast dtype)."""
        return dtype_name(self.compute_dtype)

    @property
    def feature_dim(self) -> int:
        return int(self.model.num_features)

    def preprocess(self, images: np.ndarray) -> Tensor:
        """``(V, H, W, 3)`` uint8 renders to ``(V, 3, S, S)`` normalised teacher input (S = ``img_size``)."""
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 255
        size = self.config.img_size
        if x.shape[-2:] != (size, size):
            # The whole square render is resized (the release resizes to 518; cropping a square is a no-op).
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        return (x.clamp(0, 1) - self._mean) / self._std

    @torch.inference_mode()
    def patch_features(self, images: np.ndarray) -> Tensor:
        """Patch-feature grids of rendered views.

        Args:
            images: ``(V, H, W, 3)`` uint8.

        Returns:
            ``(V, D, g, g)`` float32 on ``self.device`` (``g = img_size / patch``), prefix tokens dropped.
        """
        grids = []
        for start in range(0, len(images), self.config.batch_size):
            x = self.preprocess(images[start : start + self.config.batch_size])
            with self._autocast():
                tokens = self.model.forward_features(x)
            grids.append(self.tokens_to_grid(tokens.float()))
        return torch.cat(grids)

    def tokens_to_grid(self, tokens: Tensor) -> Tensor:
        """``(B, P + g*g, D)`` tokens to a ``(B, D, g, g)`` grid, dropping the model's ``P`` prefix tokens."""
        patches = tokens[:, self.model.num_prefix_tokens :]
        g = self.grid_size
        if patches.shape[1] != g * g:
            raise RuntimeError(f"expected {g * g} patch tokens from {self.name}, got {patches.shape[1]}")
        return patches.transpose(1, 2).reshape(tokens.shape[0], -1, g, g)

    def _autocast(self):
        if self.compute_dtype == torch.float32:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.compute_dtype)


def teacher_dtype(name: str, device: torch.device) -> torch.dtype:
    """The teacher's compute dtype for ``TeacherConfig.dtype`` on ``device`` (``auto`` asks the hardware).

    Raises:
        ValueError: an unknown name, or ``float16`` off CUDA (CPU autocast in float16 is slower than float32).
    """
    if name == "float16":
        if device.type != "cuda":
            raise ValueError(
                f"teacher.dtype=float16 needs a CUDA device (got {device}); use auto, bfloat16 or float32"
            )
        return torch.float16
    try:
        return resolve_dtype(name, device)
    except ValueError as err:
        raise ValueError(f"teacher.dtype: {err} (or float16 on CUDA)") from None


def sample_patch_grid(grids: Tensor, uv: Tensor, image_size: int, mode: str = "bicubic") -> Tensor:
    """Read patch grids at pixel positions of the image they came from.

    Sampling at pixel centres gives exactly what upsampling each grid to ``image_size`` (``F.interpolate``,
    ``align_corners=False``) and indexing those pixels gives, without the ``(V, D, R, R)`` map.

    Args:
        grids: ``(V, D, g, g)`` features.
        uv: ``(V, N, 2)`` continuous pixel coordinates (``u`` right, ``v`` down) in an ``R x R`` image.
        image_size: ``R``.
        mode: ``bicubic`` or ``bilinear``.

    Returns:
        ``(V, N, D)``.
    """
    if mode not in ("bicubic", "bilinear"):
        raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got {mode!r}")
    norm = uv.to(grids) / image_size * 2 - 1  # grid_sample's (x, y) in [-1, 1] spans the whole image
    out = F.grid_sample(grids, norm[:, None], mode=mode, padding_mode="border", align_corners=False)
    return out[:, :, 0].transpose(1, 2)
