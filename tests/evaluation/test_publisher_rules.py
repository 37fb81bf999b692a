"""Each benchmark scored as its publisher scores it: every rule locked against the publisher's code path, with
expected values computed by hand in the comments.

Sources (file:line as read): PartSLIP++ zyc00/PartSLIP2 eval/semantic_eval.py; Find3D ziqi-ma/Find3D (f0801f75)
model/evaluation/core.py, model/data/data.py, model/evaluation/benchmark/eval_benchmark.py; the PatchAlign3D
release dickoah/PatchAlign3D src/datasets/shapenet.py, src/inference/eval.py; COPS marco-garosi/COPS.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from patchalign3d.data import build_dataset
from patchalign3d.evaluation import EvalDataset, PartIoU, Protocol, evaluate, evaluate_main
from patchalign3d.evaluation.averaging import partslip_average, release_batch_ciou
from patchalign3d.evaluation.protocols import load_prompt_table, sample_points
from patchalign3d.text import TextBank
from tests.data.bench_fixtures import write_partnete, write_scanobjectnn, write_shapenetpart
from tests.evaluation.test_find3d import write_h5_root
from tests.evaluation.tiny_models import constant_model, onehot


# -- PartSLIP's averaging ---------------------------------------------------------------------------------------
def test_partslip_part_first_average_on_the_issues_example():
    """PartSLIP2 eval/semantic_eval.py:26-39: per part, the mean IoU over the shapes whose ground truth has it;
    then the mean over parts; then over categories.

    Parts a, b, c (labels 0, 1, 2) of one category, three shapes:
      S1 truth [a]*10,           prediction [a]*9 + [b]           -> a 9/10 (b absent from the truth: skipped)
      S2 truth [a]*10 + [b]*10,  prediction [a]*9 + [c] + [b]*3 + [c]*7 -> a 0.9, b 3/10
      S3 truth [a]*10 + [c]*10,  prediction [a]*9 + [b] + [c]*3 + [b]*7 -> a 0.9, c 0.3
    per shape first: (0.9 + 0.6 + 0.6) / 3 = 70 %;  PartSLIP: (a 0.9 + b 0.3 + c 0.3) / 3 = 50 %.
    """
    a, b, c = 0, 1, 2
    shapes = [
        ([a] * 10, [a] * 9 + [b]),
        ([a] * 10 + [b] * 10, [a] * 9 + [c] + [b] * 3 + [c] * 7),
        ([a] * 10 + [c] * 10, [a] * 9 + [b] + [c] * 3 + [b] * 7),
    ]
    metric = PartIoU(["thing"], "release")
    for i, (truth, pred) in enumerate(shapes):
        metric.update(torch.tensor(pred), torch.tensor(truth), 3, "thing", i)
    summary = metric.compute()
    assert summary.miou == pytest.approx(70.0)
    avg = partslip_average(summary, lambda i: ("thing", ["a", "b", "c"]))
    assert avg.miou == pytest.approx(50.0)
    assert avg.per_part["thing"] == {"a": pytest.approx(90.0), "b": pytest.approx(30.0), "c": pytest.approx(30.0)}
    # the same rows under the find3d convention (parts only predicted count as 0 there): PartSLIP still uses
    # the parts present in the truth, so its figure does not move
    f3d = PartIoU(["thing"], "find3d", unlabelled="ignore")
    for i, (truth, pred) in enumerate(shapes):
        f3d.update(torch.tensor(pred), torch.tensor(truth), 3, "thing", i)
    assert partslip_average(f3d.compute(), lambda i: ("thing", ["a", "b", "c"])).miou == pytest.approx(50.0)


def test_partslip_average_counts_points_of_no_part_whatever_the_run_ignores():
    """PartSLIP2 eval/semantic_eval.py:29-31 scores each part's predicted mask over every point, so a point of no
    part (-1) predicted as a part is in that part's union. Truth [a]*6 + [-1]*4, prediction all a:
    PartSLIP a = 6/10 = 60 %; a run that ignores unlabelled points scores the shape 100 %."""
    truth, pred = torch.tensor([0] * 6 + [-1] * 4), torch.zeros(10, dtype=torch.long)
    for unlabelled, run_iou in (("ignore", 100.0), ("count", 60.0)):
        metric = PartIoU(["thing"], "release", unlabelled=unlabelled)
        metric.update(pred, truth, 2, "thing", 0)
        summary = metric.compute()
        assert summary.miou == pytest.approx(run_iou)
        assert partslip_average(summary, lambda i: ("thing", ["a", "b"])).miou == pytest.approx(60.0)


def test_every_report_carries_partslip_and_metric_partslip_makes_it_the_headline(tmp_path):
    """ShapeNetPart-layout shapes, every point -> the first part (the constant model):
      Table t1 (60 desktop, 30 leg, 10 drawer): 0.6, 0, 0;  t2 (80 desktop, 20 leg): 0.8, 0;  Skateboard s1
      (30 wheel, 70 deck): 0.3, 0.
    mIoU = (0.2 + 0.4 + 0.15) / 3 = 25;  PartSLIP: Table (desktop 0.7 + leg 0 + drawer 0) / 3 = 7/30,
    Skateboard (0.3 + 0) / 2 = 0.15 -> (7/30 + 0.15) / 2 = 19.1667 %.
    """
    root = write_shapenetpart(
        tmp_path / "snp",
        [("Table", "t1", "test", [60, 30, 10]), ("Table", "t2", "test", [80, 20, 0]),
         ("Skateboard", "s1", "test", [30, 70, 0])],
    )
    text = {p: onehot(0) if p in ("desktop", "wheel") else onehot(i + 1) for i, p in
            enumerate(["desktop", "leg or support", "drawer", "wheel", "deck", "belt for foot"])}
    r = evaluate("shapenetpart", root, model=constant_model(), text=text, protocol=Protocol())
    m = r["metric"]
    assert m["miou"] == pytest.approx(25.0) and m["headline"] == "miou"
    assert m["partslip_miou"] == pytest.approx(100 * (7 / 30 + 0.15) / 2, abs=1e-3)
    rows = {row["category"]: row for row in r["per_category"]}
    assert rows["Table"]["partslip_miou"] == pytest.approx(100 * 7 / 30, abs=1e-3)
    assert "**PartSLIP mIoU** (per part, then category)" in r["markdown"]
    r = evaluate("shapenetpart", root, model=constant_model(), text=text, protocol=Protocol(metric="partslip"))
    assert r["metric"]["headline"] == "partslip_miou" and r["metric"]["partslip_miou"] == pytest.approx(19.1667, abs=1e-3)
    assert r["protocol"]["unlabelled_effective"] == "count"  # PartSLIP2 semantic_eval.py:30-31 scores all points


# -- PartNetE's "no part" answer ------------------------------------------------------------------------------
def test_partnete_zero_logit_is_a_switch_and_is_reported(tmp_path):
    """Find3D model/evaluation/core.py:44 prepends a zero logit: a point whose every logit is <= 0 is no part.

    Bottle (one part, "lid"): 7 points of no part (-1), 33 lid; unlabelled points counted (PartSLIP).
      off, lid text = e0 (logit > 0): every point lid -> IoU 33 / 40 = 82.5 %
      off, lid text = -e0 (every logit < 0): still lid everywhere (the only candidate) -> 82.5 %
      on,  lid text = -e0: every point no part -> 0 %;  on, lid text = e1 (logit exactly 0): the zero column
      comes first and wins the tie, as Find3D's argmax -> 0 %;  on, lid text = e0 -> 82.5 %.
    """
    root = write_partnete(tmp_path / "pne", {"Bottle": {"3380": [7, 33]}}, {"Bottle": ["lid"]})
    cases = [(False, onehot(0), 82.5), (False, -onehot(0), 82.5), (True, -onehot(0), 0.0), (True, onehot(1), 0.0),
             (True, onehot(0), 82.5)]
    for on, lid, expected in cases:
        r = evaluate("partnete", root, model=constant_model(), text={"lid": lid},
                     protocol=Protocol(unlabelled="count", none_if_negative=on))
        assert r["metric"]["miou"] == pytest.approx(expected), (on, expected)
        rule = next(x for x in r["rules"] if x["figure"] == "no-part answer")
        assert rule["rule"].startswith("on:" if on else "off:")
        assert ("core.py:44" in rule.get("source", "")) == on


# -- membership_release scores the encoded points only ----------------------------------------------------------
def test_membership_release_scores_only_the_points_the_encoder_sees(tmp_path):
    """The release draws 2048 points, encodes and scores those (src/datasets/shapenet.py:99-101). Here a
    Skateboard of 100 wheel points, 64 encoded as 64 one-point-centred patches: every encoded point is in a
    patch and takes "wheel" (e0) -> 100 %. Scoring all 100 would give the 36 never-encoded points all-zero
    logits, i.e. the release's global part 0 (Airplane's body), a foreign part: 64 / 100 = 64 %.
    """
    root = write_shapenetpart(tmp_path / "snp", [("Skateboard", "s1", "test", [100, 0, 0])])
    text = {"wheel": onehot(0), "deck": onehot(1), "belt for foot": onehot(2)}
    proto = Protocol(assign="membership_release", max_points=64, num_groups=64)
    r = evaluate("shapenetpart", root, model=constant_model(), text=text, protocol=proto)
    assert r["metric"]["miou"] == pytest.approx(100.0)
    data = EvalDataset(build_dataset("shapenetpart", root), proto)
    assert len(data[0].points) == 64  # scored points = encoded points
    rule = next(x for x in r["rules"] if x["figure"] == "scored points")
    assert "only the 64 points the encoder sees" in rule["rule"] and "shapenet.py:97-101" in rule["source"]
    # the project's own membership rule labels every point (non-encoded: nearest centre): 100 points, 100 %
    r = evaluate("shapenetpart", root, model=constant_model(), text=text,
                 protocol=Protocol(assign="membership", max_points=64, num_groups=64))
    assert r["metric"]["miou"] == pytest.approx(100.0)
    assert len(EvalDataset(build_dataset("shapenetpart", root), Protocol(assign="membership"))[0].points) == 100


# -- the release's order and cIoU ---------------------------------------------------------------------------------
def test_normalize_before_sampling_is_the_release_order():
    """shapenet.py:97-99: pc_normalize on the whole cloud, then np.random.choice of 2048. Four points around
    (5, 5, 5): centroid (5, 5, 5), radius 3 -> normalised set {(+-1/3, 0, 0), (0, +-1, 0)}."""
    pts = np.array([[6, 5, 5], [4, 5, 5], [5, 8, 5], [5, 2, 5]], np.float32)
    normalised = {(1 / 3, 0, 0), (-1 / 3, 0, 0), (0, 1, 0), (0, -1, 0)}
    proto = Protocol(points=3, normalize_before_sampling=True)
    drawn, _ = sample_points(pts, np.arange(4), "u", proto)
    assert all(any(np.allclose(p, q, atol=1e-6) for q in normalised) for p in drawn)
    assert proto.segment_kwargs()["normalize"] is False  # not normalised again (on the drawn subset)
    raw, _ = sample_points(pts, np.arange(4), "u", Protocol(points=3))
    assert all(any(np.allclose(p, q) for q in pts) for p in raw)
    with pytest.raises(ValueError, match="normalize_before_sampling needs normalize=True"):
        Protocol(normalize=False, normalize_before_sampling=True)


def test_release_batch_ciou_by_hand():
    """src/inference/eval.py:288-296: per batch, each category's mean is appended; a category scores the mean
    of its batch means. Batches of 2: [A 10, A 20] [A 60, B 40] -> A (15 + 60) / 2 = 37.5, B 40 -> 38.75
    (per category over shapes: A 30, B 40 -> 35)."""
    assert release_batch_ciou([0, 0, 0, 1], [10.0, 20.0, 60.0, 40.0], [0, 1, 2, 3], 2) == pytest.approx(38.75)
    # a shape with no part in its truth (nan) is left out of its batch, as the release skips it
    assert release_batch_ciou([0, 0, 1], [10.0, float("nan"), 40.0], [0, 1, 2], 2) == pytest.approx(25.0)


def test_ciou_release_batches_uses_the_release_loader_order(tmp_path):
    """The release reads categories in synsetoffset2category.txt order, then sorted file names
    (src/datasets/shapenet.py:43-65), whatever the split list's order. Listed t3, s1, t2, t1; the release reads
    s1, t1, t2, t3. Constant model: s1 0.15, t1 0.2, t2 0.4, t3 (all desktop) 1.0.
      --cIoU release-batches, batches of 2: [s1, t1] [t2, t3] -> Table (0.2 + 0.7) / 2 = 0.45, Skateboard
      0.15 -> 30 %;  categories: Table (0.2 + 0.4 + 1.0) / 3 = 0.5333 -> (0.5333 + 0.15) / 2 = 34.1667 %.
      (In the listing's order, [t3, s1] [t2, t1] would give Table (1.0 + 0.3) / 2 -> 40 %.)
    """
    root = write_shapenetpart(
        tmp_path / "snp",
        [("Table", "t3", "test", [50, 0, 0]), ("Skateboard", "s1", "test", [30, 70, 0]),
         ("Table", "t2", "test", [80, 20, 0]), ("Table", "t1", "test", [60, 30, 10])],
    )
    text = {p: onehot(0) if p in ("desktop", "wheel") else onehot(i + 1) for i, p in
            enumerate(["desktop", "leg or support", "drawer", "wheel", "deck", "belt for foot"])}
    proto = Protocol(ciou="release-batches", ciou_batch_size=2)
    r = evaluate("shapenetpart", root, model=constant_model(), text=text, protocol=proto)
    m = r["metric"]
    assert m["ciou"] == pytest.approx(30.0) and m["ciou_rule"] == "release-batches"
    assert m["ciou_categories"] == pytest.approx(100 * (1.6 / 3 + 0.15) / 2, abs=1e-3)
    assert m["miou"] == pytest.approx(43.75)
    assert "release per-batch avg" in r["markdown"]
    r = evaluate("shapenetpart", root, model=constant_model(), text=text, protocol=Protocol())
    assert r["metric"]["ciou"] == pytest.approx(34.1667, abs=1e-3)  # the default is unchanged


# -- Find3D ---------------------------------------------------------------------------------------------------------
def test_find3d_topk_parts_without_a_prompt_are_not_scored_and_sentences_are_verbatim(tmp_path):
    """core.py:83 loops over the prompts Find3D has: Airplane's 4th part (engine) gets none in the top-k file and
    is never scored; data.py:411-414 uses the top-k sentences as they are (not "{part} of a {category}").

    Airplane (8 body, 8 wing, 8 tail, 8 engine), every point -> prompt 0 (body), find3d IoU:
      scored: body 8/32, wing 0, tail 0 -> 0.25 / 3 = 8.333 %  (all four scored: 0.25 / 4 = 6.25 %)
    """
    pytest.importorskip("h5py")
    root = write_h5_root(tmp_path / "snp", [("Airplane", [8, 8, 8, 8])]).parent
    f3d = tmp_path / "f3d" / "shapenetpart"
    f3d.mkdir(parents=True)
    sentences = ["The fuselage.", "Wings and tail.", "handle of a knife"]
    (f3d / "topk_prompts.json").write_text(json.dumps({"airplane": sentences}))
    proto = Protocol(prompts="find3d-topk", prompt_template="{part} of a {category}", metric="find3d",
                     protocol_dir=str(tmp_path / "f3d"))
    text = {s: onehot(i) for i, s in enumerate(sentences)}
    r = evaluate("shapenetpart", root, model=constant_model(), text=text, protocol=proto)
    assert r["metric"]["miou"] == pytest.approx(100 / 12, abs=1e-3)
    data = EvalDataset(build_dataset("shapenetpart", root), proto)
    assert data[0].candidates == tuple(sentences)  # verbatim: the template is not applied
    assert data.unscored == {"Airplane": ["engine or frame"]}
    rules = {x["figure"]: x for x in r["rules"]}
    assert "core.py:83" in rules["unscored parts"]["source"] and "engine or frame" in rules["unscored parts"]["rule"]
    assert "data.py:411-414" in rules["prompts"]["source"]
    assert load_prompt_table("find3d-topk", str(tmp_path / "f3d")).verbatim


def test_find3d_preset_scores_every_shape_and_states_the_hdf5_order(tmp_path):
    """eval_benchmark.py:129,132: --subset is off unless given, so the find3d preset scores every shape;
    data.py:358 concatenates glob('*test*.h5') unsorted, so the report states the order assumed."""
    pytest.importorskip("h5py")
    from tests.evaluation.test_find3d import write_protocol_dir

    root = write_h5_root(tmp_path / "snp").parent  # 5 shapes
    proto_dir = write_protocol_dir(tmp_path / "f3d", np.zeros((5, 3)), {"chair": ["0"]})
    proto = Protocol(**{**Protocol(preset="find3d", rotation="find3d", metric="find3d").to_dict(),
                        "protocol_dir": str(proto_dir)})
    data = EvalDataset(build_dataset("shapenetpart", root), proto)
    assert len(data) == 5
    order = data.find3d.to_dict()["order_assumed"]
    assert "ply_data_test0.h5" in order and "model/data/data.py line 358" in order
    sub = EvalDataset(build_dataset("shapenetpart", root), Protocol(**{**proto.to_dict(), "subset": "find3d"}))
    assert len(sub) == 1


# -- command-line messages ----------------------------------------------------------------------------------------
def test_cli_messages_name_the_flag_or_path(tmp_path, capsys, monkeypatch):
    pytest.importorskip("h5py")
    from patchalign3d.model.checkpoint import export_released
    from tests.evaluation.test_find3d import write_protocol_dir

    snp = write_shapenetpart(tmp_path / "snp", [("Table", "t1", "test", [60, 30, 10])])
    # 1. no --checkpoint, offline: the error names --checkpoint PATH
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert evaluate_main(["shapenetpart", "--root", str(snp), "--text-encoder", "minilm"]) == 1
    err = capsys.readouterr().err
    assert "no --checkpoint was given" in err and "--checkpoint PATH" in err and "Traceback" not in err
    # 2. --text-templates ensemble with a bank that does not name its encoder: advice that works with a bank
    ckpt = export_released(constant_model(), tmp_path / "tiny.pt")
    TextBank(["desktop", "leg or support", "drawer"], torch.eye(3, 64)).save(tmp_path / "bank.pt")
    base = ["shapenetpart", "--root", str(snp), "--checkpoint", str(ckpt), "--text-bank", str(tmp_path / "bank.pt")]
    assert evaluate_main([*base, "--text-templates", "ensemble"]) == 1
    err = capsys.readouterr().err
    assert "--text-templates release" in err and "replace --text-bank with --text-encoder SPEC" in err
    # 3. PartNetE's split folder given as the root: the message points at the folder above
    pne = write_partnete(tmp_path / "pne", {"Bottle": {"3380": [7, 33]}}, {"Bottle": ["lid"]})
    assert evaluate_main(["partnete", "--root", str(pne / "test"), "--checkpoint", str(ckpt)]) == 1
    assert f"pass --root {pne.resolve()}" in capsys.readouterr().err
    # 4. the subset error's advice (missing=skip) when no subset shape is present: say --subset all
    root = write_h5_root(tmp_path / "h5").parent
    proto_dir = write_protocol_dir(tmp_path / "f3d", np.zeros((5, 3)), {"chair": ["7", "8"]})
    args = ["shapenetpart", "--root", str(root), "--checkpoint", str(ckpt), "--text-bank", str(tmp_path / "bank.pt"),
            "--protocol", "find3d", "--subset", "find3d", "--protocol-dir", str(proto_dir), "--categories", "chair"]
    assert evaluate_main(args) == 1
    assert "--dataset-option missing=skip" in capsys.readouterr().err
    assert evaluate_main([*args, "--dataset-option", "missing=skip"]) == 1
    err = capsys.readouterr().err
    assert "is in Find3D's subset (2 of its shapes are absent from this copy): pass --subset all" in err


# -- ScanObjectNN end to end ------------------------------------------------------------------------------------
def test_cli_scanobjectnn_background_switch(tmp_path, capsys):
    """COPS keeps the background as a scored class (data/ScanObjectNN.py:121-122, get_dataset.py:23) and scores
    a shape over all its classes, an empty union scoring 1 (compute_metrics.py:166-184). A chair scan: 10
    background (id 0), 20 back (id 2), 10 seat (id 5); every point -> the candidate whose text is e0.
      keep (classes background, back, arm, base, seat; e0 = background): 0.25, 0, 1, 1, 0 -> 45 %
      drop (classes back, arm, base, seat; e0 = back; 30 points): 2/3, 1, 1, 0 -> 66.667 %
    """
    from patchalign3d.model.checkpoint import export_released

    root = write_scanobjectnn(tmp_path / "sonn", [("014_00018", 4, True, [0] * 10 + [2] * 20 + [5] * 10)])
    ckpt = export_released(constant_model(), tmp_path / "tiny.pt")
    for e0, background, expected in (("background", "keep", 45.0), ("back", "drop", 200 / 3)):
        names = ["background", "back", "arm", "base", "seat"]
        others = [n for n in names if n != e0]
        TextBank([e0, *others], torch.eye(5, 64)).save(tmp_path / "bank.pt")
        out = tmp_path / f"{background}.json"
        argv = ["scanobjectnn", "--root", str(root), "--checkpoint", str(ckpt), "--text-bank",
                str(tmp_path / "bank.pt"), "--background", background, "--json", str(out)]
        assert evaluate_main(argv) == 0
        report = json.loads(out.read_text())
        assert report["metric"]["miou"] == pytest.approx(expected, abs=1e-3)
        assert report["protocol"]["metric"] == "pointbert"
        choices = report["dataset"]["choices"]
        assert choices["background"]["value"] == background and choices["drop_parts"]["value"]["chair"] == ["head"]
        assert any(r["figure"] == "dataset: background" for r in report["rules"])
    assert "PartSLIP mIoU" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["faust", "--root", str(tmp_path), "--background", "drop"])
    assert exit_info.value.code == 2  # a usage error
    assert "--background is a scanobjectnn option, not one of faust" in capsys.readouterr().err


def test_find3d_headline_is_the_category_mean_on_shapenetpart_and_partnete():
    """Find3D prints np.mean of its per-category means on ShapeNetPart and PartNetE (eval_benchmark.py:98-102,
    113-117) and the mean over shapes on Objaverse (evaluate3d, lines 41-42)."""
    from patchalign3d.evaluation import Protocol, benchmark_protocol

    assert [benchmark_protocol(b, "find3d").headline_figure for b in ("shapenetpart", "partnete", "objaverse")] == [
        "ciou", "ciou", "miou"]
    assert benchmark_protocol("shapenetpart", "paper").headline_figure == "miou"
    # a switch applied over a preset (as the command line does) still decides the default headline
    paper = benchmark_protocol("partnete", "paper").to_dict()
    assert Protocol.from_dict({**paper, "metric": "partslip"}).headline_figure == "partslip_miou"
    with pytest.raises(ValueError, match="headline must be one of"):
        Protocol(headline="best")
