"""Protocol switches: prompt tables, templates, seeded draws and rotations, configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchalign3d.data.shapenetpart import SHAPENETPART_PARTS
from patchalign3d.evaluation.cli import load_config
from patchalign3d.evaluation.protocols import (
    PromptTable,
    Protocol,
    benchmark_protocol,
    load_prompt_table,
    random_rotation,
    sample_points,
    shape_rng,
)

REPO = Path(__file__).resolve().parents[2]


def test_prompt_tables():
    chair = list(SHAPENETPART_PARTS["Chair"])
    assert load_prompt_table("release").prompts("Chair", chair) == ["back", "seat", "leg", "arm"]
    assert load_prompt_table("find3d").prompts("chair", chair) == ["back", "seat pad", "leg", "armrest"]
    assert (
        load_prompt_table("find3d").prompts("Motorbike", list(SHAPENETPART_PARTS["Motorbike"]))[4] == "light"
    )
    # categories the table does not list keep their own names
    assert load_prompt_table("find3d").prompts("human", ["arm", "head"]) == ["arm", "head"]
    with pytest.raises(ValueError, match="lists 4 prompts for 'Chair' but its label space has 3 parts"):
        load_prompt_table("find3d").prompts("Chair", chair[:3])
    with pytest.raises(ValueError, match="lists 3 prompts for 'Chair' but its label space has 4 parts"):
        PromptTable("short", {"Chair": ["a", "b", "c"]}).prompts("Chair", chair)
    assert PromptTable("short", {"Chair": ["a", "b", "c"]}, allow_fewer=True).prompts("Chair", chair) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="neither one of"):
        load_prompt_table("pointclip")


def test_custom_yaml_table(tmp_path):
    path = tmp_path / "prompts.yaml"
    path.write_text("categories:\n  Table: [table top, table leg, drawer]\nparts:\n  arm: human arm\n")
    table = load_prompt_table(str(path))
    assert table.prompts("Table", ["desktop", "leg or support", "drawer"]) == [
        "table top",
        "table leg",
        "drawer",
    ]
    assert table.prompts("human", ["arm", "leg"]) == ["human arm", "leg"]
    proto = Protocol(prompts=str(path), prompt_template="{part} of a {category}")
    assert proto.prompts_for("Table", ["desktop", "leg or support", "drawer"])[0] == "table top of a table"
    path.write_text("categories:\n  Table: table top\n")
    with pytest.raises(ValueError, match="'categories' must map category names to lists"):
        load_prompt_table(str(path))
    path.write_text("prompts: {}\n")
    with pytest.raises(ValueError, match=r"unknown prompt table keys \['prompts'\]"):
        load_prompt_table(str(path))


def test_protocol_validation():
    with pytest.raises(ValueError, match="rotation must be one of"):
        Protocol(rotation="sideways")
    with pytest.raises(ValueError, match="metric must be one of"):
        Protocol(metric="miou")
    with pytest.raises(ValueError, match=r"must contain '\{part\}'"):
        Protocol(prompt_template="a {category}")
    with pytest.raises(ValueError, match=r"unknown protocol keys \['npoints'\]"):
        Protocol.from_dict({"npoints": 5})
    assert Protocol.from_dict({"points": "all", "max_points": "all"}).points is None
    assert Protocol.from_dict(Protocol(points=7).to_dict()) == Protocol(points=7)


def test_seeded_point_draws():
    pts = np.arange(30, dtype=np.float32).reshape(10, 3)
    lab = np.arange(10)
    proto = Protocol(points=6, seed=3)
    a, la = sample_points(pts, lab, "shape/a", proto)
    b, lb = sample_points(pts, lab, "shape/a", proto)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert np.array_equal(a, pts[la])  # points and labels drawn together
    assert len(set(la.tolist())) == 6  # without replacement when there are enough points
    other = sample_points(pts, lab, "shape/b", proto)[1]
    reseeded = sample_points(pts, lab, "shape/a", Protocol(points=6, seed=4))[1]
    assert not np.array_equal(la, other) and not np.array_equal(la, reseeded)
    many = sample_points(pts, lab, "x", Protocol(points=25))[1]  # more than the cloud: repeats
    assert len(many) == 25 and set(many.tolist()) <= set(range(10))
    same, same_l = sample_points(pts, lab, "x", Protocol())
    assert np.array_equal(same, pts) and np.array_equal(same_l, lab)


def test_rotations():
    rng = shape_rng(0, "u")
    r = random_rotation(rng, "random")
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(r), 1.0)
    up = random_rotation(np.random.default_rng(1), "random-up", "y")
    assert np.allclose(up[1], [0, 1, 0]) and np.allclose(up[:, 1], [0, 1, 0])
    upz = random_rotation(np.random.default_rng(1), "random-up", "z")
    assert np.allclose(upz[2], [0, 0, 1])
    pts = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    rot, _ = sample_points(pts, np.zeros(20, int), "u", Protocol(rotation="random-up"))
    assert np.allclose(rot[:, 1], pts[:, 1], atol=1e-5)  # y (up) untouched
    assert np.allclose(np.linalg.norm(rot, axis=1), np.linalg.norm(pts, axis=1), atol=1e-5)


def test_benchmark_protocols_and_configs():
    snp = benchmark_protocol("shapenetpart")
    assert (snp.points, snp.replace, snp.normalize, snp.metric, snp.category_mask) == (
        2048,
        True,
        True,
        "release",
        True,
    )
    faust = benchmark_protocol("faust")
    assert (faust.normalize, faust.metric, faust.points) == (False, "pointbert", None)
    assert benchmark_protocol("objaverse").metric == "find3d"
    for name in ("shapenetpart", "faust", "objaverse", "partnete", "shapenetpart_find3d", "partnete_find3d",
                 "scanobjectnn"):
        cfg = load_config(REPO / "configs" / "eval" / f"{name}.yaml")
        preset = cfg["protocol"].get("preset", "paper")
        proto = Protocol.from_dict({**benchmark_protocol(cfg["benchmark"], preset).to_dict(), **cfg["protocol"]})
        if name in ("shapenetpart", "faust", "partnete", "scanobjectnn"):  # the paper's protocol spelled out
            assert proto == benchmark_protocol(name)
        elif name.endswith("find3d"):  # the Find3D configs name the preset only
            assert proto == benchmark_protocol(cfg["benchmark"], preset)
    assert benchmark_protocol("partnete").unlabelled == "count"
    # the release's FAUST IoU (src/inference/eval.py:188-193) compares `preds == pid` over every vertex: one of
    # no label (-1) predicted as `pid` is in pid's union
    assert benchmark_protocol("faust").unlabelled == benchmark_protocol("faust", "release").unlabelled == "count"
    # ScanObjectNN's paper preset is COPS's: pointbert IoU (compute_metrics.py:166-184), background kept and
    # COPS's dropped parts, which are the loader's defaults, as the config says
    import inspect

    from patchalign3d.data import ScanObjectNN

    assert benchmark_protocol("scanobjectnn").metric == "pointbert"
    defaults = {k: v.default for k, v in inspect.signature(ScanObjectNN.__init__).parameters.items()}
    cfg = load_config(REPO / "configs" / "eval" / "scanobjectnn.yaml")
    assert cfg["dataset"] == {k: defaults[k] for k in ("background", "drop_parts", "scene")} == {
        "background": "keep", "drop_parts": "cops", "scene": "keep"}


def test_presets():
    for name in ("objaverse", "partnete", "partnet", "scanobjectnn"):
        assert benchmark_protocol(name, "release") == Protocol(
            **{**benchmark_protocol(name).to_dict(), "preset": "release"}
        )
    # the released ShapeNetPart script normalises the whole cloud before its draw and averages per batch
    # (src/datasets/shapenet.py:97-101, src/inference/eval.py:288-296); the paper preset keeps the defaults
    assert benchmark_protocol("shapenetpart", "release") == Protocol(
        **{**benchmark_protocol("shapenetpart").to_dict(), "preset": "release", "normalize_before_sampling": True,
           "ciou": "release-batches"}
    )
    paper = benchmark_protocol("shapenetpart")
    assert (paper.normalize_before_sampling, paper.ciou) == (False, "categories")
    release_faust = benchmark_protocol("faust", "release")  # the released script draws 2048 vertices
    assert (release_faust.points, release_faust.replace, release_faust.normalize) == (2048, False, False)
    f3d = benchmark_protocol("shapenetpart", "find3d")
    # Find3D's eval_benchmark.py:129,132: --subset is off unless given -> every shape by default
    assert (f3d.prompts, f3d.prompt_template, f3d.rotation, f3d.subset, f3d.points, f3d.metric) == (
        "find3d", "{part} of a {category}", "find3d", "all", None, "find3d")
    assert benchmark_protocol("partnete", "find3d").subset == "all"
    assert not f3d.none_if_negative and benchmark_protocol("partnete", "find3d").none_if_negative
    assert benchmark_protocol("objaverse", "find3d").none_if_negative
    with pytest.raises(ValueError, match="unknown protocol preset 'mine'"):
        benchmark_protocol("faust", "mine")
    with pytest.raises(ValueError, match="subset must be one of"):
        Protocol(subset="half")
    # the release names its zero-logit rule "membership"; elsewhere "membership" is the nearest-centre one
    assert Protocol(preset="release", assign="membership").assign == "membership_release"
    assert Protocol(assign="membership").assign == "membership"


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("benchmark: faust\nprotocol:\n  metrc: release\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown protocol keys \['metrc'\]"):
        load_config(bad)
    bad.write_text("benchmrk: faust\n")
    with pytest.raises(ValueError, match=r"unknown keys \['benchmrk'\]"):
        load_config(bad)
