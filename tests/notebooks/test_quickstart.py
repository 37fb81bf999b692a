"""The quickstart notebook runs top to bottom (on a tiny random model: no downloads)."""

from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from patchalign3d.model import patchalign3d_tiny
from patchalign3d.model.checkpoint import export_released
from patchalign3d.text import TextBank

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


@pytest.mark.parametrize("offline", [False, True])
def test_quickstart_notebook_executes(tmp_path, monkeypatch, offline):
    """With a checkpoint given; and offline with none given, where it names and uses LOCAL_CHECKPOINT."""
    torch.manual_seed(0)
    ckpt = export_released(patchalign3d_tiny(), tmp_path / "tiny.pt")
    names = ["seat", "back", "leg", "armrest", "body", "wing", "tail", "engine"]
    TextBank(names, torch.nn.functional.normalize(torch.randn(len(names), 64), dim=-1), {"text_dim": 64}).save(tmp_path / "bank.pt")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "LOCAL_CHECKPOINT = " in params.source
    checkpoint, local = (None, str(ckpt)) if offline else (str(ckpt), str(tmp_path / "absent.pt"))
    params.source = (f"CHECKPOINT = {checkpoint!r}\nLOCAL_CHECKPOINT = {local!r}\nTEXT_BANK = {str(tmp_path / 'bank.pt')!r}\n"
                     f"OUT = {str(tmp_path / 'out')!r}")
    if offline:  # the kernel inherits the environment: offline, with an empty Hugging Face cache
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    assert (tmp_path / "out" / "chair_parts.png").stat().st_size > 1000
    assert (tmp_path / "out" / "airplane_parts.ply").is_file()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "of points" in outputs and "armrest" in outputs
    assert (f"using the local checkpoint {ckpt}" in outputs) == offline
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2
