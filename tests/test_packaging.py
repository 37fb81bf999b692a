"""What `pip install` of the wheel gives: the licence, the demo's configs and examples as package data (read
through importlib.resources, from outside the repository), and a `lightning` command that is this package's."""

from __future__ import annotations

import configparser
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
#: Releases of `lightning` whose wheels declare their own `lightning` console script
#: (`lightning = lightning.fabric.cli:_legacy_main` in entry_points.txt of 2.3.x, 2.4.0, 2.5.0 and 2.5.0.post0);
#: 2.5.1 is the first whose entry_points.txt holds only `fabric` (checked on PyPI's wheels).
FIRST_LIGHTNING_WITHOUT_SCRIPT = Version("2.5.1")
DEMO_CONFIGS = ("configs/demo/stage1.yaml", "configs/demo/stage2.yaml", "configs/demo/diffuser.yaml",
                "configs/data/demo.yaml")


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def _requirement(name: str) -> str:
    lines = _setup_cfg()["options"]["install_requires"].split()
    return next(line for line in lines if re.match(rf"{name}\b", line) and not line.startswith(f"{name}-"))


def test_license_file_and_spdx_metadata():
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    meta = _setup_cfg()["metadata"]
    assert meta["license_expression"] == "MIT" and meta["license_files"] == "LICENSE"
    assert "License ::" not in meta["classifiers"]  # superseded by the expression (PEP 639)


def test_lightning_lower_bound_excludes_releases_with_their_own_lightning_script():
    bound = Version(_requirement("lightning").split(">=")[1])
    assert bound >= FIRST_LIGHTNING_WITHOUT_SCRIPT
    installed = importlib.metadata.distribution("lightning")
    assert Version(installed.version) >= bound
    scripts = [e for e in installed.entry_points if e.group == "console_scripts"]
    assert "lightning" not in {e.name for e in scripts}, scripts


def test_lightning_entry_point_is_this_package():
    found = importlib.metadata.entry_points(group="console_scripts", name="lightning")
    assert [e.value for e in found] == ["patchalign3d.cli:lightning_main"]
    assert found[0].load() is __import__("patchalign3d.cli").cli.lightning_main


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel .` builds from a clean copy of this checkout (setuptools of the environment, nothing
    downloaded): a build/ or *.egg-info left in the checkout would add files the package data does not name."""
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "patchalign3d"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", ".venv*", "__pycache__", "demo_out", "outputs", "lightning_logs"))
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(out), str(source)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TMPDIR": str(out.parent)})
    assert run.returncode == 0, run.stderr[-3000:]
    (path,) = out.glob("patchalign3d-*.whl")
    return path


def test_wheel_holds_license_configs_and_examples(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    for config in DEMO_CONFIGS:
        assert f"patchalign3d/{config}" in names
    assert {f"patchalign3d/examples/{n}.ply" for n in ("chair", "airplane", "mug")} <= names
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata and "Classifier: License ::" not in metadata
    assert re.search(r"Requires-Dist: lightning>=(\S+)", metadata).group(1) == str(FIRST_LIGHTNING_WITHOUT_SCRIPT)


def test_installed_wheel_reads_the_demo_configs_from_outside_the_repository(wheel, tmp_path):
    """The demo's configs come from the installed package (importlib.resources), not from a checkout."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    away = tmp_path / "elsewhere"
    away.mkdir()
    script = (
        "import pathlib, yaml, patchalign3d\n"
        "from patchalign3d.demo import choose_teacher, data_config, _stage_config\n"
        f"assert pathlib.Path(patchalign3d.__file__).is_relative_to({str(site)!r}), patchalign3d.__file__\n"
        "out = pathlib.Path('out').resolve(); (out / 'configs').mkdir(parents=True)\n"
        "config = data_config(out, {'name': 'vit_small_patch14_dinov2.lvd142m', 'pretrained': False}, {})\n"
        "stage = yaml.safe_load(_stage_config('stage1', out, out / 'store', 2, {}, None, 0, {}).read_text())\n"
        "print(config.output, stage['trainer']['max_epochs'], stage['model']['class_path'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", script], cwd=away, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    store, epochs, module = run.stdout.split()
    assert store == str(away / "out" / "store") and epochs == "2" and module.endswith("Stage1Module")
