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
    assert main(["segment", "example:chair", "--parts", "seat,armrest", "--checkpoint", str(ckpt), "--text-bank", str(bank)]) == 1
    err = capsys.readouterr().err
    assert "patchalign3d segment: error:" in err and "not in the text bank" in err and "armrest" in err
    assert "TextBank.build" not in err and "--text-encoder instead of --text-bank" in err


@pytest.mark.parametrize("shape, message", [
    ("no/such/chair.glb", "no such shape file: no/such/chair.glb"),
    ("example:sofa", "no bundled example 'sofa'"),
])
def test_segment_bad_paths_are_messages_not_tracebacks(tiny_files, capsys, shape, message):
    _, ckpt, bank = tiny_files
    assert main(["segment", shape, "--parts", "seat", "--checkpoint", str(ckpt), "--text-bank", str(bank)]) == 1
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


# -- every mistake a newcomer makes: one line that names the argument and the fix, before any model work -----
def _no_model_work(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr("patchalign3d.model.checkpoint.load_model", refuse)


def _one_line_error(capsys, prog: str = "patchalign3d segment") -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"{prog}: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def workdir(tiny_files, tmp_path, monkeypatch):
    """A folder like a newcomer's: chair.ply, notes chair.txt, an empty folder, the tiny checkpoint and bank."""
    import shutil

    from patchalign3d.examples import example_path

    shutil.copy(example_path("chair"), tmp_path / "chair.ply")
    (tmp_path / "chair.txt").write_text("seat, back, leg\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "emptydir").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("out, code, words", [
    ("adir/", 2, "--out adir/ is a folder; give a file name such as adir/parts"),
    ("adir", 2, "--out adir is a folder; give a file name such as adir/parts"),
    ("chair.ply/parts.ply", 2, "--out chair.ply/parts.ply: chair.ply is a file"),
    ("/proc/parts.ply", 1, "--out /proc/parts.ply: cannot write in /proc"),
    ("parts.xyz", 2, "--out parts.xyz has the suffix '.xyz'; use one of .glb, .gltf, .obj, .ply, .npz"),
])
def test_segment_output_path_checked_before_the_model(workdir, monkeypatch, capsys, out, code, words):
    _no_model_work(monkeypatch)
    assert main(["segment", "chair.ply", "--parts", "seat,leg", "--checkpoint", "tiny.pt", "--out", out]) == code
    assert words in _one_line_error(capsys)


@pytest.mark.parametrize("flag, value, code, words", [
    ("--png", "adir/", 2, "--png adir/ is a folder"),
    ("--png", "parts.jpg", 2, "--png parts.jpg has the suffix '.jpg'; use one of .png"),
    ("--split-dir", "chair.txt", 2, "--split-dir chair.txt is a file; give a folder"),
    ("--split-dir", "/proc/parts", 1, "--split-dir /proc/parts: cannot write in /proc"),
])
def test_segment_other_outputs_checked_before_the_model(workdir, monkeypatch, capsys, flag, value, code, words):
    _no_model_work(monkeypatch)
    assert main(["segment", "chair.ply", "--parts", "seat,leg", "--checkpoint", "tiny.pt", flag, value]) == code
    assert words in _one_line_error(capsys)


def test_segment_many_output_checks(workdir, monkeypatch, capsys):
    _no_model_work(monkeypatch)
    (workdir / "shapes").mkdir()
    (workdir / "shapes" / "chair.ply").write_bytes((workdir / "chair.ply").read_bytes())
    base = ["segment", "shapes", "--parts", "seat,leg", "--checkpoint", "tiny.pt"]
    assert main([*base, "--out", "parts.ply"]) == 2
    assert "--out parts.ply is a file name" in _one_line_error(capsys)
    assert main([*base, "--out", "chair.ply"]) == 2
    assert "--out chair.ply is a file; give a folder" in _one_line_error(capsys)
    assert main([*base, "--out", "/proc/out"]) == 1
    assert "--out /proc/out: cannot write in /proc" in _one_line_error(capsys)
    assert main([*base, "--out", "out", "--formats", "glb,fbx"]) == 2
    assert "--formats glb,fbx: unknown output format(s) ['fbx']" in _one_line_error(capsys)
    # an empty folder is called empty, not a wrong --out
    assert main(["segment", "emptydir", "--parts", "seat", "--checkpoint", "tiny.pt", "--out", "x.ply"]) == 1
    assert "no shapes to segment: emptydir: the folder holds no shape files" in _one_line_error(capsys)


@pytest.mark.parametrize("checkpoint, what", [("chair.ply", "a PLY shape file"), ("chair.txt", "a text file")])
@pytest.mark.parametrize("trust", [[], ["--trust-pickle"]])
def test_a_file_that_is_no_checkpoint_is_called_that(workdir, capsys, checkpoint, what, trust):
    assert main(["segment", "chair.ply", "--parts", "seat,leg", "--checkpoint", checkpoint, *trust]) == 1
    err = _one_line_error(capsys)
    assert f"{checkpoint} is not a checkpoint: it is {what}" in err and "trust" not in err


def test_text_bank_mistakes(workdir, capsys):
    base = ["segment", "chair.ply", "--parts", "seat,leg", "--checkpoint", "tiny.pt"]
    assert main([*base, "--text-bank", "adir"]) == 2
    assert "--text-bank adir is a folder; give the .pt file" in _one_line_error(capsys)
    assert main([*base, "--text-bank", "chair.ply"]) == 1
    err = _one_line_error(capsys)
    assert "--text-bank: chair.ply is not a text bank: it is a PLY shape file" in err and "file an issue" not in err


def test_export_mistakes(workdir, monkeypatch, capsys):
    assert main(["export", "nothere.ckpt", "x.pt"]) == 1
    assert "no checkpoint at 'nothere.ckpt'" in _one_line_error(capsys, "patchalign3d export")
    _no_model_work(monkeypatch)
    assert main(["export", "tiny.pt", "/proc/x.pt"]) == 1
    assert "output /proc/x.pt: cannot write in /proc" in _one_line_error(capsys, "patchalign3d export")
    assert main(["export", "tiny.pt", "adir/"]) == 2
    assert "output adir/ is a folder; give a file name such as adir/patchalign3d.pt" in _one_line_error(
        capsys, "patchalign3d export")


def test_missing_weights_name_the_flag_not_python(workdir, monkeypatch, capsys):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(workdir / "empty-hub-cache"))
    assert main(["segment", "chair.ply", "--parts", "seat,leg"]) == 1
    err = _one_line_error(capsys)
    assert "is not cached" in err and "Pass --checkpoint PATH" in err and "load_model()" not in err
    assert main(["keypoints", "chair.ply", "--names", "leg end"]) == 1
    err = _one_line_error(capsys, "patchalign3d keypoints")
    assert "Pass --checkpoint PATH" in err and "load_model()" not in err


def test_folders_where_a_file_is_needed(workdir, tiny_files, capsys):
    import patchalign3d as pa

    assert main(["keypoints", "adir", "--names", "leg end", "--checkpoint", "tiny.pt"]) == 2
    assert "adir is a folder; keypoints takes one shape file" in _one_line_error(capsys, "patchalign3d keypoints")
    with pytest.raises(IsADirectoryError, match="adir is a folder; give one shape file"):
        pa.segment_mesh("adir", ["seat"], model=tiny_files[0])


def test_one_exit_status_convention(workdir, capsys):
    from patchalign3d.evaluation.cli import evaluate_main

    # usage errors: 2 for every subcommand
    assert main(["keypoints", "chair.ply", "--names", "leg end, ", "--checkpoint", "tiny.pt"]) == 2
    assert "--names: blank part names" in _one_line_error(capsys, "patchalign3d keypoints")
    assert main(["keypoints", "chair.ply", "--names", "leg end", "--mode", "few_shot", "--checkpoint", "tiny.pt"]) == 2
    assert "needs annotated examples" in _one_line_error(capsys, "patchalign3d keypoints")
    with pytest.raises(SystemExit) as exit_:
        evaluate_main(["faust"])
    assert exit_.value.code == 2 and "give the benchmark folder with --root" in _one_line_error(
        capsys, "patchalign3d evaluate")
    assert main(["segment", "chair.ply", "--parts", "seat,,leg", "--checkpoint", "tiny.pt"]) == 2
    # failures: 1
    assert main(["segment", "nothere.ply", "--parts", "seat", "--checkpoint", "tiny.pt"]) == 1
    assert main(["keypoints", "nothere.ply", "--names", "leg end", "--checkpoint", "tiny.pt"]) == 1
    capsys.readouterr()


@pytest.mark.parametrize("command", [["segment"], ["export"], ["keypoints"], ["evaluate", "faust"],
                                     ["evaluate", "keypointnet"], ["app"], ["demo"]])
def test_help_documents_the_exit_status(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0 done; 1 failed" in text and "2 usage error" in text
    main(["--help"])
    assert "exit status: 0 done; 1 failed" in " ".join(capsys.readouterr().out.split())


def test_part_names_with_commas(tiny_files, tmp_path, capsys):
    _, ckpt, _ = tiny_files
    names = ["seat", "back, upper", "leg"]
    bank = TextBank(names, torch.nn.functional.normalize(torch.randn(3, 64), dim=-1), {"text_dim": 64})
    bank.save(tmp_path / "bank3.pt")
    base = ["segment", "example:chair", "--checkpoint", str(ckpt), "--text-bank", str(tmp_path / "bank3.pt")]
    assert main([*base, "--parts", 'seat,"back, upper", leg', "--out", str(tmp_path / "a.npz")]) == 0
    (tmp_path / "names.txt").write_text("# one per line\nseat\nback, upper\n\nleg\n")
    assert main([*base, "--parts-file", str(tmp_path / "names.txt"), "--out", str(tmp_path / "b.npz")]) == 0
    for out in ("a.npz", "b.npz"):
        with np.load(tmp_path / out) as f:
            assert list(f["part_names"]) == names
    assert main([*base, "--parts", 'seat,"back, upper,leg']) == 2
    assert "quote a name holding commas" in _one_line_error(capsys)
