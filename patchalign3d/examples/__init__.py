"""Small shapes shipped with the package (procedural, made by ``data_engine.synthetic``; y-up)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def available_examples() -> list[str]:
    """Names accepted by :func:`example_path` (and by ``patchalign3d segment example:NAME``)."""
    return sorted(p.stem for p in _HERE.glob("*.ply"))


def example_path(name: str) -> Path:
    """Path of a bundled example mesh, e.g. ``example_path("chair")``."""
    path = _HERE / f"{name}.ply"
    if not path.is_file():
        raise FileNotFoundError(f"no bundled example {name!r}; available: {', '.join(available_examples())}")
    return path
