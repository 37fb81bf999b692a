import json

import numpy as np
import pytest
import torch
import trimesh

import patchalign3d as pa
from patchalign3d.batch import find_shapes, segment_files
from patchalign3d.cli import main
from patchalign3d.model.checkpoint import export_released
from patchalign3d.text import TextBank
from tests.conftest import make_cloud

NAMES = ["seat", "back", "leg"]


@pytest.fixture
def bank():
    g = torch.Generator().manual_seed(0)
    return TextBank(NAMES, torch.nn.functional.normalize(torch.randn(3, 64, generator=g), dim=-1), {"text_dim": 64})


@pytest.fixture
def shapes(tmp_path):
    """A folder as users have them: meshes in sub-folders, a point cloud, and files that cannot be segmented."""
    root = tmp_path / "shapes"
    (root / "sub").mkdir(parents=True)
    trimesh.creation.capsule(height=1.0, radius=0.3, count=[12, 12]).export(root / "capsule.glb")
    box = trimesh.creation.box(extents=[1.0, 0.5, 0.3])
    box.visual.face_colors = [30, 90, 200, 255]
    box.export(root / "sub" / "box.obj")
    np.savetxt(root / "cloud.txt", make_cloud(400, 3))
    (root / "broken.glb").write_bytes(b"glTF not really")
    (root / "empty.obj").write_bytes(b"")
    np.savetxt(root / "tiny.xyz", make_cloud(5, 4))  # fewer points than a patch
    (root / "notes.md").write_text("not a shape: skipped, not reported")
    return root


def test_folder_writes_every_good_shape_and_reports_the_others(tiny_model, bank, shapes, tmp_path):
    out = tmp_path / "out"
    report = segment_files([shapes], NAMES, out, model=tiny_model, text=bank, num_points=300, batch_size=2,
                           progress=False)
    failed = {f["path"].split("/")[-1]: f["reason"] for f in report.failed}
    assert set(failed) == {"broken.glb", "empty.obj", "tiny.xyz"}
    assert "the file is empty" in failed["empty.obj"] and "at least 16 points" in failed["tiny.xyz"]
    assert "could not be read" in failed["broken.glb"]
    assert (out / "capsule.glb").is_file() and (out / "capsule.json").is_file()
    assert (out / "sub" / "box.glb").is_file() and (out / "cloud.ply").is_file()
    saved = json.loads((out / "report.json").read_text())
    assert saved["done"] == 3 and saved["part_names"] == NAMES
    assert {f["path"] for f in saved["failed"]} == {f["path"] for f in report.failed}
    # batched (box and capsule in one pass) equals one at a time
    alone = pa.segment_mesh(shapes / "sub" / "box.obj", NAMES, model=tiny_model, text=bank, num_points=300)
    assert json.loads((out / "sub" / "box.json").read_text())["face_labels"] == alone.face_labels.tolist()


def test_globs_typos_and_name_clashes(tmp_path, shapes):
    (shapes / "capsule.ply").write_bytes((shapes / "capsule.glb").read_bytes())  # same stem, other type
    found, problems = find_shapes([str(shapes / "**" / "*.glb"), str(shapes / "cap*"), shapes / "nope", str(shapes / "*.fbx")])
    stems = [str(s.stem) for s in found]
    assert stems == ["broken", "capsule", "capsule_ply"]  # the capsule.glb given twice is segmented once
    assert problems == [{"path": str(shapes / "nope"), "reason": "no such file or folder"},
                        {"path": str(shapes / "*.fbx"), "reason": problems[1]["reason"]}]
    assert problems[1]["reason"].startswith("no shape files match this pattern")


def test_cli_many_shapes_one_model_load_and_exit_code(tiny_model, bank, shapes, tmp_path, monkeypatch, capsys):
    ckpt = export_released(tiny_model, tmp_path / "tiny.pt")
    bank.save(tmp_path / "bank.pt")
    loads = []
    real = pa.load_model
    monkeypatch.setattr("patchalign3d.model.checkpoint.load_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    out = tmp_path / "out"
    args = ["segment", str(shapes), str(tmp_path / "typo"), "--parts", "seat,back,leg", "--checkpoint", str(ckpt),
            "--text-bank", str(tmp_path / "bank.pt"), "--out", str(out), "--formats", "glb,npz,png", "--num-points", "300"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert len(loads) == 1
    assert "segmented 3 shape(s)" in captured.out and f"FAILED {tmp_path / 'typo'}: no such file or folder" in captured.err
    assert "shape" in captured.err  # the progress bar
    assert {p.name for p in out.iterdir()} >= {"capsule.glb", "capsule.npz", "capsule.png", "cloud.ply", "cloud.npz",
                                                 "report.json", "sub"}
    for bad in ("broken.glb", "empty.obj", "tiny.xyz"):
        (shapes / bad).unlink()
    assert main(args[:2] + args[3:] + ["--no-progress"]) == 0
    assert main(["segment", str(shapes), "--parts", "seat", "--checkpoint", str(ckpt)]) == 2
    assert "several shapes need --out OUTDIR" in capsys.readouterr().err


def test_python_api_takes_a_list_of_paths(tiny_model, bank, shapes, tmp_path):
    (shapes / "broken.glb").unlink()
    paths = [shapes / "capsule.glb", shapes / "cloud.txt"]
    report = pa.segment_files(paths, NAMES, tmp_path / "o", model=tiny_model, text=bank, progress=False)
    assert report.ok and list(report.written) == [str(p) for p in paths]
    with pytest.raises(NotADirectoryError, match="must be a folder"):
        pa.segment_files(paths, NAMES, tmp_path / "o" / "report.json", model=tiny_model, text=bank)
