"""End-to-end evaluation with tiny models: hand-computed figures, determinism, CLI, pictures, Lightning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from patchalign3d.data import build_dataset
from patchalign3d.evaluation import EvalDataset, Protocol, evaluate, evaluate_main, make_dataloader
from patchalign3d.model import patchalign3d_tiny
from patchalign3d.text import ENSEMBLE_TEMPLATES, TextBank, TextEncoder, UnknownTextEncoderError
from tests.data.bench_fixtures import write_faust_npz, write_objaverse, write_partnete, write_shapenetpart
from tests.evaluation.tiny_models import constant_model, onehot

REPO = Path(__file__).resolve().parents[2]
SHAPES = [
    ("Table", "t1", "test", [60, 30, 10]),
    ("Table", "t2", "test", [80, 20, 0]),
    ("Skateboard", "s1", "test", [30, 70, 0]),
]
PROMPTS = ["desktop", "leg or support", "drawer", "wheel", "deck", "belt for foot"]


def texts(first_parts: set[str]) -> dict[str, torch.Tensor]:
    return {p: onehot(0) if p in first_parts else onehot(i + 1) for i, p in enumerate(PROMPTS)}


@pytest.fixture
def snp_root(tmp_path):
    return write_shapenetpart(tmp_path / "snp", SHAPES)


def test_hand_computed_release_figures(snp_root):
    # Category known: every Table point -> "desktop", every Skateboard point -> "wheel".
    #   t1 (60 desktop, 30 leg, 10 drawer): IoUs 0.6, 0, 0 -> 0.2
    #   t2 (80 desktop, 20 leg):            IoUs 0.8, 0    -> 0.4
    #   s1 (30 wheel, 70 deck):             IoUs 0.3, 0    -> 0.15
    # mIoU = (0.2 + 0.4 + 0.15) / 3 = 25.0 %;  cIoU = (Table 0.3 + Skateboard 0.15) / 2 = 22.5 %
    r = evaluate(
        "shapenetpart",
        snp_root,
        model=constant_model(),
        text=texts({"desktop", "wheel"}),
        protocol=Protocol(),
    )
    assert r["metric"]["miou"] == pytest.approx(25.0) and r["metric"]["ciou"] == pytest.approx(22.5)
    rows = {row["category"]: row for row in r["per_category"]}
    assert rows["Table"]["miou"] == pytest.approx(30.0) and rows["Skateboard"]["miou"] == pytest.approx(15.0)
    assert rows["Table"]["parts"] == {"desktop": pytest.approx(70.0), "leg or support": 0.0, "drawer": 0.0}
    assert {s["uid"]: s["iou"] for s in r["shapes"]} == {
        "04379243/t1": pytest.approx(20.0),
        "04379243/t2": pytest.approx(40.0),
        "04225987/s1": pytest.approx(15.0),
    }
    assert r["protocol"]["metric"] == "release" and r["protocol"]["prompt_table"]["name"] == "release"
    assert "| Table | 2 | 30.0 | desktop 70.0, leg or support 0.0, drawer 0.0 |" in r["markdown"]
    assert "**25.0**" in r["markdown"] and "**22.5**" in r["markdown"]


def test_hand_computed_other_conventions(snp_root):
    model, text = constant_model(), texts({"desktop", "wheel"})
    # find3d: a part absent from both prediction and truth is skipped -> same figures here
    r = evaluate("shapenetpart", snp_root, model=model, text=text, protocol=Protocol(metric="find3d"))
    assert r["metric"]["miou"] == pytest.approx(25.0)
    # pointbert: absent from both scores 1: t1 0.2, t2 (0.8+0+1)/3 = 0.6, s1 (0.3+0+1)/3 = 13/30
    # mIoU = (0.2 + 0.6 + 13/30) / 3 = 37/90;  cIoU = (0.4 + 13/30) / 2 = 5/12
    r = evaluate("shapenetpart", snp_root, model=model, text=text, protocol=Protocol(metric="pointbert"))
    assert r["metric"]["miou"] == pytest.approx(3700 / 90, abs=1e-3)
    assert r["metric"]["ciou"] == pytest.approx(500 / 12, abs=1e-3)


def test_without_category_mask(snp_root):
    # All six prompts compete; only "desktop" is e0, so skateboards are called "desktop", a foreign part:
    # s1 scores 0 -> mIoU = (0.2 + 0.4 + 0) / 3 = 20 %, cIoU = (0.3 + 0) / 2 = 15 %
    r = evaluate(
        "shapenetpart",
        snp_root,
        model=constant_model(),
        text=texts({"desktop"}),
        protocol=Protocol(category_mask=False),
    )
    assert r["metric"]["miou"] == pytest.approx(20.0) and r["metric"]["ciou"] == pytest.approx(15.0)
    data = EvalDataset(build_dataset("shapenetpart", snp_root), Protocol(category_mask=False))
    item = data[2]
    assert item.candidates == tuple(PROMPTS) and item.to_label.tolist() == [-1, -1, -1, 0, 1, 2]


def test_find3d_objaverse_counts_unlabelled(tmp_path):
    # mug: 8 unlabelled, 12 handle, 20 body; every point -> "handle" (e0).
    #   unlabelled counted (Find3D): handle I=12, U=40 -> 0.3; body I=0, U=20 -> 0  => 0.15
    #   unlabelled ignored:          handle I=12, U=32 -> 0.375; body 0            => 0.1875
    root = write_objaverse(tmp_path / "obja", "seen", {"mug_01": (["handle", "body"], [8, 12, 20])})
    text = {"handle": onehot(0), "body": onehot(1)}
    r = evaluate(
        "objaverse",
        root,
        model=constant_model(),
        text=text,
        protocol=Protocol(metric="find3d"),
        dataset_options={"split": "seen"},
    )
    assert r["metric"]["miou"] == pytest.approx(15.0) and r["protocol"]["unlabelled_effective"] == "count"
    r = evaluate(
        "objaverse",
        root,
        model=constant_model(),
        text=text,
        protocol=Protocol(metric="find3d", unlabelled="ignore"),
        dataset_options={"split": "seen"},
    )
    assert r["metric"]["miou"] == pytest.approx(18.75)


def test_faust_release_protocol(tmp_path):
    # two scans over arm, head, leg, torso; every point -> "arm" (e0); pointbert (empty union = 1):
    #   a: labels [0]*10 + [3]*30 -> arm 0.25, head 1, leg 1, torso 0 -> 0.5625
    #   b: labels [1]*20 + [2]*20 -> arm 0, head 0, leg 0, torso 1 -> 0.25      => mIoU 40.625
    names = ["arm", "head", "leg", "torso"]
    root = write_faust_npz(
        tmp_path / "faust", {"a": (names, [0] * 10 + [3] * 30), "b": (names, [1] * 20 + [2] * 20)}
    )
    text = {n: onehot(i) for i, n in enumerate(names)}
    r = evaluate("faust", root, model=constant_model(), text=text)  # the paper's FAUST protocol
    assert r["protocol"]["normalize"] is False and r["protocol"]["metric"] == "pointbert"
    assert r["metric"]["miou"] == pytest.approx(40.625)


def test_deterministic_with_seed(snp_root, tiny_model):
    g = torch.Generator().manual_seed(0)
    text = {p: torch.nn.functional.normalize(torch.randn(64, generator=g), dim=0) for p in PROMPTS}
    proto = Protocol(points=64, replace=True, rotation="random", seed=5)
    a = evaluate("shapenetpart", snp_root, model=tiny_model, text=text, protocol=proto, batch_size=2)
    b = evaluate("shapenetpart", snp_root, model=tiny_model, text=text, protocol=proto, batch_size=2)
    assert a["shapes"] == b["shapes"] and a["metric"] == b["metric"]
    c = evaluate("shapenetpart", snp_root, model=tiny_model, text=text, protocol=Protocol(points=None))
    d = evaluate("shapenetpart", snp_root, model=tiny_model, text=text, protocol=Protocol(points=None))
    assert c["shapes"] == d["shapes"]
    assert a["protocol"]["rotation"] == "random" and a["protocol"]["seed"] == 5


def test_report_says_which_precision_ran(snp_root, tiny_model):
    from patchalign3d.precision import DEFAULT_DTYPE, dtype_name, resolve_dtype

    text = {p: torch.nn.functional.normalize(torch.randn(64), dim=0) for p in PROMPTS}
    auto = evaluate("shapenetpart", snp_root, model=tiny_model, text=text, dtype="auto")
    assert auto["timing"]["dtype"] == "auto"
    assert auto["timing"]["dtype_run"] == dtype_name(resolve_dtype("auto", "cpu"))
    fp32 = evaluate("shapenetpart", snp_root, model=tiny_model, text=text, dtype="float32")
    assert fp32["timing"]["dtype"] == fp32["timing"]["dtype_run"] == "float32"
    default = evaluate("shapenetpart", snp_root, model=tiny_model, text=text)
    assert default["timing"]["dtype"] == DEFAULT_DTYPE


def test_cli_json_markdown_pictures(snp_root, tmp_path, tiny_model):
    from patchalign3d.model.checkpoint import export_released

    ckpt = export_released(tiny_model, tmp_path / "tiny.pt")
    g = torch.Generator().manual_seed(1)
    TextBank(PROMPTS, torch.nn.functional.normalize(torch.randn(6, 64, generator=g), dim=-1)).save(
        tmp_path / "bank.pt"
    )
    out, md, png = tmp_path / "out.json", tmp_path / "table.md", tmp_path / "png"
    argv = [
        "shapenetpart",
        "--root",
        str(snp_root),
        "-c",
        str(REPO / "configs/eval/shapenetpart.yaml"),
        "--checkpoint",
        str(ckpt),
        "--text-bank",
        str(tmp_path / "bank.pt"),
        "--points",
        "all",
        "--seed",
        "3",
        "--json",
        str(out),
        "--markdown",
        str(md),
        "--png-dir",
        str(png),
        "--num-pictures",
        "1",
    ]
    assert evaluate_main(argv) == 0
    report = json.loads(out.read_text())
    proto = report["protocol"]
    assert proto["points"] is None and proto["seed"] == 3  # flags override the config
    assert proto["replace"] is True and proto["max_points"] == 2048  # from the config
    assert report["model"]["source"] == str(ckpt) and report["text"]["kind"] == "text_bank"
    assert len(report["shapes"]) == 3 and set(report["metric"]) >= {"miou", "ciou", "convention"}
    assert md.read_text().startswith("**shapenetpart**")
    assert sorted(p.name for p in png.iterdir()) == sorted(Path(p).name for p in report["pictures"])
    assert len(report["pictures"]) == 2 and all(Path(p).stat().st_size > 1000 for p in report["pictures"])
    # the CLI's figures are the Python API's
    bank = TextBank.load(tmp_path / "bank.pt")
    api = evaluate(
        "shapenetpart", snp_root, model=str(ckpt), text=bank, protocol=Protocol(**{**proto_fields(proto)})
    )
    assert api["shapes"] == report["shapes"]


def proto_fields(d: dict) -> dict:
    import dataclasses

    return {f.name: d[f.name] for f in dataclasses.fields(Protocol)}


def test_cli_errors(snp_root, capsys):
    with pytest.raises(SystemExit):
        evaluate_main(["shapenetpart", "--root", str(snp_root), "--points", "zero"])
    assert "expected a positive integer or 'all'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # usage errors: exit status 2, one line
        evaluate_main(["faust"])
    assert usage.value.code == 2 and "give the benchmark folder with --root" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        evaluate_main(["faust", "--root", str(snp_root), "-c", str(REPO / "configs/eval/shapenetpart.yaml")])
    assert usage.value.code == 2 and "the config is for 'shapenetpart', not 'faust'" in capsys.readouterr().err


def test_cli_reports_bad_data(snp_root, tmp_path, tiny_model, capsys):
    from patchalign3d.model.checkpoint import export_released

    ckpt = export_released(tiny_model, tmp_path / "tiny.pt")
    TextBank(["desktop"], torch.ones(1, 64)).save(tmp_path / "bank.pt")
    base = ["shapenetpart", "--checkpoint", str(ckpt), "--text-bank", str(tmp_path / "bank.pt")]
    assert evaluate_main([*base, "--root", str(snp_root)]) == 1
    assert "leg or support" in capsys.readouterr().err  # prompts missing from the bank are named
    (snp_root / "04379243" / "t2.txt").write_text("1 2 3\n")
    assert evaluate_main([*base, "--root", str(snp_root)]) == 1
    assert "t2.txt: expected at least 7 columns per line, line 1 has 3" in capsys.readouterr().err
    assert evaluate_main([*base, "--root", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_shared_shapenetpart(shared_data):
    # the one test-split table of the real copy; all points -> "desktop": release IoU = desktop share of the
    # points (the other present parts score 0), computed here from the raw file
    root = shared_data / "shapenetpart"
    raw = np.loadtxt(root / "04379243" / "1a00aa6b75362cc5b324368d54a7416f.txt")[:, 6].astype(int)
    present = np.unique(raw)
    expected = 100.0 * np.mean(raw == 47) / len(present)
    r = evaluate(
        "shapenetpart",
        root,
        model=constant_model(),
        text=texts({"desktop"}),
        protocol=Protocol(),
        dataset_options={"split": "test", "missing": "skip"},
    )
    assert r["metric"]["num_scored"] == 1
    assert r["metric"]["miou"] == pytest.approx(expected, abs=1e-3)


def test_lightning_test_matches_runner(snp_root, tiny_model):
    import lightning as L

    from patchalign3d.evaluation.lit import EvaluationModule

    g = torch.Generator().manual_seed(2)
    text = {p: torch.nn.functional.normalize(torch.randn(64, generator=g), dim=0) for p in PROMPTS}
    proto = Protocol(points=64, replace=True, seed=1, ciou="release-batches", ciou_batch_size=2)
    data = EvalDataset(build_dataset("shapenetpart", snp_root), proto)
    module = EvaluationModule(tiny_model, data, proto, text=text, batch_size=2)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.test(module, dataloaders=make_dataloader(data, batch_size=2), verbose=False)
    ref = evaluate("shapenetpart", snp_root, model=tiny_model, text=text, protocol=proto, batch_size=2)
    assert module.summary.miou == pytest.approx(ref["metric"]["miou"], abs=1e-3)
    assert module.ciou == pytest.approx(ref["metric"]["ciou"], abs=1e-3)
    assert module.summary.ciou == pytest.approx(ref["metric"]["ciou_categories"], abs=1e-3)
    assert module.partslip.miou == pytest.approx(ref["metric"]["partslip_miou"], abs=1e-3)


class RecordingEncoder(TextEncoder):
    """A deterministic 64-d text encoder that remembers what it was asked to encode."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    @property
    def dim(self) -> int:
        return 64

    @property
    def identifier(self) -> str:
        return "test:recording"

    @property
    def cacheable(self) -> bool:
        return False

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        self.seen.extend(texts)
        return torch.stack(
            [torch.randn(64, generator=torch.Generator().manual_seed(sum(map(ord, t)))) for t in texts]
        )


def test_text_encoder_templates(snp_root, tiny_model):
    from patchalign3d.evaluation import PromptEmbedder

    enc = RecordingEncoder()
    proto = Protocol(prompt_template="{part} of a {category}")
    r = evaluate("shapenetpart", snp_root, model=tiny_model, text=enc, protocol=proto)
    templates = ["{}", "a {}", "{} part"]
    assert r["text"] == {
        "kind": "encoder",
        "encoder": "test:recording",
        "templates": templates,
        "per_category": False,
    }
    expected = {
        "desktop of a table",
        "a desktop of a table",
        "desktop of a table part",
        "a wheel of a skateboard",
    }
    assert expected <= set(enc.seen)
    enc = RecordingEncoder()
    emb = PromptEmbedder(enc, tiny_model, "category")
    assert emb.per_category and emb(["leg or support", "drawer"], "Table").shape == (2, 64)
    assert "a leg or support of a table" in enc.seen and "drawer of table" in enc.seen
    # a part-only bank cannot serve category templates, and this one does not say which encoder built it
    with pytest.raises(UnknownTextEncoderError, match="does not say which text encoder"):
        PromptEmbedder(TextBank(["a"], torch.ones(1, 64)), tiny_model, "category")


def test_release_text_banks_in_an_evaluation(snp_root, tiny_model, tmp_path):
    """Banks as the release's build_text_bank.py writes them: part-only, and part+category keyed 'name||cat'."""
    from patchalign3d.evaluation import PromptEmbedder

    parts = {"table": ["desktop", "leg or support", "drawer"], "skateboard": ["wheel", "deck", "belt for foot"]}
    meta = {"text_dim": 64, "backend": "clip", "clip_model": "ViT-B-16", "clip_pretrained": "laion2b_s34b_b88k"}
    g = torch.Generator().manual_seed(0)
    pair_keys = [f"{p}||{c}" for c, ps in parts.items() for p in ps]
    paired = {"keys": pair_keys, "emb": torch.nn.functional.normalize(torch.randn(6, 64, generator=g), dim=1),
              "meta": meta}
    torch.save(paired, tmp_path / "textbank_part_plus_cat.pt")
    bank = TextBank.load(tmp_path / "textbank_part_plus_cat.pt")
    r = evaluate("shapenetpart", snp_root, model=tiny_model, text=bank, protocol=Protocol())
    assert r["text"]["kind"] == "text_bank" and r["text"]["paired"] and r["text"]["bank_embeddings_used"]
    embed = PromptEmbedder(bank, tiny_model)
    assert torch.equal(embed(["drawer", "desktop"], "Table"), paired["emb"][[2, 0]])
    # the ensemble needs an encoder: the one the bank's metadata names is built (here MiniLM, 384-d) and must
    # match the bank's width
    minilm_meta = {"text_dim": 64, "backend": "transformers", "model": "sentence-transformers/all-MiniLM-L6-v2"}
    with pytest.raises(ValueError, match="bank is 64-d but the encoder its metadata names .*384-d"):
        PromptEmbedder(TextBank(pair_keys, paired["emb"], minilm_meta), tiny_model, "ensemble")
    wide = patchalign3d_tiny(text_dim=384).eval()
    minilm_bank = TextBank.build(["desktop"], "minilm")
    embed = PromptEmbedder(minilm_bank, wide, "ensemble")
    assert embed.describe()["encoder"] == minilm_bank.meta["encoder"] and embed.per_category
    expect = TextBank.build(["drawer"], "minilm", templates=ENSEMBLE_TEMPLATES, category="table")
    assert torch.allclose(embed(["drawer"], "Table"), expect.emb)


def test_cli_partnete_partial_copy(tmp_path, tiny_model, capsys):
    """`patchalign3d evaluate partnete --root ROOT` on PartSLIP's layout, one object's labels absent."""
    from patchalign3d.model.checkpoint import export_released

    meta = {"Bottle": ["lid"], "Chair": ["arm", "back", "leg", "seat", "wheel"]}
    objects = {"Chair": {"179": [5, 10, 0, 3, 12, 0], "40067": [2, 0, 8, 4, 6, 10]}, "Bottle": {"3380": [7, 33]}}
    root = write_partnete(tmp_path / "pne", objects, meta, nested=True)
    (root / "data" / "test" / "Chair" / "40067" / "label.npy").unlink()
    ckpt = export_released(tiny_model, tmp_path / "tiny.pt")
    names = ["lid", *meta["Chair"]]
    TextBank(names, torch.nn.functional.normalize(torch.randn(6, 64), dim=-1)).save(tmp_path / "bank.pt")
    base = ["partnete", "--root", str(root), "--checkpoint", str(ckpt), "--text-bank", str(tmp_path / "bank.pt")]
    assert evaluate_main(base) == 1
    err = capsys.readouterr().err
    assert "1 of the 3 shapes it lists are absent" in err and "--dataset-option missing=skip" in err
    out = tmp_path / "out.json"
    assert evaluate_main([*base, "--dataset-option", "missing=skip", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2/2 shapes scored (1 absent from this copy, left out)" in printed
    report = json.loads(out.read_text())
    assert report["dataset"]["missing"] == "skip" and [s["uid"] for s in report["dataset"]["skipped"]] == ["Chair/40067"]
    assert report["protocol"]["unlabelled_effective"] == "count" and report["dataset"]["categories"] == ["Bottle", "Chair"]
