"""Name cleaning, validation, TextBank building (template averaging), the on-disk cache and the released
text-bank file format."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from patchalign3d.text import (
    CATEGORY_TEMPLATES,
    DEFAULT_TEMPLATES,
    ENSEMBLE_TEMPLATES,
    MissingPartNamesError,
    TextBank,
    TextEncoder,
    UnknownTextEncoderError,
    clean_name,
    validate_part_names,
)


class WordCountEncoder(TextEncoder):
    """Deterministic 2-d encoder: "x" -> (1, words - 1). Easy to compute by hand."""

    backend = "fake"

    def __init__(self, tag: str = "v1", cacheable: bool = True) -> None:
        super().__init__("cpu")
        self.tag, self._cacheable, self.seen = tag, cacheable, []

    @property
    def dim(self) -> int:
        return 2

    @property
    def identifier(self) -> str:
        return f"fake:wordcount/{self.tag}"

    @property
    def cacheable(self) -> bool:
        return self._cacheable

    def _encode_batch(self, texts):
        self.seen.extend(texts)
        return torch.tensor([[1.0, len(t.split()) - 1.0] for t in texts])


def char_features(text: str) -> np.ndarray:
    """A 5-d feature of a string: counts of some letters, length, words (never normalised here)."""
    counts = [text.count("a"), text.count("e") + 1, text.count("r"), len(text), len(text.split())]
    return np.array(counts, dtype=float)


class CharEncoder(WordCountEncoder):
    @property
    def dim(self) -> int:
        return 5

    def _encode_batch(self, texts):
        self.seen.extend(texts)
        return torch.tensor(np.stack([char_features(t) for t in texts]), dtype=torch.float64)


# ------------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize("raw, cleaned", [
    ("Back_Rest", "back rest"),
    ("  Chair   LEG ", "chair leg"),
    ("arm-rest", "arm rest"),
    ("wheel/tire", "wheel tire"),
    ("lamp's shade!", "lamp s shade"),
    ("a.b,c;d(e)", "a b c d e"),
    ("trigger and guard", "trigger and guard"),
    ("Café_Table\t2", "café table 2"),
    ("__--__", ""),
])
def test_clean_name(raw, cleaned):
    assert clean_name(raw) == cleaned


def test_clean_name_rejects_non_strings():
    with pytest.raises(TypeError):
        clean_name(3)


def test_template_constants():
    assert DEFAULT_TEMPLATES == ("{}", "a {}", "{} part")
    assert CATEGORY_TEMPLATES == ("a {} of a {}", "the {} of a {}", "{} of {}", "a {} part of a {}")


def test_validate_part_names():
    names = ("Seat", "back_rest", "leg")
    assert validate_part_names(names) == ["Seat", "back_rest", "leg"]
    with pytest.raises(ValueError, match="single string"):
        validate_part_names("seat,back")
    with pytest.raises(ValueError, match="list of strings"):
        validate_part_names(None)
    with pytest.raises(ValueError, match="empty"):
        validate_part_names([])
    with pytest.raises(ValueError, match=r"blank.*'  '.*'\?!'"):
        validate_part_names(["seat", "  ", "?!"])
    with pytest.raises(ValueError, match=r"duplicate.*'Seat'.*'seat '.*'back_rest'.*'back rest'"):
        validate_part_names(["Seat", "seat ", "back_rest", "back rest", "leg"])
    with pytest.raises(ValueError, match="strings"):
        validate_part_names(["seat", 4])


# ------------------------------------------------------------------------------------------------ build


def test_build_averages_templates_by_hand():
    # "leg" -> (1, 0); "a leg" and "leg part" -> (1, 1) -> normalised (a, a) with a = 1/sqrt(2).
    # mean = ((1 + 2a) / 3, 2a / 3), then renormalised.
    a = 1 / math.sqrt(2)
    mean = np.array([(1 + 2 * a) / 3, 2 * a / 3])
    expected = mean / np.linalg.norm(mean)
    enc = WordCountEncoder()
    bank = TextBank.build(["Leg"], enc, cache_dir=False)
    assert bank.names == ["leg"]
    assert sorted(enc.seen) == sorted(["leg", "a leg", "leg part"])
    assert np.allclose(bank["leg"].numpy(), expected, atol=1e-6)
    assert bank.emb.dtype == torch.float32


def test_build_matches_numpy_reference():
    names = ["Seat_Back", "armrest", "front wheel"]
    bank = TextBank.build(names, CharEncoder(), cache_dir=False, batch_size=2)
    for raw in names:
        name = clean_name(raw)
        per_template = [char_features(t.format(name)) for t in DEFAULT_TEMPLATES]
        mean = np.mean([v / np.linalg.norm(v) for v in per_template], axis=0)
        assert np.allclose(bank[name].numpy(), mean / np.linalg.norm(mean), atol=1e-6)
        assert bank[raw] is not None  # the raw name finds its cleaned key
    assert torch.allclose(bank.emb.norm(dim=1), torch.ones(3))
    meta = bank.meta
    assert meta["text_dim"] == 5 and meta["backend"] == "fake"
    assert meta["templates"] == list(DEFAULT_TEMPLATES)
    assert meta["encoder"] == "fake:wordcount/v1" and "model" in meta and "pretrained" in meta


def test_build_with_category_templates():
    enc = WordCountEncoder()
    bank = TextBank.build(["leg"], enc, templates=CATEGORY_TEMPLATES, category="Office_Chair",
                          cache_dir=False)
    assert set(enc.seen) == {"a leg of a office chair", "the leg of a office chair", "leg of office chair",
                             "a leg part of a office chair"}
    assert bank.meta["category"] == "office chair"
    assert bank.names == ["leg||office chair"]  # keyed as the release keys its part+category banks
    assert torch.equal(bank.lookup(["Leg"], category="Office_Chair"), bank.emb)
    with pytest.raises(ValueError, match="category"):
        TextBank.build(["leg"], enc, templates=CATEGORY_TEMPLATES, cache_dir=False)
    with pytest.raises(ValueError, match="template"):
        TextBank.build(["leg"], enc, templates=("no field",), cache_dir=False)
    with pytest.raises(ValueError, match="duplicate"):
        TextBank.build(["leg", "Leg"], enc, cache_dir=False)


# ------------------------------------------------------------------------------------------------ cache


def test_cache_prevents_re_encoding(tmp_path):
    first = WordCountEncoder()
    bank1 = TextBank.build(["seat", "Back_rest"], first, cache_dir=tmp_path)
    assert len(first.seen) == 6

    second = WordCountEncoder()  # a new encoder object with the same identifier, a new build, same folder
    bank2 = TextBank.build(["back rest", "seat", "leg"], second, cache_dir=tmp_path)
    assert sorted(second.seen) == sorted(["leg", "a leg", "leg part"])
    assert torch.equal(bank2["seat"], bank1["seat"]) and torch.equal(bank2["back rest"], bank1["back rest"])

    third = WordCountEncoder()
    TextBank.build(["leg", "seat"], third, cache_dir=tmp_path)
    assert third.seen == []

    # another template set or another encoder is a different cache entry
    other_templates = WordCountEncoder()
    TextBank.build(["seat"], other_templates, templates=("{}",), cache_dir=tmp_path)
    assert other_templates.seen == ["seat"]
    other_encoder = WordCountEncoder(tag="v2")
    TextBank.build(["seat"], other_encoder, cache_dir=tmp_path)
    assert len(other_encoder.seen) == 3


def test_cache_disabled_and_uncacheable(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHALIGN3D_CACHE", str(tmp_path / "root"))
    enc = WordCountEncoder()
    TextBank.build(["seat"], enc, cache_dir=False)
    TextBank.build(["seat"], enc, cache_dir=False)
    assert len(enc.seen) == 6 and not (tmp_path / "root").exists()

    random_weights = WordCountEncoder(cacheable=False)
    TextBank.build(["seat"], random_weights)
    assert not (tmp_path / "root").exists()

    default = WordCountEncoder()
    TextBank.build(["seat"], default)  # cache_dir=None -> $PATCHALIGN3D_CACHE/text
    assert list((tmp_path / "root" / "text").glob("*.pt"))


def test_corrupt_cache_is_ignored_and_rewritten(tmp_path):
    TextBank.build(["seat"], WordCountEncoder(), cache_dir=tmp_path)
    (cache_file,) = tmp_path.glob("*.pt")
    cache_file.write_bytes(b"not a torch file")
    enc = WordCountEncoder()
    with pytest.warns(UserWarning, match="unreadable text cache"):
        bank = TextBank.build(["seat"], enc, cache_dir=tmp_path)
    assert len(enc.seen) == 3 and bank.names == ["seat"]
    again = WordCountEncoder()
    TextBank.build(["seat"], again, cache_dir=tmp_path)
    assert again.seen == []


def test_concurrent_builds_keep_every_entry(tmp_path):
    groups = [[f"part {i} {j}" for j in range(3)] for i in range(4)]
    errors = []

    def work(names):
        try:
            TextBank.build(names, WordCountEncoder(), cache_dir=tmp_path)
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(g,)) for g in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    check = WordCountEncoder()
    TextBank.build([n for g in groups for n in g], check, cache_dir=tmp_path)
    assert check.seen == []
    assert not list(tmp_path.glob("*.tmp"))


# ------------------------------------------------------------------------------------------------ files


def _released(k: int = 3, d: int = 8) -> dict:
    emb = F.normalize(torch.randn(k, d, generator=torch.Generator().manual_seed(0)), dim=1)
    return {"keys": ["body", "wing", "engine or frame"][:k], "emb": emb,
            "meta": {"text_dim": d, "backend": "open_clip", "clip_model": "ViT-bigG-14",
                     "clip_pretrained": "laion2b_s39b_b160k"}}


def test_load_hand_built_released_bank(tmp_path):
    data = _released()
    torch.save(data, tmp_path / "bank.pt")
    bank = TextBank.load(tmp_path / "bank.pt")
    assert len(bank) == 3 and bank.dim == 8 and bank.names == data["keys"] and bank.meta == data["meta"]
    assert torch.equal(bank["wing"], data["emb"][1])
    assert torch.equal(bank["Engine_or_Frame"], data["emb"][2])  # cleaned lookup
    assert torch.equal(bank.lookup(["wing", "body"]), data["emb"][[1, 0]])
    assert "wing" in bank and "tail" not in bank


def test_save_load_round_trip_is_released_format(tmp_path):
    bank = TextBank.build(["Seat", "back"], CharEncoder(), cache_dir=False)
    path = tmp_path / "sub" / "bank.pt"
    path.parent.mkdir()
    bank.save(path)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"keys", "emb", "meta"}
    assert raw["keys"] == ["seat", "back"]
    assert raw["emb"].dtype == torch.float32 and raw["emb"].shape == (2, 5)
    again = TextBank.load(path)
    assert again.names == bank.names and torch.equal(again.emb, bank.emb) and again.meta == bank.meta


@pytest.mark.parametrize("mutate, message", [
    (lambda d: ["not", "a", "dict"], "expected a dict"),
    (lambda d: {k: v for k, v in d.items() if k != "emb"}, "missing entries \\['emb'\\]"),
    (lambda d: {**d, "keys": "body"}, "'keys' must be a list of strings"),
    (lambda d: {**d, "keys": ["body", 2, "x"]}, "'keys' must be a list of strings"),
    (lambda d: {**d, "emb": [[0.0]]}, "'emb' must be a tensor"),
    (lambda d: {**d, "emb": d["emb"][0]}, "2-D float"),
    (lambda d: {**d, "emb": d["emb"].long()}, "2-D float"),
    (lambda d: {**d, "emb": d["emb"][:2]}, "2 rows but 'keys' has 3"),
    (lambda d: {**d, "meta": None}, "'meta' must be a dict"),
    (lambda d: {**d, "keys": ["body", "wing", "body"]}, "duplicates.*body"),
    (lambda d: {**d, "emb": d["emb"].clone().fill_(float("nan"))}, "NaN"),
])
def test_malformed_bank_files(tmp_path, mutate, message):
    torch.save(mutate(_released()), tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=message):
        TextBank.load(tmp_path / "bad.pt")


def test_unreadable_or_missing_bank_file(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="junk.pt"):
        TextBank.load(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        TextBank.load(tmp_path / "absent.pt")


def test_missing_names_are_all_reported():
    bank = TextBank.from_dict(_released())
    with pytest.raises(KeyError) as info:
        bank.lookup(["wing", "tail", "body", "landing gear"])
    assert isinstance(info.value, MissingPartNamesError)
    assert info.value.missing == ["tail", "landing gear"]
    assert "tail" in str(info.value) and "landing gear" in str(info.value)
    with pytest.raises(KeyError, match="tail"):
        bank["tail"]
    with pytest.raises(TypeError):
        bank.lookup("wing")


# ------------------------------------------------------------------------------------- the release's banks


def _release_bank(keys: list[str], d: int = 4, **meta) -> dict:
    """A bank as the release's tools/build_text_bank.py writes it (backend "clip")."""
    emb = F.normalize(torch.randn(len(keys), d, generator=torch.Generator().manual_seed(1)), dim=1)
    return {"keys": keys, "emb": emb, "meta": {"text_dim": d, "backend": "clip", "clip_model": "ViT-B-16",
                                                "clip_pretrained": "laion2b_s34b_b88k", **meta}}


def test_release_part_only_bank_names_its_openclip_encoder(tmp_path):
    torch.save(_release_bank(["seat", "back"]), tmp_path / "textbank_part_only.pt")
    bank = TextBank.load(tmp_path / "textbank_part_only.pt")
    assert bank.encoder_spec() == "openclip:ViT-B-16/laion2b_s34b_b88k"
    assert not bank.paired
    # a category does not matter to a bank keyed by part names alone
    assert torch.equal(bank.lookup(["back"], category="chair"), bank.emb[1:])


def test_release_part_plus_category_bank(tmp_path):
    data = _release_bank(["seat||chair", "leg||chair", "leg||table"])
    torch.save(data, tmp_path / "textbank_part_plus_cat.pt")
    bank = TextBank.load(tmp_path / "textbank_part_plus_cat.pt")
    assert bank.paired
    assert torch.equal(bank.lookup(["Leg", "seat"], category="Chair"), data["emb"][[1, 0]])
    assert torch.equal(bank.lookup(["leg"], category="table"), data["emb"][[2]])
    assert torch.equal(bank["leg||table"], data["emb"][2]) and torch.equal(bank["Leg||Table"], data["emb"][2])
    with pytest.raises(MissingPartNamesError, match=r"'arm\|\|chair'") as info:
        bank.lookup(["seat", "arm"], category="chair")
    assert info.value.missing == ["arm||chair"]
    with pytest.raises(MissingPartNamesError, match="look names up with category"):
        bank.lookup(["seat"])


def test_bank_whose_encoder_cannot_be_told_refuses():
    for meta in ({}, {"backend": "clip"}, {"backend": "mystery", "text_dim": 4}):
        bank = TextBank(["seat"], torch.ones(1, 4), meta)
        with pytest.raises(UnknownTextEncoderError, match="does not say which text encoder"):
            bank.encoder_spec()


def test_ensemble_templates_average_all_seven_prompts_by_hand():
    """The release's "ensemble" setting: four category templates and three part templates, each prompt
    normalised, the seven averaged and renormalised."""
    enc = WordCountEncoder()
    bank = TextBank.build(["leg"], enc, templates=ENSEMBLE_TEMPLATES, category="chair", cache_dir=False)
    prompts = ["a leg of a chair", "the leg of a chair", "leg of chair", "a leg part of a chair",
               "leg", "a leg", "leg part"]
    assert sorted(enc.seen) == sorted(prompts)
    unit = [np.array([1.0, len(p.split()) - 1.0]) / math.hypot(1.0, len(p.split()) - 1.0) for p in prompts]
    mean = np.mean(unit, axis=0)
    assert np.allclose(bank.lookup(["leg"], category="chair")[0].numpy(), mean / np.linalg.norm(mean), atol=1e-6)
    assert ENSEMBLE_TEMPLATES == CATEGORY_TEMPLATES + DEFAULT_TEMPLATES
