import numpy as np
import pytest
import torch

from patchalign3d.cli import main
from patchalign3d.model import patchalign3d_tiny
from patchalign3d.model.checkpoint import export_released, load_model
from patchalign3d.text import TextBank


@pytest.fixture
def tiny_files(tmp_path):
    torch.manual_seed(0)
    model = patchalign3d_tiny().eval()
    ckpt = export_released(model, tmp_path / "tiny.pt")
    names = ["seat", "leg", "back"]
    bank = TextBank(names, torch.nn.functional.normalize(torch.randn(3, 64), dim=-1), {"text_dim": 64})
    bank.save(tmp_path / "bank.pt")
    return model, ckpt, tmp_path / "bank.pt"


def test_segment_bundled_mesh_to_npz_and_png(tiny_files, tmp_path, capsys):
    _, ckpt, bank = tiny_files
    rc = main(["segment", "example:chair", "--parts", "seat, leg,back", "--checkpoint", str(ckpt),
               "--text-bank", str(bank), "--out", str(tmp_path / "out.npz"), "--png", str(tmp_path / "out.png")])
    assert rc == 0
    with np.load(tmp_path / "out.npz") as f:
        assert list(f["part_names"]) == ["seat", "leg", "back"]
        assert f["labels"].shape == (2048,)
        assert f["face_labels"].ndim == 1 and f["vertex_labels"].ndim == 1
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "chair.ply: 2048 points" in capsys.readouterr().out


def test_segment_point_file_to_ply(tiny_files, tmp_path):
    _, ckpt, bank = tiny_files
    np.savetxt(tmp_path / "c.txt", np.random.default_rng(0).normal(size=(300, 3)))
    assert main(["segment", str(tmp_path / "c.txt"), "--parts", "seat,leg", "--checkpoint", str(ckpt),
                 "--text-bank", str(bank), "--out", str(tmp_path / "c.ply")]) == 0
    assert (tmp_path / "c.ply").stat().st_size > 300 * 15


@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_segment_dtype_choices(tiny_files, tmp_path, dtype):
    _, ckpt, bank = tiny_files
    np.savetxt(tmp_path / "c.txt", np.random.default_rng(0).normal(size=(300, 3)))
    assert main(["segment", str(tmp_path / "c.txt"), "--parts", "seat,leg", "--checkpoint", str(ckpt),
                 "--text-bank", str(bank), "--dtype", dtype, "--out", str(tmp_path / "c.npz")]) == 0
    with np.load(tmp_path / "c.npz") as f:
        assert f["labels"].shape == (300,)


def test_segment_unknown_part_name_fails_clearly(tiny_files, capsys):
    _, ckpt, bank = tiny_files
    assert main(["segment", "example:chair", "--parts", "seat,armrest", "--checkpoint", str(ckpt), "--text-bank", str(bank)]) == 2
    err = capsys.readouterr().err
    assert "patchalign3d segment: error:" in err and "not in the text bank" in err and "armrest" in err


@pytest.mark.parametrize("shape, message", [
    ("no/such/chair.glb", "no such shape file: no/such/chair.glb"),
    ("example:sofa", "no bundled example 'sofa'"),
])
def test_segment_bad_paths_are_messages_not_tracebacks(tiny_files, capsys, shape, message):
    _, ckpt, bank = tiny_files
    assert main(["segment", shape, "--parts", "seat", "--checkpoint", str(ckpt), "--text-bank", str(bank)]) == 2
    assert message in capsys.readouterr().err


def test_segment_mesh_to_glb_with_split_dir(tiny_files, tmp_path, capsys):
    import json

    import trimesh

    _, ckpt, bank = tiny_files
    assert main(["segment", "example:chair", "--parts", "seat,leg,back", "--checkpoint", str(ckpt), "--text-bank",
                 str(bank), "--out", str(tmp_path / "parts.glb"), "--split-dir", str(tmp_path / "split")]) == 0
    record = json.loads((tmp_path / "parts.json").read_text())
    scene = trimesh.load(tmp_path / "parts.glb", process=False)
    chair = trimesh.load(main.__globals__["_resolve_shape"]("example:chair"), process=False)
    assert record["num_faces"] == len(chair.faces) == sum(len(g.faces) for g in scene.geometry.values())
    present = {n for n, c in record["faces_per_part"].items() if c}
    assert set(scene.geometry) == present and {p.stem for p in (tmp_path / "split").iterdir()} == present
    assert "parts.json" in capsys.readouterr().out


def test_export_lightning_checkpoint_round_trip(tmp_path):
    """A checkpoint in the layout the training modules write exports to exactly the released keys."""
    torch.manual_seed(1)
    model = patchalign3d_tiny().eval()
    ckpt = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()} | {"loss.bias": torch.zeros(())},
            "patchalign3d": {"stage": 2, "config": model.config.to_dict(), "text": {"spec": "minilm"}}}
    torch.save(ckpt, tmp_path / "stage2.ckpt")
    assert main(["export", str(tmp_path / "stage2.ckpt"), str(tmp_path / "out.pt")]) == 0
    blob = torch.load(tmp_path / "out.pt", weights_only=True)
    assert set(blob) == {"model", "proj", "temp"}
    assert list(blob["model"]) == list(model.encoder.state_dict())
    again = load_model(tmp_path / "out.pt")
    assert again.text_meta == {"spec": "minilm"}
    x = torch.rand(1, 200, 3)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_usage_and_unknown_command(capsys):
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_console_scripts_are_installed_and_route_to_lightningcli():
    """`lightning fit -c configs/stage1.yaml` must work as typed after pip install: check the script parses it."""
    import subprocess
    import sys
    from pathlib import Path

    bindir = Path(sys.executable).parent
    for script in ("lightning", "patchalign3d"):
        exe = bindir / script
        assert exe.is_file(), f"console script {script} is not installed"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([str(bindir / "lightning"), "fit", "-c", "configs/stage1.yaml", "--print_config"],
                         cwd=root, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Stage1Module" in out.stdout and "StoreDataModule" in out.stdout
