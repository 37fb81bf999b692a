"""The model's configuration, and reading it back: from a ``config.json`` (``save_pretrained`` folders and
Hub repos) or off released-layout weights; plus :func:`load_strict` for the weights themselves.

Everything that reads a checkpoint builds on this module (the Hub mixin, :mod:`~patchalign3d.model.checkpoint`),
and it imports none of them: the network (:mod:`~patchalign3d.model.patchalign3d`) sits above it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from patchalign3d.errors import CheckpointError

#: Temperature used by the release at inference.
RELEASE_TEMPERATURE = 0.07
#: Ceiling of the learnable logit scale during training (as released).
MAX_LOGIT_SCALE = 100.0
#: Heads cannot be read off the weights; the released model (and all of ours) use 64-wide heads.
HEAD_DIM = 64

#: ``config.json`` of a ``save_pretrained`` folder: its format tag, version and file names.
CONFIG_FORMAT = "patchalign3d"
CONFIG_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: Top-level keys of config.json (the Hub mixin also hands them to ``_from_pretrained`` as keyword arguments).
CONFIG_KEYS = ("format", "format_version", "architecture", "grouping", "text_encoder", "temperature", "logit_scale")
GROUPING_KEYS = ("num_groups", "group_size", "fps_skip_near_origin")

_BLOCK_RE = re.compile(r"^blocks\.blocks\.(\d+)\.")


@dataclass
class PatchAlign3DConfig:
    """Architecture hyper-parameters. The defaults are the released model."""

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.1
    tokenizer_dim: int = 256
    tokenizer_hidden: tuple[int, int, int] = field(default=(128, 256, 512))
    pos_hidden: int = 128
    num_groups: int = 128
    group_size: int = 32
    use_cls_token: bool = True
    text_dim: int | None = 1280
    #: Reproduce the release's CUDA FPS, which never picks a point within sqrt(1e-3) of the origin.
    fps_skip_near_origin: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tokenizer_hidden"] = list(self.tokenizer_hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PatchAlign3DConfig:
        d = dict(d)
        if "tokenizer_hidden" in d:
            d["tokenizer_hidden"] = tuple(d["tokenizer_hidden"])
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown PatchAlign3D config keys: {sorted(unknown)}")
        return cls(**d)


# -- config.json (save_pretrained) ----------------------------------------------------------------------------
def is_hub_config(config: Any) -> bool:
    """Whether a parsed ``config.json`` was written by this package's ``save_pretrained``."""
    return isinstance(config, dict) and config.get("format") == CONFIG_FORMAT


def config_from_hub(config: dict[str, Any], where: str, **overrides: Any) -> PatchAlign3DConfig:
    """A :class:`PatchAlign3DConfig` from a ``config.json`` dict (``overrides`` win)."""
    if not is_hub_config(config):
        raise CheckpointError(f"{where}/{CONFIG_NAME} was not written by patchalign3d (no \"format\": \"{CONFIG_FORMAT}\")")
    if config.get("format_version", 0) > CONFIG_VERSION:
        raise CheckpointError(f"{where}/{CONFIG_NAME} has format_version {config['format_version']}; "
                              f"this patchalign3d reads up to {CONFIG_VERSION}: upgrade the package")
    try:
        return PatchAlign3DConfig.from_dict({**config["architecture"], **config["grouping"], **overrides})
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where}/{CONFIG_NAME}: {err}") from None


# -- released-layout weights ----------------------------------------------------------------------------------
def config_from_state(
    encoder_state: dict[str, torch.Tensor], proj_state: dict[str, torch.Tensor] | None = None, **overrides
) -> PatchAlign3DConfig:
    """Architecture read off released-layout weights (grouping settings and ``overrides`` from the caller)."""
    try:
        embed_dim, tokenizer_dim = encoder_state["reduce_dim.weight"].shape
        h1 = encoder_state["encoder.first_conv.0.weight"].shape[0]
        h2 = encoder_state["encoder.first_conv.3.weight"].shape[0]
        h3 = encoder_state["encoder.second_conv.0.weight"].shape[0]
        pos_hidden = encoder_state["pos_embed.0.weight"].shape[0]
        mlp_hidden = encoder_state["blocks.blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"not a PatchAlign3D encoder state: key {err.args[0]!r} is missing") from None
    depth = 1 + max(int(m.group(1)) for k in encoder_state if (m := _BLOCK_RE.match(k)))
    cfg = dict(
        embed_dim=embed_dim, depth=depth, num_heads=max(1, embed_dim // HEAD_DIM), mlp_ratio=mlp_hidden / embed_dim,
        tokenizer_dim=tokenizer_dim, tokenizer_hidden=(h1, h2, h3), pos_hidden=pos_hidden,
        use_cls_token="cls_token" in encoder_state,
        text_dim=proj_state["proj.weight"].shape[0] if proj_state else None,
    )
    cfg.update(overrides)
    return PatchAlign3DConfig.from_dict({**PatchAlign3DConfig().to_dict(), **cfg})


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state)``, or a :class:`CheckpointError` listing missing and unexpected keys."""
    result = module.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" ... (+{len(keys) - 8} more)" if len(keys) > 8 else "")
        parts = [f"missing keys: {show(missing)}" if missing else "", f"unexpected keys: {show(unexpected)}" if unexpected else ""]
        raise CheckpointError(f"{what} does not have the PatchAlign3D layout; " + "; ".join(p for p in parts if p))
