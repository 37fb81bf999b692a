"""Files handed to load_model / TextBank.load are told apart by content before torch.load sees them: a file
that is no checkpoint is called that (and never unpickled); ``--trust-pickle`` is offered only for a real
PyTorch pickle that needs it."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch

from patchalign3d.errors import CheckpointError
from patchalign3d.file_kind import OTHER, SAFETENSORS, TORCH_PICKLE, TORCH_ZIP, sniff_file_kind
from patchalign3d.model import patchalign3d_tiny
from patchalign3d.model.checkpoint import export_released, load_model, safe_load
from patchalign3d.text import TextBank


class NotAllowlisted:
    """An object the weights_only unpickler refuses (as a Lightning checkpoint's custom hyperparameters are)."""


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.fixture
def files(tmp_path):
    state = {"w": torch.arange(3.0)}
    torch.save(state, tmp_path / "zip.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save({"w": NotAllowlisted()}, tmp_path / "needs_trust.pt")
    torch.save({"w": NotAllowlisted()}, tmp_path / "needs_trust_legacy.pt", _use_new_zipfile_serialization=False)
    # safetensors by hand (its format: u64 little-endian header length, JSON header, raw bytes)
    header = b'{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}'
    _write(tmp_path / "model.safetensors", struct.pack("<Q", len(header)) + header + np.arange(3, dtype="<f4").tobytes())
    _write(tmp_path / "notes.txt", b"seat, back, leg\n")
    _write(tmp_path / "chair.ply", b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n")
    _write(tmp_path / "empty.pt", b"")
    np.savez(tmp_path / "arrays.npz", points=np.zeros((4, 3)))
    _write(tmp_path / "plain.pkl", pickle.dumps({"w": [1, 2, 3]}, protocol=4))
    return tmp_path


@pytest.mark.parametrize("name, kind, words", [
    ("zip.pt", TORCH_ZIP, "zip format"),
    ("legacy.pt", TORCH_PICKLE, "legacy pickle"),
    ("model.safetensors", SAFETENSORS, "safetensors"),
    ("notes.txt", OTHER, "a text file"),
    ("chair.ply", OTHER, "a PLY shape file"),
    ("empty.pt", OTHER, "an empty file"),
    ("arrays.npz", OTHER, "NumPy .npz"),
    ("plain.pkl", OTHER, "plain Python pickle"),
])
def test_kinds_by_content(files, name, kind, words):
    found = sniff_file_kind(files / name)
    assert found.kind == kind and words in found.what


@pytest.mark.parametrize("name", ["notes.txt", "chair.ply", "empty.pt", "arrays.npz", "plain.pkl"])
def test_not_a_checkpoint_is_called_that_and_never_unpickled(files, name, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or {})
    for trust in (False, True):
        with pytest.raises(CheckpointError, match="is not a checkpoint: it is") as err:
            safe_load(files / name, trust_pickle=trust)
        assert "trust" not in str(err.value)
    assert calls == []  # the unpickler never saw the file, even with trust_pickle=True


def test_safetensors_file_points_at_its_folder(files):
    with pytest.raises(CheckpointError, match="safetensors file.*save_pretrained folder") as err:
        load_model(files / "model.safetensors")
    assert "trust" not in str(err.value)


@pytest.mark.parametrize("name", ["needs_trust.pt", "needs_trust_legacy.pt"])
def test_trust_pickle_is_offered_only_for_a_pytorch_pickle_that_needs_it(files, name):
    with pytest.raises(CheckpointError, match="needs full unpickling.*--trust-pickle"):
        safe_load(files / name)
    assert isinstance(safe_load(files / name, trust_pickle=True)["w"], NotAllowlisted)


@pytest.mark.parametrize("name", ["zip.pt", "legacy.pt"])
def test_pytorch_files_load_without_trust(files, name):
    assert torch.equal(safe_load(files / name)["w"], torch.arange(3.0))


def test_released_checkpoint_in_both_pytorch_formats_loads(tmp_path):
    model = patchalign3d_tiny().eval()
    path = export_released(model, tmp_path / "tiny.pt")
    legacy = tmp_path / "tiny_legacy.pt"
    torch.save(torch.load(path, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    sidecar = ".config.json"  # the grouping settings the weights cannot tell
    (tmp_path / (legacy.name + sidecar)).write_bytes((tmp_path / (path.name + sidecar)).read_bytes())
    x = torch.rand(1, 200, 3)
    with torch.no_grad():
        assert torch.equal(load_model(path)(x), load_model(legacy)(x))


@pytest.mark.parametrize("name, words", [("chair.ply", "is not a text bank: it is a PLY shape file"),
                                         ("notes.txt", "is not a text bank: it is a text file")])
def test_text_bank_of_another_kind_is_called_that(files, name, words):
    with pytest.raises(ValueError, match=words):
        TextBank.load(files / name)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        TextBank.load(files)
