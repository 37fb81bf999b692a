"""timm teachers: prefix tokens dropped by the model's own count, grids read at pixels without upsampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_engine.teachers import Teacher, TeacherConfig, TeacherLoadError, create_backbone, sample_patch_grid


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "name, prefix", [("vit_small_patch14_dinov2", 1), ("vit_small_patch14_reg4_dinov2", 5)]
)
def test_patch_grid_drops_prefix_tokens(name, prefix):
    torch.manual_seed(0)
    teacher = Teacher(TeacherConfig(name=name, pretrained=False, img_size=56, batch_size=2, dtype="float32"), device="cpu")
    images = _images(3, 40)
    grid = teacher.patch_features(images)
    assert grid.shape == (3, 384, 4, 4)
    with torch.no_grad():
        tokens = teacher.model.forward_features(teacher.preprocess(images))
    assert tokens.shape[1] == prefix + 16
    # grid cell (i, j) is patch token i * 4 + j after the model's prefix tokens
    np.testing.assert_allclose(grid[:, :, 1, 2].numpy(), tokens[:, prefix + 1 * 4 + 2].numpy(), atol=1e-5)
    np.testing.assert_allclose(grid[:, :, 3, 0].numpy(), tokens[:, prefix + 3 * 4 + 0].numpy(), atol=1e-5)


def test_preprocess_resizes_and_normalises(small_teacher):
    x = small_teacher.preprocess(np.full((2, 30, 30, 3), 255, np.uint8))
    assert x.shape == (2, 3, 56, 56)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x[0, :, 10, 10].numpy(), expected.numpy(), rtol=1e-5)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_sampling_at_pixel_centres_equals_upsampling(mode):
    torch.manual_seed(0)
    grids = torch.randn(2, 5, 4, 4)
    size = 23
    full = F.interpolate(
        grids, size=(size, size), mode=mode, align_corners=False
    )  # (V, D, R, R): what we avoid
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    uv = torch.stack([cols.flatten() + 0.5, rows.flatten() + 0.5], -1).float()
    sampled = sample_patch_grid(grids, uv.expand(2, -1, -1), size, mode)  # (V, R*R, D)
    np.testing.assert_allclose(sampled.numpy(), full.flatten(2).transpose(1, 2).numpy(), atol=1e-5)


def test_pretrained_offline_without_cache_is_a_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TeacherLoadError, match=r"(?s)pretrained weights.*offline.*pretrained=false"):
        create_backbone(TeacherConfig(name="vit_small_patch14_dinov2.lvd142m", pretrained=True, img_size=56))


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown timm model"):
        create_backbone(TeacherConfig(name="not_a_model_xyz", pretrained=False))


def test_img_size_must_fit_the_patch():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        Teacher(TeacherConfig(name="vit_small_patch14_dinov2", pretrained=False, img_size=50), device="cpu")


def test_dtype_auto_follows_the_hardware_and_bf16_features_agree():
    from patchalign3d.precision import resolve_dtype

    torch.manual_seed(0)
    base = dict(name="vit_small_patch14_dinov2", pretrained=False, img_size=56, device="cpu")
    auto = Teacher(TeacherConfig(**base, dtype="auto"))
    assert auto.compute_dtype == resolve_dtype("auto", "cpu") and auto.dtype == str(auto.compute_dtype)[6:]
    fp32 = Teacher(TeacherConfig(**base, dtype="float32"))
    bf16 = Teacher(TeacherConfig(**base, dtype="bfloat16"))
    bf16.model.load_state_dict(fp32.model.state_dict())
    images = _images(2, 64)
    a, b = fp32.patch_features(images), bf16.patch_features(images)
    assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape
    assert not torch.equal(a, b)  # bf16 really ran
    assert F.cosine_similarity(a, b, dim=1).min() > 0.98


@pytest.mark.parametrize("dtype, match", [("float16", "needs a CUDA device"), ("half", "teacher.dtype")])
def test_bad_teacher_dtype(dtype, match):
    with pytest.raises(ValueError, match=match):
        Teacher(TeacherConfig(name="vit_small_patch14_dinov2", pretrained=False, img_size=56, device="cpu", dtype=dtype))


def test_random_weights_are_the_same_every_time_and_leave_the_callers_rng_alone():
    config = TeacherConfig(name="vit_small_patch14_dinov2", pretrained=False, img_size=56)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = create_backbone(config)
    assert torch.equal(torch.rand(3), expected_next)
    torch.manual_seed(456)  # another global state: the teacher does not depend on it
    b = create_backbone(config)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
