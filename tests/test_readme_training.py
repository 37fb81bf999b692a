"""The README's CPU training path, typed verbatim by a new user in a fresh folder: every command must work."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def cpu_training_commands() -> str:
    """The bash block of the README's "Training" section that trains with ``patchalign3d/configs/demo/``."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("\n## Training\n") : text.index("\n## Data engine\n")]
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", section, re.S) if "patchalign3d/configs/demo/stage1.yaml" in b]
    assert len(blocks) == 1, "the README's Training section should hold one CPU block using patchalign3d/configs/demo/"
    return blocks[0]


def preemption_commands() -> list[str]:
    """The resume commands of the README's "Preemption" paragraph."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("**Preemption.**") : text.index("\n## Data engine\n")]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_readme_resume_commands_name_both_paper_stages():
    assert preemption_commands() == [f"lightning fit -c configs/stage{s}.yaml --ckpt_path last" for s in (1, 2)]


def _config(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def test_readme_cpu_training_block_hangs_together():
    """Each command's output is where the next one reads it (checked without running them; see the slow test)."""
    commands = cpu_training_commands()
    shapes = re.search(r"write_dataset\('([^']+)'", commands).group(1)
    data_config = re.search(r"precompute -c (\S+)", commands).group(1)
    stage1, stage2 = re.findall(r"lightning fit -c (\S+)", commands)
    exported_from = re.search(r"patchalign3d export (\S+) ", commands).group(1)
    data, s1, s2 = _config(data_config), _config(stage1), _config(stage2)
    assert data["input"]["paths"] == [shapes]
    for stage in (s1, s2):
        assert stage["data"]["init_args"]["store"] == f"${{oc.env:PATCHALIGN3D_STORE,{data['output']}}}"
    assert s2["model"]["init_args"]["init_from"] == f"{s1['trainer']['default_root_dir']}/checkpoints/last.ckpt"
    assert exported_from == f"{s2['trainer']['default_root_dir']}/checkpoints/last.ckpt"


@pytest.mark.slow  # about 1.5 minutes on 2 cores: five programs start, a store is built, both stages train
def test_readme_cpu_training_path_runs_verbatim(tmp_path):
    commands = cpu_training_commands()
    assert "lightning fit -c patchalign3d/configs/demo/stage2.yaml" in commands
    # what a clone has; outputs/ is created by the commands
    shutil.copytree(REPO / "patchalign3d" / "configs", tmp_path / "patchalign3d" / "configs")
    env = {k: v for k, v in os.environ.items() if k != "PATCHALIGN3D_STORE"}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900)  # fmt: skip
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-4000:]}"

    from data_engine import read_store_info
    from patchalign3d import load_model, segment

    info = read_store_info(tmp_path / "outputs" / "stores" / "demo")
    assert info["splits"]["train"] > 0 and info["splits"]["val"] > 0
    for stage in ("stage1", "stage2"):
        assert (tmp_path / "outputs" / "demo" / stage / "checkpoints" / "last.ckpt").is_file()
    # The Preemption paragraph's command, on the demo config: a finished run resumes at its end and stops there.
    last = tmp_path / "outputs" / "demo" / "stage1" / "checkpoints" / "last.ckpt"
    step = torch.load(last, weights_only=True)["global_step"]
    resume = preemption_commands()[0].replace("configs/stage1.yaml", "patchalign3d/configs/demo/stage1.yaml")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", resume], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"Restored all states from the checkpoint at \S*last\.ckpt", run.stdout + run.stderr)
    assert torch.load(last, weights_only=True)["global_step"] == step
    exported = re.search(r"patchalign3d export \S+ (\S+)", commands).group(1)
    model = load_model(tmp_path / exported)
    points = np.random.default_rng(0).uniform(-1, 1, size=(500, 3)).astype(np.float32)
    seg = segment(points, ["seat", "leg"], model=model)  # the checkpoint's own (offline) text encoder
    assert seg.labels.shape == (500,) and set(seg.labels.tolist()) <= {0, 1}


def test_stage_configs_read_the_store_their_data_config_writes():
    demo = "patchalign3d/configs"
    pairs = {"configs/data/objaverse.yaml": ["configs/stage1.yaml", "configs/stage2.yaml"],
             f"{demo}/data/demo.yaml": [f"{demo}/demo/stage1.yaml", f"{demo}/demo/stage2.yaml"]}
    for data_config, stage_configs in pairs.items():
        output = yaml.safe_load((REPO / data_config).read_text())["output"]
        for name in stage_configs:
            store = yaml.safe_load((REPO / name).read_text())["data"]["init_args"]["store"]
            assert store == f"${{oc.env:PATCHALIGN3D_STORE,{output}}}", (name, store, data_config, output)
