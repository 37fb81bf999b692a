"""Loading and exporting weights: the released file, this package's Lightning checkpoints, the Hub
(released files, and ``save_pretrained`` folders and repos: :mod:`patchalign3d.model.hub`).

The released file is ``{"model": encoder_state, "proj": {"proj.weight", "proj.bias"}, "temp": {"log_scale"}}``
(REFERENCE section 3). Files are read with ``torch.load(weights_only=True)``: a pickle from the internet can
run code, so anything that needs full unpickling is refused unless the caller passes ``trust_pickle=True``.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from patchalign3d.errors import CheckpointError, WeightsUnavailableError
from patchalign3d.model.patchalign3d import PatchAlign3D, PatchAlign3DConfig

DEFAULT_REPO = "patchalign3d/patchalign3d-encoder"
DEFAULT_FILENAME = "patchalign3d.pt"
#: Key under which this package's Lightning checkpoints describe themselves.
LIGHTNING_KEY = "patchalign3d"
#: Heads cannot be read off the weights; the released model (and all of ours) use 64-wide heads.
HEAD_DIM = 64

_BLOCK_RE = re.compile(r"^blocks\.blocks\.(\d+)\.")


def safe_load(path: str | os.PathLike, *, trust_pickle: bool = False) -> Any:
    """``torch.load`` on the CPU that refuses arbitrary pickles unless ``trust_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust_pickle:
            raise CheckpointError(
                f"{path} needs full unpickling, which can run arbitrary code; it was refused. "
                "If you trust where this file came from, pass trust_pickle=True "
                f"(--trust-pickle on the command line). Details: {str(err).splitlines()[0]}"
            ) from None
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {err}") from err


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
    result = module.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" ... (+{len(keys) - 8} more)" if len(keys) > 8 else "")
        parts = [f"missing keys: {show(missing)}" if missing else "", f"unexpected keys: {show(unexpected)}" if unexpected else ""]
        raise CheckpointError(f"{what} does not have the PatchAlign3D layout; " + "; ".join(p for p in parts if p))


def model_from_released(obj: dict, *, config: PatchAlign3DConfig | None = None, **overrides) -> PatchAlign3D:
    """Build a model from a released-format dict ``{"model", "proj"?, "temp"?}``."""
    if not isinstance(obj, dict) or "model" not in obj:
        keys = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"released format needs a 'model' entry; found {keys}")
    encoder_state, proj = obj["model"], obj.get("proj")
    if proj is not None and set(proj) != {"proj.weight", "proj.bias"}:
        raise CheckpointError(f"'proj' must hold exactly proj.weight and proj.bias, found {sorted(proj)}")
    cfg = config or config_from_state(encoder_state, proj, **overrides)
    model = PatchAlign3D(cfg)
    load_strict(model.encoder, encoder_state, "the 'model' entry")
    if proj is not None:
        load_strict(model.proj, {"weight": proj["proj.weight"], "bias": proj["proj.bias"]}, "the 'proj' entry")
    temp = obj.get("temp") or {}
    if "log_scale" in temp:
        model.log_scale.data.copy_(torch.as_tensor(temp["log_scale"]).reshape(()))
    return model


def model_from_lightning(obj: dict) -> PatchAlign3D:
    """Build a model from a Lightning checkpoint of this package's stage 1 or stage 2."""
    info = obj.get(LIGHTNING_KEY)
    if not isinstance(info, dict) or "config" not in info:
        raise CheckpointError(
            "this Lightning checkpoint was not written by patchalign3d's training modules "
            f"(no '{LIGHTNING_KEY}' entry with a 'config')"
        )
    model = PatchAlign3D(PatchAlign3DConfig.from_dict(info["config"]))
    state = {k[len("model."):]: v for k, v in obj["state_dict"].items() if k.startswith("model.")}
    load_strict(model, state, f"the stage-{info.get('stage', '?')} checkpoint's model")
    model.text_meta = info.get("text")
    bias = obj["state_dict"].get("logit_bias")  # SigLIP's learned bias: keypoints read the model's probabilities
    if bias is not None:
        model.logit_bias = float(bias)
    return model


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".config.json")


def _hub_download(repo_id: str, filename: str, revision: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except LocalEntryNotFoundError as err:
        raise WeightsUnavailableError(
            f"{filename} from the Hugging Face repo {repo_id} is not cached and cannot be downloaded "
            "(offline, HF_HUB_OFFLINE=1, or no network). Download it where you have a network "
            f"(`hf download {repo_id} {filename}`) or pass a local path to load_model()."
        ) from err
    except Exception as err:
        raise WeightsUnavailableError(f"could not fetch {filename} from {repo_id}: {err}") from err


def _repo_and_revision(source: str | os.PathLike | None) -> tuple[str, str | None] | None:
    """``("owner/name", revision)`` when ``source`` names a whole Hub repo (``None``: the default one)."""
    if source is None:
        return DEFAULT_REPO, None
    text = str(source)
    if Path(text).expanduser().exists() or (text.startswith("hf://") and text.count("/") > 3):
        return None
    text = text.removeprefix("hf://")
    text, _, revision = text.partition("@")
    parts = text.split("/")
    if len(parts) == 2 and all(parts) and not text.endswith((".pt", ".ckpt", ".pth")):
        return text, revision or None
    return None


def _repo_has_pretrained_layout(repo_id: str, revision: str | None) -> bool:
    """Whether the repo holds ``save_pretrained`` files (this package's config.json) rather than a released .pt.

    Any failure here (no such file, offline and not cached) answers False: the released file is tried next,
    and its download names the problem.
    """
    from huggingface_hub import hf_hub_download

    from patchalign3d.model.hub import CONFIG_NAME, is_hub_config

    try:
        config = Path(hf_hub_download(repo_id, CONFIG_NAME, revision=revision))
        return is_hub_config(json.loads(config.read_text()))
    except Exception:
        return False


def resolve_source(source: str | os.PathLike | None) -> Path:
    """A local file for ``source``: a path, ``"owner/repo"``, ``"hf://owner/repo/file.pt"`` or ``None`` (default)."""
    path = Path(source).expanduser() if source is not None else None
    if path is not None and path.exists():
        return path
    repo = _repo_and_revision(source)
    if repo is not None:
        return _hub_download(repo[0], DEFAULT_FILENAME, repo[1])
    text = str(source)
    if text.startswith("hf://") and text.count("/") > 3:
        text, _, revision = text.removeprefix("hf://").partition("@")
        parts = text.split("/")
        return _hub_download("/".join(parts[:2]), "/".join(parts[2:]), revision or None)
    raise FileNotFoundError(f"no checkpoint at {source!r} (not a file or folder, nor a Hugging Face repo id 'owner/name')")


def load_model(
    source: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    trust_pickle: bool = False,
    **overrides,
) -> PatchAlign3D:
    """Load a PatchAlign3D model, in eval mode.

    Args:
        source: a released-format ``.pt``, a Lightning ``.ckpt`` of this package (either stage), a folder
            written by ``PatchAlign3D.save_pretrained``, a Hugging Face repo id (``"owner/name"``: its
            ``save_pretrained`` files when it has them, else its ``patchalign3d.pt``;
            ``"hf://owner/name/file.pt"`` for another file; ``@revision`` suffix allowed), or ``None`` for
            ``patchalign3d/patchalign3d-encoder``.
        device: where to put the model.
        trust_pickle: allow files that need full unpickling (only for sources you trust).
        overrides: config fields the weights cannot tell (``num_groups``, ``group_size``, ``num_heads``).

    Raises:
        WeightsUnavailableError: a Hub source that is not cached while offline.
        CheckpointError: a file of the wrong layout (the message lists missing and unexpected keys).
    """
    repo = _repo_and_revision(source)
    if source is not None and Path(source).expanduser().is_dir():
        model = PatchAlign3D.from_pretrained(Path(source).expanduser(), **overrides)
    elif repo is not None and _repo_has_pretrained_layout(*repo):
        model = PatchAlign3D.from_pretrained(repo[0], revision=repo[1], **overrides)
    else:
        model = _load_file(resolve_source(source), trust_pickle, overrides)
    return model.to(device).eval() if device is not None else model.eval()


def _load_file(path: Path, trust_pickle: bool, overrides: dict) -> PatchAlign3D:
    obj = safe_load(path, trust_pickle=trust_pickle)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    if "state_dict" in obj:
        return model_from_lightning(obj)
    side = _sidecar(path)
    saved = json.loads(side.read_text()) if side.is_file() else {}
    text_meta = saved.pop("text_meta", None)
    bias = saved.pop("logit_bias", None)
    model = model_from_released(obj, **{**saved, **overrides})
    model.text_meta = text_meta
    if bias is not None:
        model.logit_bias = float(bias)
    return model


def export_released(model: PatchAlign3D, path: str | os.PathLike, *, text_meta: dict | None = None) -> Path:
    """Write ``model`` in the released format (exactly ``model``/``proj``/``temp``).

    Settings the weights cannot tell (grouping, heads, FPS mode) go to a ``<file>.config.json`` sidecar, which
    :func:`load_model` reads when present; the ``.pt`` itself has exactly the released key layout.
    """
    if model.proj is None:
        raise ValueError("a stage-1 model has no text head; only stage-2 models can be exported to the released format")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "model": {k: v.detach().cpu().clone() for k, v in model.encoder.state_dict().items()},
        "proj": {f"proj.{k}": v.detach().cpu().clone() for k, v in model.proj.state_dict().items()},
        "temp": {"log_scale": model.log_scale.detach().cpu().clone()},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    c = model.config
    sidecar = {"num_groups": c.num_groups, "group_size": c.group_size, "num_heads": c.num_heads,
               "fps_skip_near_origin": c.fps_skip_near_origin}
    text_meta = text_meta if text_meta is not None else getattr(model, "text_meta", None)
    if text_meta:
        sidecar["text_meta"] = text_meta
    if getattr(model, "logit_bias", None) is not None:
        sidecar["logit_bias"] = float(model.logit_bias)
    _sidecar(path).write_text(json.dumps(sidecar, indent=1))
    return path


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, *, trust_pickle: bool = False) -> Path:
    """Convert a stage-2 Lightning checkpoint (or any loadable source) to the released format."""
    return export_released(load_model(checkpoint, trust_pickle=trust_pickle), out)
