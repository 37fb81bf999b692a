"""Read a ``.npy`` file that ``np.save`` wrote from a dict of arrays, without running code from the file.

``np.save(path, {"semantic_seg": a, ...})`` stores a 0-d object array whose payload is a pickle.
``np.load(..., allow_pickle=True)`` would unpickle it with every global importable, so a crafted file could run
anything. Here the header is parsed with :mod:`numpy.lib.format` and the payload with an unpickler that can
build NumPy arrays and dtypes and nothing else; the result must be a dict of numeric arrays.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from patchalign3d.data.base import DatasetFormatError

__all__ = ["load_npy_dict"]

try:  # NumPy >= 2 moved the pickle helpers to numpy._core; files written by NumPy 1.x name numpy.core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct


class _Sealed:
    """An object the pickle may name but never modify (BUILD on it fails) and, unless it says so, not call."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("the pickle tries to modify a NumPy helper")


class _RebuildEmpty(_Sealed):
    """NumPy pickles an array as ``_reconstruct(ndarray, (0,), b"b")`` followed by ``__setstate__`` with the
    data; any other call is not NumPy's own output."""

    __slots__ = ()

    def __call__(self, subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
        if subtype is not _NDARRAY or tuple(shape) != (0,):
            raise pickle.UnpicklingError("unexpected array reconstruction call")
        return _reconstruct(np.ndarray, (0,), typecode)


_NDARRAY = _Sealed()  # stands for numpy.ndarray: only _RebuildEmpty accepts it, it cannot be called
_ALLOWED = {
    ("numpy._core.multiarray", "_reconstruct"): _RebuildEmpty(),
    ("numpy.core.multiarray", "_reconstruct"): _RebuildEmpty(),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"the pickle references {module}.{name}")
        return found


def load_npy_dict(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The dict of numeric arrays that ``np.save`` wrote to ``path`` (e.g. PartNetE's ``label.npy``).

    Args:
        path: the ``.npy`` file.
        required: keys that must be present.

    Raises:
        DatasetFormatError: naming the file, when it is missing, is not a pickled dict, references anything but
            NumPy arrays (a crafted file: nothing from it has run), or holds non-numeric values.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(path, "missing")
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as e:
            raise DatasetFormatError(path, f"not a .npy file ({e})") from None
        if dtype != np.dtype(object) or shape != ():
            raise DatasetFormatError(
                path, f"expected a dict saved with np.save (a pickled object), found a {dtype} array of shape {shape}"
            )
        payload = f.read()
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(payload)).load()
    except pickle.UnpicklingError as e:
        raise DatasetFormatError(
            path, f"refused to unpickle: {e}; only NumPy arrays in a dict are allowed (the file may be crafted)"
        ) from None
    except Exception as e:
        raise DatasetFormatError(path, f"unreadable pickled payload ({type(e).__name__}: {e})") from None
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise DatasetFormatError(path, f"expected a pickled dict, found {type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise DatasetFormatError(path, f"keys must be strings, found {key!r}")
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
            raise DatasetFormatError(path, f"entry {key!r} must be a numeric array, found {kind}")
    absent = [k for k in required if k not in obj]
    if absent:
        raise DatasetFormatError(path, f"lacks {absent} (has {sorted(obj)})")
    return obj
