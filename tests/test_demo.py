"""The quick demo, end to end: shapes -> data engine -> stage 1 -> stage 2 -> evaluation (a few minutes on CPU)."""

import json

import torch

from patchalign3d.demo import demo_main
from patchalign3d.model.checkpoint import load_model


def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo_main(["--quick", "--out", str(out)]) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("val", "test_seen", "test_unseen"):
        model, chance = metrics["splits"][split]["model"], metrics["splits"][split]["chance"]
        assert model["num_scored"] > 0 and 0.0 <= model["miou"] <= 100.0
        assert 0.0 < chance["miou"] < 100.0
    assert metrics["store"]["written"]["train"] > 0 and metrics["store"]["failed"] == 0
    assert metrics["teacher"]["pretrained"] is False  # nothing is cached in CI: announced, recorded
    assert "RANDOMLY INITIALISED" in capsys.readouterr().out

    # the exported model has exactly the released layout and segments a shape
    blob = torch.load(out / "patchalign3d_demo.pt", weights_only=True)
    assert set(blob) == {"model", "proj", "temp"}
    model = load_model(out / "patchalign3d_demo.pt")
    assert model.text_meta["text_dim"] == 384

    pictures = list((out / "pictures").rglob("*.png"))
    assert len(pictures) >= 3
    assert "| test_unseen |" in (out / "results.md").read_text()
    keypoints = metrics["keypoints"]  # zero-shot, few-shot and chance keypoint IoU on seen and held-out shapes
    for split in ("test_seen", "test_unseen"):
        assert set(keypoints[split]["iou"]) == {"zero_shot", "few_shot", "chance"}
    for name in ("data.yaml", "stage1.yaml", "stage2.yaml"):
        assert (out / "configs" / name).is_file()
