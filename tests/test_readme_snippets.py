"""The README's Python snippets, run as written by a new user in a fresh folder, offline.

The files they name are made first (``chair.txt``, ``chair.glb``, ``patchalign3d.pt``: a small random model
with the offline MiniLM text head), and the Hugging Face cache holds that model as the release, so that
``pa.load_model()`` resolves offline the way it does for someone who downloaded the release once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import trimesh

from patchalign3d.examples import example_path
from patchalign3d.model import patchalign3d_tiny
from patchalign3d.model.checkpoint import DEFAULT_FILENAME, DEFAULT_REPO, export_released
from patchalign3d.text.encoders import MINILM_NAME

REPO = Path(__file__).resolve().parents[1]
#: README sections whose ```python blocks run top to bottom in one interpreter (later ones use ``model``).
SECTIONS = ("Python API", "Segment your own mesh")


def readme_python(section: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n## {section}\n")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], re.S)


def _small_model(path: Path) -> Path:
    torch.manual_seed(0)
    model = patchalign3d_tiny(text_dim=384).eval()
    model.text_meta = {"backend": "transformers", "text_dim": 384, "model": MINILM_NAME, "pretrained": True}
    return export_released(model, path)


def _hub_cache_with_release(cache: Path, model_file: Path) -> None:
    """The layout huggingface_hub reads offline: refs/main -> snapshots/<commit>/<file>."""
    repo = cache / f"models--{DEFAULT_REPO.replace('/', '--')}"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for source in (model_file, model_file.with_name(model_file.name + ".config.json")):
        (snapshot / source.name.replace(model_file.name, DEFAULT_FILENAME)).write_bytes(source.read_bytes())


def test_readme_python_snippets_run_as_written(tmp_path):
    blocks = [b for section in SECTIONS for b in readme_python(section)]
    assert len(blocks) >= 3 and "cloud_a" in "".join(blocks)
    _small_model(tmp_path / "patchalign3d.pt")
    _hub_cache_with_release(tmp_path / "hub", tmp_path / "patchalign3d.pt")
    chair = trimesh.load(example_path("chair"), process=False)
    np.savetxt(tmp_path / "chair.txt", trimesh.sample.sample_surface(chair, 1500, seed=0)[0])
    chair.export(tmp_path / "chair.glb")

    script = "\n".join(blocks)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "PATCHALIGN3D_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    # what the snippets say they write
    assert (tmp_path / "chair_parts.ply").read_bytes().startswith(b"ply\n")
    assert (tmp_path / "chair_parts.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "chair_bank.pt").is_file()
    scene = trimesh.load(tmp_path / "chair_parts.glb", process=False)
    assert set(scene.geometry) <= {"seat", "back", "leg", "armrest"} and scene.geometry
    assert {p.suffix for p in (tmp_path / "chair_parts").iterdir()} == {".glb"}
