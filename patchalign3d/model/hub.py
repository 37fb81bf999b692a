"""Hugging Face Hub support: ``save_pretrained``, ``from_pretrained`` and ``push_to_hub`` for :class:`PatchAlign3D`.

Through ``huggingface_hub``'s ``PyTorchModelHubMixin``. A model folder (or Hub repo) holds
``model.safetensors`` (the whole model's state dict), ``config.json`` (architecture, grouping, text encoder,
temperature) and ``README.md`` (the model card). The released ``.pt`` format stays what
:func:`~patchalign3d.model.checkpoint.export_released` writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RepositoryNotFoundError
from safetensors.torch import load_file

from patchalign3d.errors import CheckpointError, WeightsUnavailableError
from patchalign3d.model.config import (
    CONFIG_FORMAT,
    CONFIG_KEYS,
    CONFIG_NAME,
    CONFIG_VERSION,
    GROUPING_KEYS,
    RELEASE_TEMPERATURE,
    WEIGHTS_NAME,
    config_from_hub,
    load_strict,
)
from patchalign3d.text import spec_from_meta

MODEL_CARD = """---
{{ card_data }}
---

# {{ model_name | default("PatchAlign3D", true) }}

Zero-shot 3D part segmentation from part names in plain language, in one feed-forward pass. A point-cloud
patch transformer (PatchAlign3D) turns a shape into 128 patch tokens aligned with text embeddings of part
names; every point, and for meshes every vertex and face, takes the best-matching name. No rendering at
inference. Loaded with the `patchalign3d` package.

## Usage

```python
import patchalign3d as pa

model = pa.PatchAlign3D.from_pretrained("{{ repo_id | default('PATH_OR_REPO_ID', true) }}")   # or pa.load_model(...)
seg = pa.segment_mesh("chair.glb", ["seat", "back", "leg", "arm"], model=model)
seg.save("chair_parts.glb")        # one named node per part, + chair_parts.json (per-face labels)
```

```bash
patchalign3d segment chair.glb --parts "seat,back,leg,arm" --checkpoint {{ repo_id | default('PATH_OR_REPO_ID', true) }} --out chair_parts.glb
```

Input: points or a mesh, y-up as in ShapeNet and Objaverse (`up_axis="z"` otherwise); they are centred and
scaled to the unit sphere. Part names are embedded with the text encoder below.

## This checkpoint

| | |
|---|---|
| encoder | {{ depth }} transformer blocks, width {{ embed_dim }}, {{ num_heads }} heads; {{ num_parameters }} parameters in all |
| grouping | {{ num_groups }} patches of {{ group_size }} points: farthest point sampling from point 0, k nearest neighbours |
| text head | {{ text_dim }}-d, text encoder `{{ text_encoder }}` |
| temperature | {{ temperature }} at inference (logits = cosine / temperature) |

`config.json` holds these settings; `model.safetensors` the weights.

## Training data

{{ training_data | default(default_training_data, true) }}

## Results

{{ results | default(default_results, true) }}

## Licence

MIT, as the PatchAlign3D release.
"""

DEFAULT_TRAINING_DATA = """What the PatchAlign3D paper describes for its released weights: stage 1 distils DINOv2 features,
back-projected onto the points from rendered views, into the patch tokens; stage 2 aligns the patch tokens
with OpenCLIP ViT-bigG-14 embeddings of part names (sigmoid loss, fractional labels). Data: the Find3D
data engine's output on Objaverse, 32,052 shapes (28,827 train / 3,225 val), 761 categories, over 2 million
part annotations (SAM masks on 10 renders per shape, named by a vision-language model). A checkpoint
trained otherwise says so here (`model_card_kwargs={"training_data": ...}`)."""

DEFAULT_RESULTS = """Zero-shot figures the PatchAlign3D paper reports for its released weights (mIoU / cIoU, %); they
describe this checkpoint only if it holds those weights (`model_card_kwargs={"results": ...}` otherwise):

| benchmark | protocol | PatchAlign3D | best earlier |
|---|---|---|---|
| ShapeNetPart | test split, category known, centroid + unit sphere, y/z swap | 56.9 / 53.1 | SATR 32.8 / 36.3 |
| PartNetE | PartSLIP's 45 categories, 1,906 test shapes | 41.4 / 42.2 | COPS 27.0 |
| FAUST (arm, head, leg, torso) | 100 scans, mean IoU over the 4 labels | 67.8 | COPS 30.4 |
| ScanObjectNN | real scans | 22.7 / 25.3 | COPS 18.8 |
| Objaverse (seen / unseen categories) | Find3D's benchmark | 37.5 / 35.6 | Find3D 28.9 / 34.6 |

Reproduce with `patchalign3d evaluate {shapenetpart,partnete,faust,objaverse} --root DATA --checkpoint ...`."""


def hub_config(model: Any) -> dict[str, Any]:
    """The ``config.json`` of ``model``: architecture, grouping, text encoder and temperature."""
    arch = model.config.to_dict()
    grouping = {k: arch.pop(k) for k in GROUPING_KEYS}
    meta = getattr(model, "text_meta", None)
    return {
        "format": CONFIG_FORMAT,
        "format_version": CONFIG_VERSION,
        "architecture": arch,
        "grouping": grouping,
        "text_encoder": {"spec": spec_from_meta(meta), "meta": meta} if meta else None,
        "temperature": RELEASE_TEMPERATURE,
        "logit_scale": float(model.log_scale.detach().exp()),
    }


def card_facts(model: Any) -> dict[str, Any]:
    """Values the model card template shows for ``model``."""
    c = model.config
    meta = getattr(model, "text_meta", None)
    config = hub_config(model)
    n = sum(p.numel() for p in model.parameters())
    return dict(
        depth=c.depth, embed_dim=c.embed_dim, num_heads=c.num_heads, num_groups=c.num_groups, group_size=c.group_size,
        num_parameters=f"{n / 1e6:.1f} M" if n >= 1e5 else f"{n:,}", text_dim=model.text_dim or "none (stage 1)",
        text_encoder=(config["text_encoder"] or {}).get("spec")
        or (str(meta) if meta else "not recorded; segment() then uses the release's openclip:ViT-bigG-14/laion2b_s39b_b160k"),
        temperature=config["temperature"], default_training_data=DEFAULT_TRAINING_DATA, default_results=DEFAULT_RESULTS,
    )


def _hub_error(source: str, err: Exception) -> Exception:
    if isinstance(err, HFValidationError):
        return FileNotFoundError(f"{source!r} is neither a model folder nor a Hugging Face repo id ('owner/name')")
    if isinstance(err, EntryNotFoundError) and not isinstance(err, FileNotFoundError):
        return CheckpointError(f"the Hugging Face repo {source} has no {CONFIG_NAME} or {WEIGHTS_NAME}: not saved with save_pretrained")
    if isinstance(err, RepositoryNotFoundError):
        return WeightsUnavailableError(f"no Hugging Face repo {source} (or it is private: log in with `hf auth login`)")
    return WeightsUnavailableError(
        f"{source} is not in the local Hugging Face cache and cannot be downloaded (offline, HF_HUB_OFFLINE=1, or "
        f"no network). Download it where you have a network (`hf download {source}`) or pass a local folder. "
        f"Details: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    )


class PatchAlign3DHubMixin(
    PyTorchModelHubMixin,
    library_name="patchalign3d",
    license="mit",
    tags=["3d", "point-cloud", "part-segmentation", "zero-shot", "patchalign3d"],
    model_card_template=MODEL_CARD,
):
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for :class:`PatchAlign3D` (see the module docstring)."""

    def _save_pretrained(self, save_directory: Path) -> None:
        super()._save_pretrained(save_directory)  # model.safetensors
        (save_directory / CONFIG_NAME).write_text(json.dumps(hub_config(self), indent=2))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any):
        """Load a model folder written by ``save_pretrained`` or a Hub repo id (``"owner/name"``).

        Keyword arguments: those of ``huggingface_hub``'s ``from_pretrained`` (``revision``, ``cache_dir``,
        ``local_files_only``, ``token``, ...), ``map_location``, and config fields to override.

        Raises:
            WeightsUnavailableError: a repo that is neither cached nor downloadable (offline).
            CheckpointError: a folder or repo without this package's ``config.json`` and ``model.safetensors``.
        """
        source = str(pretrained_model_name_or_path)
        local = Path(source).expanduser()
        if local.is_dir():
            missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (local / n).is_file()]
            if missing:
                raise CheckpointError(f"{local} is not a saved PatchAlign3D folder: {' and '.join(missing)} missing")
            return super().from_pretrained(local, **kwargs)
        try:
            return super().from_pretrained(source, **kwargs)
        except (CheckpointError, WeightsUnavailableError):
            raise
        except (OSError, HFValidationError) as err:  # the Hub's many error types: say which case this is
            raise _hub_error(source, err) from err

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: dict | None = None,
        map_location: str = "cpu",
        strict: bool = True,
        **overrides: Any,
    ):
        for key in CONFIG_KEYS:  # the mixin passes config.json's keys again as keyword arguments
            overrides.pop(key, None)
        if config is None:
            raise CheckpointError(f"{model_id} has no {CONFIG_NAME}: it was not saved with PatchAlign3D.save_pretrained")
        model = cls(config_from_hub(config, model_id, **overrides))
        if Path(model_id).is_dir():
            weights = Path(model_id) / WEIGHTS_NAME
        else:
            weights = hf_hub_download(model_id, WEIGHTS_NAME, revision=revision, cache_dir=cache_dir,
                                      force_download=force_download, token=token, local_files_only=local_files_only)
        state = load_file(str(weights), device=str(map_location))
        if strict:
            load_strict(model, state, f"{model_id}/{WEIGHTS_NAME}")
        else:
            model.load_state_dict(state, strict=False)
        text = config.get("text_encoder") or {}
        model.text_meta = text.get("meta")
        return model.eval()

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: dict | None = None, **kwargs: Any) -> str:
        """Upload ``model.safetensors``, ``config.json`` and the model card to ``repo_id`` (one commit)."""
        return super().push_to_hub(repo_id, model_card_kwargs={"repo_id": repo_id, **(model_card_kwargs or {})}, **kwargs)

    def generate_model_card(self, *args: Any, **kwargs: Any):
        return super().generate_model_card(*args, **{**card_facts(self), **kwargs})
