"""What a file holds, told from its first bytes, before anything reads it as a checkpoint.

``torch.load`` on a file that is no checkpoint at all fails deep in the unpickler (``unpickling stack
underflow``), and its ``weights_only`` refusal reads like "this pickle needs trust". Sniffing first lets the
loaders say "this is a PLY file, not a checkpoint" and keep ``--trust-pickle`` advice for real PyTorch pickles,
which are the only files ever handed to the unpickler.

Kinds: ``torch_zip`` (``torch.save``'s zip archive, with its ``data.pkl``), ``torch_pickle`` (the legacy
format: a pickle that starts with PyTorch's magic number), ``safetensors`` (an 8-byte header length, then a
JSON header) and ``other`` (anything else, described for the message: empty, text, PLY, a zip without
``data.pkl``, a plain pickle, ...).
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from patchalign3d.errors import CheckpointError

TORCH_ZIP = "torch_zip"
TORCH_PICKLE = "torch_pickle"
SAFETENSORS = "safetensors"
OTHER = "other"

#: ``torch.serialization.MAGIC_NUMBER`` pickled with protocol 2, as the legacy ``torch.save`` writes it first.
_LEGACY_TORCH_HEAD = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
#: Formats people hand to ``--checkpoint`` by mistake, by their first bytes.
_KNOWN_HEADS = (
    (b"ply\n", "a PLY shape file"), (b"ply\r\n", "a PLY shape file"), (b"glTF", "a binary glTF (.glb) shape file"),
    (b"\x89HDF", "an HDF5 file"), (b"\x89PNG", "a PNG image"), (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"), (b"\x93NUMPY", "a NumPy .npy array"), (b"solid ", "an ASCII STL shape file"),
)
#: safetensors headers larger than this are taken as a coincidence of the first 8 bytes.
_MAX_SAFETENSORS_HEADER = 100 * 2**20


@dataclass(frozen=True)
class FileKind:
    """``kind``: one of the module's kinds; ``what``: the file's kind in words, for messages."""

    kind: str
    what: str

    @property
    def is_torch(self) -> bool:
        """Whether ``torch.load`` is the right reader (the only kinds that may reach the unpickler)."""
        return self.kind in (TORCH_ZIP, TORCH_PICKLE)


def sniff_file_kind(path: str | os.PathLike) -> FileKind:
    """Tell what ``path`` holds from its content (its name is not looked at). ``path`` must be a file."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(64)
    if not head:
        return FileKind(OTHER, "an empty file")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_kind(path)
    if head.startswith(_LEGACY_TORCH_HEAD):
        return FileKind(TORCH_PICKLE, "a PyTorch checkpoint in the legacy pickle format")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return FileKind(OTHER, "a plain Python pickle (no PyTorch checkpoint starts this way)")
    if _is_safetensors(path, head):
        return FileKind(SAFETENSORS, "a safetensors file")
    for magic, what in _KNOWN_HEADS:
        if head.startswith(magic):
            return FileKind(OTHER, what)
    if _is_text(head):
        return FileKind(OTHER, "a text file")
    return FileKind(OTHER, "a file of an unknown binary format")


def _zip_kind(path: Path) -> FileKind:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return FileKind(OTHER, "a damaged zip archive")
    # torch.save writes <archive name>/data.pkl (+ data/<storage>, version, ...)
    if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        return FileKind(TORCH_ZIP, "a PyTorch checkpoint (zip format)")
    if names and all(name.endswith(".npy") for name in names):
        return FileKind(OTHER, "a NumPy .npz archive")
    return FileKind(OTHER, "a zip archive without PyTorch's data.pkl")


def _is_safetensors(path: Path, head: bytes) -> bool:
    if len(head) < 10 or head[8:9] != b"{":
        return False
    (length,) = struct.unpack("<Q", head[:8])
    if not 2 <= length <= min(_MAX_SAFETENSORS_HEADER, path.stat().st_size - 8):
        return False
    with path.open("rb") as f:
        f.seek(8)
        try:
            header = json.loads(f.read(length))
        except ValueError:
            return False
    return isinstance(header, dict)


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at byte 64 is still text
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def check_checkpoint_file(path: str | os.PathLike) -> FileKind:
    """The kind of ``path`` when ``torch.load`` may read it; else a ``CheckpointError`` that says what it is.

    A safetensors file is refused with the way to load it (its ``save_pretrained`` folder).
    """
    kind = sniff_file_kind(path)
    if kind.kind == SAFETENSORS:
        raise CheckpointError(
            f"{path} is a safetensors file, not a PyTorch checkpoint; pass the folder that holds it with its "
            "config.json (a save_pretrained folder) instead of the file"
        )
    if not kind.is_torch:
        raise CheckpointError(
            f"{path} is not a checkpoint: it is {kind.what}. Pass a released .pt, a Lightning .ckpt of "
            "patchalign3d or a save_pretrained folder"
        )
    return kind
