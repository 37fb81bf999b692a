"""Loading and exporting weights: the released file, this package's Lightning checkpoints, the Hub
(released files, and ``save_pretrained`` folders and repos: :mod:`patchalign3d.model.hub`).

:func:`load_model` reads its ``source`` once into a :class:`Source` (a folder, a file, a Hub repo or one
file of a Hub repo) and hands it to the one loader of that kind. Configs and strict weight loading come
from :mod:`patchalign3d.model.config`, which this module, the Hub mixin and the network all sit above.

The released file is ``{"model": encoder_state, "proj": {"proj.weight", "proj.bias"}, "temp": {"log_scale"}}``
(REFERENCE section 3). Files are read with ``torch.load(weights_only=True)``: a pickle from the internet can
run code, so anything that needs full unpickling is refused unless the caller passes ``trust_pickle=True``.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError

from patchalign3d.errors import CheckpointError, WeightsUnavailableError
from patchalign3d.file_kind import check_checkpoint_file
from patchalign3d.model.config import (
    CONFIG_NAME,
    PatchAlign3DConfig,
    config_from_state,
    is_hub_config,
    load_strict,
)
from patchalign3d.model.patchalign3d import PatchAlign3D

DEFAULT_REPO = "patchalign3d/patchalign3d-encoder"
DEFAULT_FILENAME = "patchalign3d.pt"
#: Key under which this package's Lightning checkpoints describe themselves.
LIGHTNING_KEY = "patchalign3d"
#: Terminal colour codes PyTorch puts in its messages (kept out of one-line errors).
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def safe_load(path: str | os.PathLike, *, trust_pickle: bool = False) -> Any:
    """``torch.load`` on the CPU that refuses arbitrary pickles unless ``trust_pickle``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    check_checkpoint_file(path)  # a file that is no checkpoint never reaches the unpickler
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust_pickle:
            raise CheckpointError(
                f"{path} needs full unpickling, which can run arbitrary code; it was refused. "
                "If you trust where this file came from, pass trust_pickle=True "
                f"(--trust-pickle on the command line). Details: {_ANSI.sub('', str(err).splitlines()[0])}"
            ) from None
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {err}") from err


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


@dataclass(frozen=True)
class Source:
    """What :func:`load_model`'s ``source`` names, read once.

    ``kind``: ``"folder"`` (a ``save_pretrained`` folder at ``path``), ``"file"`` (a ``.pt``/``.ckpt`` at
    ``path``), ``"repo"`` (a whole Hub repo ``repo_id``) or ``"repo_file"`` (``filename`` in ``repo_id``).
    """

    kind: Literal["folder", "file", "repo", "repo_file"]
    path: Path | None = None
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None


def parse_source(source: str | os.PathLike | None) -> Source:
    """A local path, ``"owner/name[@revision]"``, ``"hf://owner/name/file.pt[@revision]"`` or ``None`` (the
    default repo) -> :class:`Source`. Raises ``FileNotFoundError`` for anything else."""
    if source is None:
        return Source("repo", repo_id=DEFAULT_REPO)
    path = Path(source).expanduser()
    if path.exists():
        return Source("folder" if path.is_dir() else "file", path=path)
    text = str(source)
    one_file = text.startswith("hf://") and text.count("/") > 3
    text, _, revision = text.removeprefix("hf://").partition("@")
    parts = text.split("/")
    if one_file:
        return Source("repo_file", repo_id="/".join(parts[:2]), filename="/".join(parts[2:]), revision=revision or None)
    if len(parts) == 2 and all(parts) and not text.endswith((".pt", ".ckpt", ".pth")):
        return Source("repo", repo_id=text, revision=revision or None)
    raise FileNotFoundError(f"no checkpoint at {source!r} (not a file or folder, nor a Hugging Face repo id 'owner/name')")


def _repo_has_pretrained_layout(repo_id: str, revision: str | None) -> bool:
    """Whether the repo holds ``save_pretrained`` files (this package's config.json) rather than a released .pt.

    Any failure here (no such file, offline and not cached) answers False: the released file is tried next,
    and its download names the problem.
    """
    try:
        config = Path(hf_hub_download(repo_id, CONFIG_NAME, revision=revision))
        return is_hub_config(json.loads(config.read_text()))
    except Exception:
        return False


def _local_file(source: Source) -> Path:
    """The checkpoint file ``source`` names, downloaded when it is on the Hub (a whole repo: its released .pt)."""
    if source.kind in ("folder", "file"):
        return source.path
    return _hub_download(source.repo_id, source.filename or DEFAULT_FILENAME, source.revision)


def resolve_source(source: str | os.PathLike | None) -> Path:
    """A local file for ``source``: a path, ``"owner/repo"``, ``"hf://owner/repo/file.pt"`` or ``None`` (default)."""
    return _local_file(parse_source(source))


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
    src = parse_source(source)
    if src.kind == "folder":
        model = PatchAlign3D.from_pretrained(src.path, **overrides)
    elif src.kind == "repo" and _repo_has_pretrained_layout(src.repo_id, src.revision):
        model = PatchAlign3D.from_pretrained(src.repo_id, revision=src.revision, **overrides)
    else:
        model = _load_file(_local_file(src), trust_pickle, overrides)
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
