"""Fixtures for the keypoint tests: a tiny random model, a text bank, a KeypointNet-layout folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from patchalign3d.keypoints.keypointnet import DEFAULT_NAMES
from patchalign3d.text import TextBank

NAMES = ["leg end", "seat corner", "wheel centre", "wing tip", "nose"]


@pytest.fixture
def bank() -> TextBank:
    g = torch.Generator().manual_seed(1)
    return TextBank(NAMES, torch.nn.functional.normalize(torch.randn(len(NAMES), 64, generator=g), dim=-1), {})


@pytest.fixture(scope="session")
def chair():
    from data_engine.synthetic import make_shape

    return make_shape("chair", 0)


def sphere_points(n: int, seed: int = 0, centre=(0.0, 0.0, 0.0), radius: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return (x / np.linalg.norm(x, axis=1, keepdims=True) * radius + np.asarray(centre)).astype(np.float64)


def write_pcd(path: Path, points: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"VERSION .7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 1 1\nWIDTH {len(points)}\n"
              f"HEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(points)}\nDATA ascii\n")
    rows = "".join(f"{x:.6f} {y:.6f} {z:.6f} 10975560\n" for x, y, z in points)
    path.write_text(header + rows)


@pytest.fixture
def kpnet(tmp_path) -> Path:
    """A KeypointNet folder in the release layout: 3 test chairs (one without its .pcd), 2 train chairs with
    .pcd, 1 val chair, one annotated table in test; clouds are noisy boxes of 256 points."""
    root = tmp_path / "kpnet"
    rng = np.random.default_rng(0)
    chairs, tables = [], []
    split = {"train": [], "val": [], "test": []}

    def shape(synset: str, model_id: str, which: str, with_pcd: bool = True) -> dict:
        pts = rng.uniform(-0.4, 0.4, size=(256, 3))
        if with_pcd:
            write_pcd(root / "pcds" / synset / f"{model_id}.pcd", pts)
        idx = [int(i) for i in rng.choice(256, 4, replace=False)]
        split[which].append(f"{synset}-{model_id}")
        return {"class_id": synset, "model_id": model_id, "symmetries": {"reflection": [], "rotation": []},
                "keypoints": [{"xyz": pts[i].tolist(), "rgb": [0, 0, 0], "semantic_id": s,
                               "pcd_info": {"point_index": i}, "mesh_info": {"face_index": 0, "face_uv": [0.3, 0.3, 0.4]}}
                              for s, i in zip((0, 1, 17, 18), idx)]}

    for i in range(3):
        chairs.append(shape("03001627", f"c{i}", "test", with_pcd=i != 2))
    for i in range(2):
        chairs.append(shape("03001627", f"t{i}", "train"))
    chairs.append(shape("03001627", "v0", "val"))
    tables.append(shape("04379243", "tab0", "test"))
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "chair.json").write_text(json.dumps(chairs))
    (root / "annotations" / "table.json").write_text(json.dumps(tables))
    (root / "splits").mkdir()
    for name, keys in split.items():
        (root / "splits" / f"{name}.txt").write_text("".join(k + "\n" for k in keys))
    return root


@pytest.fixture
def kpnet_mesh(tmp_path, chair) -> tuple[Path, np.ndarray]:
    """A KeypointNet folder holding one test chair with its mesh: the procedural chair scaled to a diagonal of
    about 1 (ShapeNet's), 1024 surface samples as its .pcd, and its 4 leg ends and 4 seat corners annotated
    (the samples nearest them: leg ends semantic ids 10-13, front seat corners 4-5, back ones 2-3, the bottom
    corners of the chair back). Returns the folder and the annotated indices."""
    import trimesh

    root = tmp_path / "kpnet_mesh"
    mesh = chair.mesh.copy()
    mesh.apply_scale(0.5)
    obj = root / "models" / "03001627" / "m0" / "models" / "model_normalized.obj"
    obj.parent.mkdir(parents=True)
    mesh.export(obj)
    points, _ = trimesh.sample.sample_surface(mesh, 1024, seed=0)
    write_pcd(root / "pcds" / "03001627" / "m0.pcd", points)
    legs = 0.5 * np.asarray(chair.keypoints["leg end"])
    corners = 0.5 * np.asarray(chair.keypoints["seat corner"])
    corners = corners[np.argsort(-corners[:, 2], kind="stable")]  # front (+z) first
    targets = np.concatenate([legs, corners])
    idx = np.linalg.norm(points[None] - targets[:, None], axis=-1).argmin(axis=1)
    semantic = [10, 11, 12, 13, 4, 5, 2, 3]
    entry = {"class_id": "03001627", "model_id": "m0", "keypoints": [
        {"xyz": points[i].tolist(), "semantic_id": sem, "pcd_info": {"point_index": int(i)}} for i, sem in zip(idx, semantic)]}
    (root / "annotations").mkdir()
    (root / "annotations" / "chair.json").write_text(json.dumps([entry]))
    (root / "splits").mkdir()
    for name in ("train", "val", "test"):
        (root / "splits" / f"{name}.txt").write_text("03001627-m0\n" if name == "test" else "")
    return root, idx


def patch_embeddings(model, cloud):
    """The release pipeline by hand (as tests/test_api.py does): normalise, swap y/z, group, encode, project.
    Returns the model's patches of the cloud and their ``(G, D)`` normalised text-space embeddings."""
    x = cloud - cloud.mean(0)
    x = torch.from_numpy((x / np.linalg.norm(x, axis=1).max())[:, [0, 2, 1]].astype(np.float32))[None]
    with torch.no_grad():
        p = model.group(x)
        emb = torch.nn.functional.normalize(model.proj(model.encoder(p.neighborhood, p.centers)), dim=-1)
    return p, emb[0].numpy()


@pytest.fixture
def known(tmp_path, tiny_model, monkeypatch):
    """A KeypointNet folder whose answers are known by construction: one test chair whose two keypoints are the
    centres of patches 3 and 20, a text bank whose two names are exactly those patches' embeddings (every other
    chair name a random direction), and two train chairs identical to it (the few-shot support)."""
    cloud = sphere_points(256, seed=4).astype(np.float32)
    patches, emb = patch_embeddings(tiny_model, cloud)
    centres = patches.center_idx[0].numpy()
    gt = [int(centres[3]), int(centres[20])]
    root = tmp_path / "known"
    entries, split = [], {"train": [], "val": [], "test": []}
    for model_id, which in (("k0", "test"), ("s0", "train"), ("s1", "train")):
        write_pcd(root / "pcds" / "03001627" / f"{model_id}.pcd", cloud)
        split[which].append(f"03001627-{model_id}")
        entries.append({"class_id": "03001627", "model_id": model_id, "keypoints": [
            {"xyz": cloud[i].tolist(), "semantic_id": sem, "pcd_info": {"point_index": i}}
            for i, sem in zip(gt, (0, 17))]})
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "chair.json").write_text(json.dumps(entries))
    (root / "splits").mkdir()
    for name, keys in split.items():
        (root / "splits" / f"{name}.txt").write_text("".join(k + "\n" for k in keys))
    names = sorted(set(DEFAULT_NAMES["chair"].values()))
    rng = np.random.default_rng(0)
    vectors = {n: rng.normal(size=emb.shape[1]) for n in names}
    vectors[DEFAULT_NAMES["chair"][0]], vectors[DEFAULT_NAMES["chair"][17]] = emb[3], emb[20]
    bank = TextBank(names, torch.nn.functional.normalize(torch.tensor(np.stack([vectors[n] for n in names]),
                                                                      dtype=torch.float32), dim=-1), {})
    # the model's sigmoid says yes only to a cosine near 1: the random names are absent
    monkeypatch.setattr(tiny_model, "logit_bias", -0.9 * float(tiny_model.logit_scale(None).detach()), raising=False)
    return root, bank
