"""process_mesh on one shape; precompute on a folder: schema, bad files, resume after a kill, CLI."""

from __future__ import annotations

import ctypes.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
import yaml

from data_engine import decode_record, precompute, process_mesh, read_store_info
from data_engine.__main__ import main
from data_engine.store import RECORD_KEYS, STAGING, Staging, open_split

from .conftest import composed_mesh, tiny_config, write_labelled_shape

REPO = Path(__file__).resolve().parents[2]


def test_process_labelled_shape(tmp_path, small_teacher):
    path = write_labelled_shape(tmp_path, "s1", category="widget")
    rec = decode_record(process_mesh(path, tiny_config(), teacher=small_teacher))
    assert rec["uid"] == "s1" and rec["category"] == "widget"
    assert rec["points"].shape == (256, 3) and np.abs(rec["points"]).max() <= 0.75 + 1e-5
    assert rec["features"].shape == (256, 384) and rec["features"].dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(rec["features"].astype(np.float32), axis=1), 1, atol=2e-3)
    assert rec["part_names"] == ["box part", "sphere", "cylinder"]
    assert (rec["part_masks"].sum(0) == 1).all()
    # normalisation keeps the layout: box on the left, cylinder on the right
    x = rec["points"][:, 0]
    assert x[rec["part_masks"][0]].max() < x[rec["part_masks"][1]].min() + 1e-6
    assert x[rec["part_masks"][2]].min() > x[rec["part_masks"][1]].max() - 1e-6
    meta = rec["meta"]
    assert meta["teacher"] == "vit_small_patch14_dinov2" and meta["pretrained"] is False
    assert meta["views"] == 4 and meta["resolution"] == 64 and meta["source"] == str(path)
    assert meta["label_source"] == "faces" and 0.3 < meta["seen_fraction"] <= 1


def test_features_depend_on_the_views(small_teacher):
    """Different parts of a shape get different features, and they come from the teacher's grid."""
    rec = decode_record(process_mesh(composed_mesh(), tiny_config(), teacher=small_teacher, uid="m"))
    feats = rec["features"].astype(np.float32)
    assert rec["uid"] == "m" and rec["part_names"] == []
    assert np.linalg.matrix_rank(feats, tol=1e-2) > 10  # not one constant vector


def test_find3d_annotations_replace_sampling(tmp_path, small_teacher):
    mesh = composed_mesh()
    folder = tmp_path / "find3d" / "m1"
    folder.mkdir(parents=True)
    normalised = mesh.copy()
    from data_engine.mesh import normalize_mesh, sample_surface

    normalised, _ = normalize_mesh(normalised)
    points, _ = sample_surface(normalised, 300, seed=5)
    masks = np.stack([points[:, 0] < 0, points[:, 0] >= 0])
    torch.save(torch.from_numpy(points), folder / "points.pt")
    torch.save(torch.from_numpy(masks), folder / "mask2points.pt")
    (folder / "mask_labels.txt").write_text("Left\nright\n")
    config = tiny_config(**{"labels.find3d_root": str(tmp_path / "find3d")})
    rec = decode_record(process_mesh(mesh, config, uid="m1", teacher=small_teacher))
    np.testing.assert_array_equal(rec["points"], points)
    assert rec["part_names"] == ["left", "right"]
    np.testing.assert_array_equal(rec["part_masks"], masks)
    assert rec["meta"]["label_source"] == "find3d" and rec["meta"]["visibility"] == "depth"
    assert rec["meta"]["seen_fraction"] > 0.6


def test_real_shapenet_mesh(keypointnet_mesh, small_teacher):
    config = tiny_config(**{"backproject.visibility": "face_or_depth", "camera.resolution": 96})
    rec = decode_record(process_mesh(keypointnet_mesh, config, teacher=small_teacher))
    assert rec["points"].shape == (256, 3) and np.isfinite(rec["features"]).all()
    assert rec["meta"]["seen_fraction"] > 0.8


def _write_inputs(root: Path, count: int) -> list[str]:
    uids = [f"shape{i}" for i in range(count)]
    for i, uid in enumerate(uids):
        write_labelled_shape(root, uid, category=["a", "b"][i % 2])
    return uids


def _write_bad_files(root: Path) -> None:
    bad = root / "bad"
    bad.mkdir(parents=True)
    (bad / "empty.obj").write_bytes(b"")
    (bad / "garbage.glb").write_bytes(os.urandom(256))
    trimesh.PointCloud(np.random.default_rng(0).random((100, 3))).export(bad / "cloud.ply")


def _read_split(store: Path, split: str) -> list[dict]:
    if not (store / split).exists():
        return []
    ds = open_split(store, split)
    return [ds[i] for i in range(len(ds))]


def test_precompute_store_with_bad_files(tmp_path):
    good = _write_inputs(tmp_path / "in", 4)
    _write_bad_files(tmp_path / "in")
    store = tmp_path / "store"
    config = tiny_config(
        **{"input.paths": f"[{tmp_path / 'in'}]", "output": str(store), "split.val_fraction": 0.5}
    )
    summary = precompute(config, progress=False)

    report = json.loads((store / "report.json").read_text())
    reasons = {f["uid"]: f["reason"] for f in report["failed"]}
    assert set(reasons) == {"bad/empty", "bad/garbage", "bad/cloud"}
    assert "empty" in reasons["bad/empty"] and "no faces" in reasons["bad/cloud"]
    assert report["done"] == 4

    train, val = (store / "train.txt").read_text().split(), (store / "val.txt").read_text().split()
    assert sorted(train + val) == good  # sidecar uids win over the path (which would be a/shape0, ...)
    staging = Staging(store / STAGING)
    for split, uids in (("train", train), ("val", val)):
        items = _read_split(store, split)
        assert [it["uid"] for it in items] == uids  # written in the listed order
        for item in items:
            expected = staging.read_record(item["uid"])
            for key in RECORD_KEYS:
                np.testing.assert_array_equal(item[key], expected[key])
    info = read_store_info(store)
    assert info["feature_dim"] == 384 and info["pretrained"] is False and info["views"] == 4
    assert info["splits"] == {"train": len(train), "val": len(val)}
    assert info["part_names"] == ["box part", "cylinder", "sphere"]  # sorted vocabulary of the records
    assert summary["written"] == {"train": train, "val": val}


def test_dry_run_and_limit_through_the_cli(tmp_path, capsys):
    _write_inputs(tmp_path / "in", 3)
    config = tiny_config(**{"input.paths": f"[{tmp_path / 'in'}]", "output": str(tmp_path / "store")})
    cfg_path = tmp_path / "c.yaml"
    from omegaconf import OmegaConf

    OmegaConf.save(OmegaConf.structured(config), cfg_path)
    assert (
        main(["precompute", "-c", str(cfg_path), "--dry-run", "--limit", "2", "split.val_fraction=0.0"]) == 0
    )
    out = capsys.readouterr().out
    assert "train: 2 shapes, 0 staged, 0 failed, 2 to do" in out
    assert not (tmp_path / "store").exists()
    assert main(["precompute", "-c", str(tmp_path / "missing.yaml")]) == 2
    capsys.readouterr()
    assert main(["precompute", "-c", str(cfg_path), "checks.min_seen_fraction=2"]) == 2
    assert "checks.min_seen_fraction must be in [0, 1], got 2.0" in capsys.readouterr().err


def test_resume_after_kill(tmp_path):
    uids = _write_inputs(tmp_path / "in", 8)
    store = tmp_path / "store"
    overrides = {
        "input.paths": f"[{tmp_path / 'in'}]",
        "output": str(store),
        "camera.resolution": 96,
        "camera.num_views": 6,
        "split.val_fraction": 0.25,
    }
    config = tiny_config(**overrides)
    cfg_path = tmp_path / "c.yaml"
    from omegaconf import OmegaConf

    OmegaConf.save(OmegaConf.structured(config), cfg_path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "data_engine", "precompute", "-c", str(cfg_path), "--no-progress"],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    staging = Staging(store / STAGING)
    deadline = time.time() + 120
    while staging.count_done() < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the CLI and its LitData worker
    proc.wait()
    staged_before = {p.name: p.stat().st_mtime_ns for p in staging.root.glob("*.npz")}
    assert 2 <= len(staged_before) < len(uids), "the run was not stopped midway"
    # nothing half-built is visible: no split folder, or one with a complete index
    for split in ("train", "val"):
        assert not (store / split).exists() or (store / split / "index.json").is_file()
    assert not (store / "store_info.json").exists()

    summary = precompute(config, progress=False)
    written = summary["written"]["train"] + summary["written"]["val"]
    assert sorted(written) == uids
    items = _read_split(store, "train") + _read_split(store, "val")
    assert sorted(it["uid"] for it in items) == uids  # complete, no duplicates
    for name, mtime in staged_before.items():  # finished shapes were not recomputed
        assert (staging.root / name).stat().st_mtime_ns == mtime
    assert not any(p.name.endswith(".building") for p in store.iterdir())
    assert not [p for p in staging.root.iterdir() if p.name.endswith(".tmp")]


def test_shipped_configs_load():
    from data_engine import load_config

    for path in sorted((REPO / "configs" / "data").glob("*.yaml")):
        config = load_config(path)
        assert config.mesh.num_points > 0 and config.teacher.name, path
        assert yaml.safe_load(path.read_text())  # plain YAML, readable without omegaconf
    objaverse = load_config(REPO / "configs" / "data" / "objaverse.yaml")
    assert (objaverse.mesh.num_points, objaverse.camera.num_views, objaverse.camera.resolution) == (
        5000,
        10,
        500,
    )
    assert objaverse.teacher.name == "vit_base_patch14_dinov2.lvd142m" and objaverse.teacher.img_size == 518


def test_a_teacher_that_cannot_load_stops_the_run_cleanly(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    from data_engine import EngineError

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)  # inherited by the forked LitData worker
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    _write_inputs(tmp_path / "in", 2)
    overrides = {
        "input.paths": f"[{tmp_path / 'in'}]",
        "output": str(tmp_path / "store"),
        "split.val_fraction": 0,
    }
    config = tiny_config(
        **overrides, **{"teacher.pretrained": True, "teacher.name": "vit_small_patch14_dinov2.lvd142m"}
    )
    with pytest.raises(EngineError, match="(?s)pretrained weights.*offline"):
        precompute(config, progress=False)
    assert (
        not (tmp_path / "store" / "train").exists() and not (tmp_path / "store" / ".train.building").exists()
    )
    assert Staging(tmp_path / "store" / STAGING).failures() == []  # no shape is blamed for it


def test_records_are_written_in_a_seeded_shuffled_order(tmp_path):
    """Uid order groups categories (LitData shuffles only chunks and items within them): the engine shuffles."""
    categories = ["airplane", "chair", "lamp", "mug"]
    for cat in categories:
        for i in range(4):
            write_labelled_shape(tmp_path / "in", f"{cat}_{i:04d}", category=cat)
    store = tmp_path / "store"
    config = tiny_config(**{"input.paths": f"[{tmp_path / 'in'}]", "output": str(store), "split.val_fraction": 0,
                            "camera.num_views": 2, "camera.resolution": 32})  # fmt: skip
    precompute(config, progress=False)
    first = [open_split(store, "train")[i]["category"] for i in range(8)]
    assert len(set(first)) >= 3, first
    info = read_store_info(store)
    assert info["write_order"] == {"shuffled": True, "seed": 0}
    assert info["stats"]["categories"]["train"] == {c: 4 for c in categories}
    order = (store / "train.txt").read_text().split()

    # The same seed gives the same order; another seed another one; none (uid order) groups the categories.
    assert precompute(config, progress=False)["written"]["train"] == order
    config.write_order_seed = 1
    assert precompute(config, progress=False)["written"]["train"] != order
    config.write_order_seed = None
    precompute(config, progress=False)
    assert [open_split(store, "train")[i]["category"] for i in range(8)] == ["airplane"] * 4 + ["chair"] * 4
    assert read_store_info(store)["write_order"] == {"shuffled": False, "seed": None}


def _write_find3d(folder: Path, points: np.ndarray) -> None:
    folder.mkdir(parents=True)
    torch.save(torch.from_numpy(points), folder / "points.pt")
    torch.save(torch.from_numpy(np.stack([points[:, 0] < 0, points[:, 0] >= 0])), folder / "mask2points.pt")
    (folder / "mask_labels.txt").write_text("left\nright\n")


def test_given_points_off_the_mesh_fail_the_shape(tmp_path):
    """Find3D points normalised another way would be hidden by the nearest-neighbour fill: they fail the shape."""
    from data_engine.mesh import normalize_mesh, sample_surface

    inputs = tmp_path / "in"
    inputs.mkdir()
    for uid in ("good", "scaled"):
        composed_mesh().export(inputs / f"{uid}.ply")
    points, _ = sample_surface(normalize_mesh(composed_mesh())[0], 300, seed=1)
    _write_find3d(tmp_path / "find3d" / "good", points)
    _write_find3d(tmp_path / "find3d" / "scaled", points * 1.2)  # e.g. a unit-sphere normalisation
    config = tiny_config(**{"input.paths": f"[{inputs}]", "output": str(tmp_path / "store"), "split.val_fraction": 0,
                            "labels.find3d_root": str(tmp_path / "find3d")})  # fmt: skip
    summary = precompute(config, progress=False)
    assert summary["written"]["train"] == ["good"]
    (note,) = json.loads((tmp_path / "store" / "report.json").read_text())["failed"]
    assert note["uid"] == "scaled" and "ShapeCheckError" in note["reason"]
    assert "points.pt" in note["reason"] and "checks.max_point_distance=0.01" in note["reason"]

    # The tolerance is a setting (null skips the check); failed shapes are checked again with --retry-failed.
    config.checks.max_point_distance = 0.5
    assert sorted(precompute(config, progress=False, retry_failed=True)["written"]["train"]) == ["good", "scaled"]


def test_shapes_few_views_see_are_listed_as_warnings(tmp_path):
    _write_inputs(tmp_path / "in", 2)
    store = tmp_path / "store"
    config = tiny_config(**{"input.paths": f"[{tmp_path / 'in'}]", "output": str(store), "split.val_fraction": 0,
                            "camera.num_views": 1})  # fmt: skip
    precompute(config, progress=False)
    report = json.loads((store / "report.json").read_text())
    staging = Staging(store / STAGING)
    seen = [json.loads(staging.read_field(u, "meta"))["seen_fraction"] for u in ("shape0", "shape1")]
    assert all(f < 0.5 for f in seen)  # one view sees less than half of a solid
    assert [w["uid"] for w in report["warnings"]] == [u for u in (store / "train.txt").read_text().split()]
    assert "checks.min_seen_fraction is 50%" in report["warnings"][0]["reason"]
    assert report["failed"] == [] and report["done"] == 2
    hist = read_store_info(store)["stats"]["seen_fraction"]
    assert sum(hist["counts"]) == 2 and len(hist["bin_edges"]) == 11

    config.checks.min_seen_fraction = 0.0
    precompute(config, progress=False)
    assert json.loads((store / "report.json").read_text())["warnings"] == []


@pytest.mark.skipif(
    not any(ctypes.util.find_library(n) for n in ("EGL", "OSMesa")),
    reason="no EGL/OSMesa library (apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri)",
)
def test_precompute_through_pyrender(tmp_path):
    """The Objaverse config's renderer through the whole engine (the other tests ray-cast)."""
    pytest.importorskip("pyrender")
    _write_inputs(tmp_path / "in", 2)
    stores = {}
    for backend in ("pyrender", "raycast"):
        config = tiny_config(**{"input.paths": f"[{tmp_path / 'in'}]", "output": str(tmp_path / backend),
                                "split.val_fraction": 0, "render.backend": backend})  # fmt: skip
        assert precompute(config, progress=False)["published"]
        stores[backend] = {it["uid"]: decode_record(it) for it in _read_split(tmp_path / backend, "train")}
    assert read_store_info(tmp_path / "pyrender")["render_backend"] == "pyrender"
    assert sorted(stores["pyrender"]) == ["shape0", "shape1"]
    for uid, rec in stores["pyrender"].items():
        other = stores["raycast"][uid]
        assert rec["meta"]["render_backend"] == "pyrender" and np.isfinite(rec["features"]).all()
        np.testing.assert_array_equal(rec["points"], other["points"])  # sampling does not depend on the renderer
        # Both renderers see the same faces (away from silhouettes): nearly the same points are seen.
        assert abs(rec["meta"]["seen_fraction"] - other["meta"]["seen_fraction"]) < 0.05
        assert rec["meta"]["seen_fraction"] > 0.5
