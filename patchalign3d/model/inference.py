"""bf16 inference copies of a PatchAlign3D: bf16 where the FLOPs are, float32 where labels are decided.

A copy made by :func:`inference_copy` holds bf16 weights for the layers that do nearly all the work (98 %
of the FLOPs): the tokenizer's per-point layers after the first, and the transformer blocks' linear layers.
It keeps in float32 everything that is cheap and decides labels: the input layer on the raw patch
coordinates, the position embedding of the centres, every normalisation, the residual stream between blocks,
the final norm, the text head and the logits. Layers simply run in the dtype of their weights
(:func:`patchalign3d.precision.to_weight_dtype`), so one code path serves float32 models, autocast training and the copies.

Holding bf16 weights (instead of autocast) casts them once, not at every call: autocast re-casts the 22 M
weights for every batch and casts activations around every op (5 % of a profiled bf16 batch of 32 on a CPU).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from patchalign3d.model.patchalign3d import PatchAlign3D


def low_precision_layers(model: PatchAlign3D) -> list[nn.Module]:
    """The layers an inference copy holds in low precision (see the module docstring)."""
    tokenizer = model.encoder.encoder
    layers: list[nn.Module] = [tokenizer.first_conv[3], tokenizer.second_conv[0], tokenizer.second_conv[3]]
    layers += [m for m in model.encoder.blocks.modules() if isinstance(m, nn.Linear)]
    return layers


def inference_copy(model: PatchAlign3D, dtype: torch.dtype, *, compile: bool = False) -> PatchAlign3D:
    """A frozen eval-mode copy of ``model`` for inference in ``dtype`` (``model`` itself for plain float32).

    The copy folds the tokenizer's BatchNorms into its convolutions (in float32, before any rounding) and
    casts :func:`low_precision_layers` to ``dtype``. With ``compile``, its encoder goes through
    ``torch.compile`` (weights frozen as constants, so the compiler can pre-pack them and fuse the elementwise
    work around the matmuls); the first call of each new input shape then compiles, which takes ~1 minute
    on a CPU. Its state-dict layout is not the release's: use it only to run inference, never to save or
    train.
    """
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"inference copies are float32 or bfloat16, got {dtype}")
    if dtype == torch.float32 and not compile:
        return model
    cached = model.__dict__.get("_inference_cache")
    memo = {id(cached): None} if cached is not None else {}  # never deep-copy an older cached copy
    out = copy.deepcopy(model, memo).eval().requires_grad_(False)
    out.__dict__.pop("_inference_cache", None)
    out.encoder.encoder.fold_batchnorm_()
    if dtype != torch.float32:
        for layer in low_precision_layers(out):
            layer.to(dtype)
    if compile:
        out.encoder.compile(options={"freezing": True})
    return out


def cached_inference_copy(model: PatchAlign3D, dtype: torch.dtype, *, compile: bool = False) -> PatchAlign3D:
    """:func:`inference_copy`, made once and reused until ``model``'s weights change.

    The copy is kept on ``model`` itself (outside its modules and state dict) and rebuilt whenever any
    parameter or buffer was replaced, moved, or modified in place (optimizer steps, ``load_state_dict``).
    """
    if dtype == torch.float32 and not compile:
        return model
    key = (dtype, compile, _weights_fingerprint(model))
    cached = model.__dict__.get("_inference_cache")
    if cached is not None and cached[0] == key:
        return cached[1]
    out = inference_copy(model, dtype, compile=compile)
    if key[-1] is not None:
        # Set through __dict__ so that nn.Module does not register the copy as a submodule of the model.
        model.__dict__["_inference_cache"] = (key, out)
    return out


def _weights_fingerprint(model: nn.Module) -> tuple | None:
    """Identity, place and in-place version of every parameter and buffer; None when untrackable."""
    fingerprint = []
    for t in (*model.parameters(), *model.buffers()):
        try:
            version = t._version
        except RuntimeError:  # an inference-mode tensor has no version counter: changes cannot be seen
            return None
        fingerprint.append((t.data_ptr(), t.device, version))
    return tuple(fingerprint)
