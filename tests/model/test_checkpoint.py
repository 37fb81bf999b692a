import json

import pytest
import torch

from patchalign3d.errors import CheckpointError, WeightsUnavailableError
from patchalign3d.model import patchalign3d_base, patchalign3d_tiny
from patchalign3d.model.checkpoint import export_released, load_model, model_from_released


def released_dict(model) -> dict:
    """A checkpoint laid out exactly as REFERENCE section 3 describes, built key by key."""
    return {
        "model": dict(model.encoder.state_dict()),
        "proj": {"proj.weight": model.proj.weight.detach().clone(), "proj.bias": model.proj.bias.detach().clone()},
        "temp": {"log_scale": torch.tensor(2.5)},
    }


def test_released_layout_loads_strictly_at_full_size(tmp_path):
    torch.manual_seed(0)
    src = patchalign3d_base().eval()
    path = tmp_path / "patchalign3d.pt"
    torch.save(released_dict(src), path)
    model = load_model(path)
    assert model.config.depth == 12 and model.config.num_heads == 6 and model.text_dim == 1280
    for (k, a), (_, b) in zip(src.encoder.state_dict().items(), model.encoder.state_dict().items()):
        assert torch.equal(a, b), k
    assert model.log_scale.item() == 2.5
    x = torch.rand(1, 2048, 3)
    with torch.no_grad():
        assert torch.equal(src(x), model(x))


def test_copies_without_cls_token_or_temp_load(tmp_path):
    src = patchalign3d_tiny(use_cls_token=False)
    blob = released_dict(src)
    del blob["temp"]
    model = model_from_released(blob, num_heads=4, num_groups=32, group_size=16)
    assert not model.config.use_cls_token


def test_wrong_layout_names_missing_and_unexpected_keys(tmp_path):
    blob = released_dict(patchalign3d_tiny())
    blob["model"]["blocks.blocks.0.attn.qkv.bias"] = torch.zeros(3 * 64)
    del blob["model"]["norm.weight"]
    path = tmp_path / "bad.pt"
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match=r"missing keys: norm\.weight.*unexpected keys: blocks\.blocks\.0\.attn\.qkv\.bias"):
        load_model(path, num_heads=4)
    torch.save({"encoder": {}}, path)
    with pytest.raises(CheckpointError, match="needs a 'model' entry"):
        load_model(path)


class Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickles_are_refused_unless_trusted(tmp_path):
    blob = released_dict(patchalign3d_tiny())
    blob["extra"] = Evil()
    path = tmp_path / "pickled.pt"
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match="trust_pickle=True"):
        load_model(path)
    assert load_model(path, trust_pickle=True, num_heads=4, num_groups=32, group_size=16) is not None


def test_save_load_export_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(1)
    model = patchalign3d_tiny().eval()
    out = export_released(model, tmp_path / "tiny.pt")
    blob = torch.load(out, weights_only=True)
    assert set(blob) == {"model", "proj", "temp"}
    assert set(blob["proj"]) == {"proj.weight", "proj.bias"} and set(blob["temp"]) == {"log_scale"}
    assert json.loads((tmp_path / "tiny.pt.config.json").read_text())["num_groups"] == 32
    again = load_model(out)
    out2 = export_released(again, tmp_path / "tiny2.pt")
    blob2 = torch.load(out2, weights_only=True)
    for k in blob["model"]:
        assert torch.equal(blob["model"][k], blob2["model"][k])
    x = torch.rand(2, 300, 3)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_stage1_model_cannot_be_exported(tmp_path):
    with pytest.raises(ValueError, match="stage-1"):
        export_released(patchalign3d_tiny(text_dim=None), tmp_path / "x.pt")


def test_hub_source_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises((WeightsUnavailableError, FileNotFoundError), match="patchalign3d"):
        load_model("someone/not-cached-anywhere")


def test_missing_file_and_non_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip or pickle")
    with pytest.raises(CheckpointError, match="is not a checkpoint: it is a text file"):
        load_model(junk)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint dict"):
        load_model(tmp_path / "list.pt")
