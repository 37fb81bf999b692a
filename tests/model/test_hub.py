"""save_pretrained / from_pretrained / push_to_hub, and load_model on folders and repo ids, all offline."""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
import yaml

import patchalign3d as pa
from patchalign3d.errors import CheckpointError, WeightsUnavailableError
from patchalign3d.model import patchalign3d_tiny
from patchalign3d.model.checkpoint import export_released, load_model

X = torch.rand(2, 300, 3, generator=torch.Generator().manual_seed(5))


@pytest.fixture
def model():
    torch.manual_seed(2)
    m = patchalign3d_tiny(num_groups=24).eval()
    m.log_scale.data.fill_(2.0)
    m.text_meta = {"backend": "transformers", "text_dim": 64, "model": "some/encoder", "pretrained": True}
    return m


def same_outputs(a, b) -> bool:
    with torch.no_grad():
        return torch.equal(a(X), b(X)) and torch.equal(a.log_scale, b.log_scale)


def test_save_pretrained_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["format"] == "patchalign3d" and config["architecture"]["embed_dim"] == 64
    assert config["grouping"] == {"num_groups": 24, "group_size": 16, "fps_skip_near_origin": True}
    assert config["text_encoder"] == {"spec": "hf:some/encoder", "meta": model.text_meta}
    assert config["temperature"] == 0.07 and config["logit_scale"] == pytest.approx(torch.e ** 2)
    for again in (pa.PatchAlign3D.from_pretrained(tmp_path / "m"), load_model(str(tmp_path / "m"))):
        assert same_outputs(model, again) and again.config == model.config
        assert again.text_meta == model.text_meta and not again.training


def test_model_card(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    text = (tmp_path / "m" / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["license"] == "mit" and meta["library_name"] == "patchalign3d" and "part-segmentation" in meta["tags"]
    for expected in ("pa.PatchAlign3D.from_pretrained(", "seg.save(\"chair_parts.glb\")", "| ShapeNetPart |",
                     "56.9 / 53.1", "32,052 shapes", "MIT", "2 transformer blocks, width 64", "24 patches of 16 points",
                     "`hf:some/encoder`"):
        assert expected in text, expected
    model.save_pretrained(tmp_path / "own", model_card_kwargs={"training_data": "Our 12 chairs.", "results": "None yet."})
    own = (tmp_path / "own" / "README.md").read_text()
    assert "Our 12 chairs." in own and "None yet." in own and "32,052" not in own


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: records the calls and keeps a copy of what would be uploaded."""

    calls: list = []
    store = None

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, repo_type, commit_message, **kwargs):
        self.calls.append(("upload_folder", repo_id, repo_type, commit_message))
        shutil.copytree(folder_path, self.store)
        return f"https://hub.invalid/{repo_id}/commit/0"


def test_push_to_hub_uploads_weights_config_and_card(model, tmp_path, monkeypatch):
    RecordingHfApi.calls, RecordingHfApi.store = [], tmp_path / "uploaded"
    monkeypatch.setattr("huggingface_hub.hub_mixin.HfApi", RecordingHfApi)
    url = model.push_to_hub("someone/chair-parts", commit_message="first", private=True)
    assert url == "https://hub.invalid/someone/chair-parts/commit/0"
    assert RecordingHfApi.calls == [("create_repo", "someone/chair-parts", True, True),
                                    ("upload_folder", "someone/chair-parts", "model", "first")]
    uploaded = RecordingHfApi.store
    assert sorted(p.name for p in uploaded.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert 'from_pretrained("someone/chair-parts")' in (uploaded / "README.md").read_text()
    assert same_outputs(model, pa.PatchAlign3D.from_pretrained(uploaded))


def fill_hub_cache(cache, repo_id, files: dict) -> None:
    """The huggingface_hub cache layout (refs/main -> snapshots/<commit>/<file>), as a download leaves it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, src in files.items():
        shutil.copy(src, snapshot / name)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_repo_ids_load_from_the_cache_offline(model, tmp_path, offline_cache):
    model.save_pretrained(tmp_path / "m")
    fill_hub_cache(offline_cache, "someone/chair-parts", {n: tmp_path / "m" / n for n in ("config.json", "model.safetensors")})
    export_released(model, tmp_path / "patchalign3d.pt")
    fill_hub_cache(offline_cache, "someone/released", {"patchalign3d.pt": tmp_path / "patchalign3d.pt"})

    assert same_outputs(model, pa.PatchAlign3D.from_pretrained("someone/chair-parts"))
    assert same_outputs(model, load_model("someone/chair-parts"))
    released = load_model("someone/released", num_groups=24, group_size=16, num_heads=4)  # a repo with only the .pt
    assert same_outputs(model, released)


def test_offline_and_not_cached_is_a_clear_error(offline_cache):
    with pytest.raises(WeightsUnavailableError, match="not in the local Hugging Face cache.*HF_HUB_OFFLINE"):
        pa.PatchAlign3D.from_pretrained("someone/never-downloaded")
    with pytest.raises(WeightsUnavailableError, match="not cached"):
        load_model("someone/never-downloaded")
    with pytest.raises(FileNotFoundError, match="neither a model folder nor a Hugging Face repo id"):
        pa.PatchAlign3D.from_pretrained("no such folder/really")


def test_bad_folders_name_the_problem(model, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json and model.safetensors missing"):
        load_model(tmp_path / "empty")
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="not written by patchalign3d"):
        pa.PatchAlign3D.from_pretrained(tmp_path / "m")
    config["architecture"]["depth"] = 3
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"missing keys: .*blocks\.blocks\.2\."):
        pa.PatchAlign3D.from_pretrained(tmp_path / "m")
