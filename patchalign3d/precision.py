"""Which floating-point precision to run in: names, what ``"auto"`` picks on this hardware, and the rule
that layers run in their weights' precision (:func:`to_weight_dtype`).

``"auto"`` means bfloat16 where the hardware runs bf16 matmuls natively and fast (CUDA devices of compute
capability 8.0 or newer; CPUs with AMX-BF16 or AVX-512-BF16), float32 everywhere else. The probe runs once
per device (a cached function); nothing else is stored.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import Tensor

#: The precisions accepted by ``segment``, ``evaluate``, the teacher and the CLIs.
DTYPE_NAMES = ("auto", "float32", "bfloat16")

#: The default precision of ``segment``, ``segment_mesh``, ``evaluate`` and the app: the one switch for all.
DEFAULT_DTYPE = "float32"

_ALIASES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}

#: CPU features that execute bf16 dot products natively (``torch.cpu.get_capabilities`` / ``/proc/cpuinfo``).
CPU_BF16_FEATURES = ("amx_bf16", "avx512_bf16")


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype | None:
    """``"float32"``/``"fp32"``/``torch.float32`` or the bf16 equivalents -> torch dtype; ``"auto"`` -> None.

    Raises:
        ValueError: anything else, naming the accepted values.
    """
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be float32 or bfloat16 (or 'auto'), got {dtype}")
        return dtype
    if dtype == "auto":
        return None
    if dtype not in _ALIASES:
        raise ValueError(f"dtype must be one of {DTYPE_NAMES}, got {dtype!r}")
    return _ALIASES[dtype]


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device = "cpu") -> torch.dtype:
    """The precision to run in on ``device``: ``dtype`` itself, or what ``"auto"`` picks there."""
    parsed = parse_dtype(dtype)
    if parsed is not None:
        return parsed
    return torch.bfloat16 if fast_bf16(device) else torch.float32


def fast_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` runs bf16 matmuls natively (so bf16 inference is markedly faster than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return _cuda_fast_bf16(index)
    if device.type == "cpu":
        return bool(cpu_bf16_features())
    return False


def training_precision(accelerator: str = "cpu") -> str:
    """The Lightning ``precision`` for training on ``accelerator`` (``cpu``, ``gpu``/``cuda``):
    ``bf16-mixed`` where bf16 is native (see :func:`fast_bf16`), else ``32-true``.

    Configs use it as ``precision: ${precision_auto:cpu}`` (an OmegaConf resolver of the training CLI).
    """
    if accelerator not in ("cpu", "gpu", "cuda"):
        raise ValueError(f"precision_auto takes the accelerator 'cpu' or 'gpu', got {accelerator!r}")
    device = "cpu" if accelerator == "cpu" else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if fast_bf16(device) else "32-true"


@functools.cache
def _cuda_fast_bf16(index: int) -> bool:
    # Ampere (8.0) and newer have bf16 tensor cores; older GPUs only emulate bf16.
    return torch.cuda.get_device_capability(index)[0] >= 8


@functools.cache
def cpu_bf16_features() -> tuple[str, ...]:
    """The bf16 matmul features of this CPU among :data:`CPU_BF16_FEATURES` (empty when it has none)."""
    caps = getattr(torch.cpu, "get_capabilities", None)  # recent PyTorch; older ones: read /proc/cpuinfo
    if caps is not None:
        found = caps()
        return tuple(f for f in CPU_BF16_FEATURES if found.get(f, False))
    return _cpuinfo_features(Path("/proc/cpuinfo"))


def _cpuinfo_features(path: Path) -> tuple[str, ...]:
    """bf16 features from the ``flags`` line of a Linux ``/proc/cpuinfo`` (none when it cannot be read)."""
    try:
        text = path.read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return tuple(f for f in CPU_BF16_FEATURES if f in flags)
    return ()


def to_weight_dtype(x: Tensor, weight: Tensor) -> Tensor:
    """``x`` cast down to a low-precision ``weight``'s dtype; unchanged next to float32 weights.

    It never casts up, so float32 models (also under autocast, which picks its own dtypes) run exactly as
    before; only the bf16 layers of an inference copy change what they receive.
    """
    if weight.dtype == torch.float32 or x.dtype == weight.dtype:
        return x
    return x.to(weight.dtype)
