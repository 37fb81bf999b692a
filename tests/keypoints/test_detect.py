import numpy as np
import pytest
import torch
import trimesh

from patchalign3d.keypoints import Keypoints, detect_keypoints
from patchalign3d.keypoints.geodesic import geodesic_distances
from patchalign3d.model import patchalign3d_tiny
from patchalign3d.text import TextBank
from tests.conftest import make_cloud
from tests.keypoints.conftest import patch_embeddings


def test_result_fields_and_consistency(tiny_model, bank):
    cloud = make_cloud(600)
    kps = detect_keypoints(cloud, ["leg end", "nose"], model=tiny_model, text=bank, max_instances=3,
                           min_probability=None, refine=False)
    assert isinstance(kps, Keypoints) and kps.mode == "zero_shot"
    assert kps.field.shape == (600, 2) and kps.points is not None and len(kps.points) == 600
    assert len(kps.indices) == len(kps.labels) == len(kps.scores) >= 2
    np.testing.assert_allclose(kps.scores, kps.field[kps.indices, kps.labels])
    np.testing.assert_allclose(kps.positions, cloud[kps.indices])
    for k in range(2):
        assert 1 <= (kps.labels == k).sum() <= 3
        # the best keypoint of a name is its field's maximum
        assert kps.field[kps.of(kps.names[k])[0], k] == kps.field[:, k].max()


def test_field_at_patch_centres_is_the_patch_cosine_with_the_text(tiny_model, bank):
    cloud = make_cloud(500, seed=2)
    kps = detect_keypoints(cloud, ["wing tip", "nose"], model=tiny_model, text=bank)
    patches, emb = patch_embeddings(tiny_model, cloud)
    centres = patches.center_idx[0].numpy()
    t = bank.lookup(["wing tip", "nose"]).numpy()
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    np.testing.assert_allclose(kps.field[centres], emb @ t.T, atol=1e-4)
    assert np.abs(kps.field).max() <= 1 + 1e-5  # between points: weighted means of patch cosines


def test_a_name_embedded_like_a_patch_finds_its_centre(tiny_model):
    cloud = make_cloud(700, seed=5)
    patches, emb = patch_embeddings(tiny_model, cloud)
    centres = patches.center_idx[0].numpy()
    j = 7
    kps = detect_keypoints(cloud, ["here"], model=tiny_model, text=emb[[j]], max_instances=1, refine=False)
    assert kps.of("here").tolist() == [centres[j]]


def test_instances_are_geodesically_apart(tiny_model, bank):
    cloud = make_cloud(800, seed=1)
    opts = dict(model=tiny_model, text=bank, min_relative_score=0.0, max_instances=None, min_probability=None,
                refine=False)
    loose = detect_keypoints(cloud, ["wing tip"], nms_radius=0.02, **opts)
    kps = detect_keypoints(cloud, ["wing tip"], nms_radius=0.15, **opts)
    idx = kps.of("wing tip")
    assert 2 <= len(idx) < len(loose.of("wing tip"))  # the wider radius suppressed a peak
    d = geodesic_distances(cloud, idx, unreachable=np.inf)[:, idx]
    diag = np.linalg.norm(np.ptp(cloud, axis=0))
    assert (d[~np.eye(len(idx), dtype=bool)] > 0.15 * diag).all()


def test_mesh_input_is_sampled_and_saved(tiny_model, bank, chair, tmp_path):
    kps = detect_keypoints(chair.mesh, ["leg end", "seat corner"], model=tiny_model, text=bank, num_points=1024,
                           min_probability=None)
    assert kps.points.shape == (1024, 3) and len(kps) >= 2 and kps.info["input"] == "mesh"
    _, dist, _ = trimesh.proximity.closest_point(chair.mesh, kps.positions)
    assert dist.max() < 1e-5
    d = kps.to_dict()
    assert d["names"] == ["leg end", "seat corner"] and len(d["keypoints"]) == len(kps)
    assert kps.save_json(tmp_path / "k.json").stat().st_size > 0
    assert kps.to_png(tmp_path / "k.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_input_errors(tiny_model, bank):
    cloud = make_cloud(300)
    with pytest.raises(ValueError, match="blank part names"):
        detect_keypoints(cloud, ["leg end", "  "], model=tiny_model, text=bank)
    with pytest.raises(KeyError, match="not in the text bank"):
        detect_keypoints(cloud, ["armrest"], model=tiny_model, text=bank)
    with pytest.raises(ValueError, match=r"no usable embedding.*'void'"):
        detect_keypoints(cloud, ["void", "nose"], model=tiny_model, text=np.r_[np.zeros((1, 64)), np.ones((1, 64))])
    with pytest.raises(ValueError, match="16-d but this model's head gives 64-d"):
        detect_keypoints(cloud, ["a"], model=tiny_model, text=np.ones((1, 16)))
    with pytest.raises(ValueError, match="no surface.*no faces"):
        detect_keypoints(trimesh.Trimesh(np.eye(3), np.zeros((0, 3), int)), ["a"], model=tiny_model, text=bank)
    flat = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [[0, 1, 2]], process=False)
    with pytest.raises(ValueError, match="no surface.*degenerate"):
        detect_keypoints(flat, ["nose"], model=tiny_model, text=bank)
    with pytest.raises(ValueError, match="empty"):
        detect_keypoints(np.zeros((0, 3), np.float32), ["nose"], model=tiny_model, text=bank)
    with pytest.raises(ValueError, match="NaN"):
        detect_keypoints(np.full((50, 3), np.nan, np.float32), ["nose"], model=tiny_model, text=bank)
    with pytest.raises(ValueError, match="mode must be one of"):
        detect_keypoints(cloud, ["nose"], model=tiny_model, text=bank, mode="oracle")
    with pytest.raises(ValueError, match="needs prototypes"):
        detect_keypoints(cloud, ["nose"], model=tiny_model, text=bank, mode="few_shot")
    with pytest.raises(ValueError, match="renders a mesh"):
        detect_keypoints(cloud, ["nose"], model=tiny_model, text=bank, mode="lift")


def test_stage_one_model_is_refused(bank):
    torch.manual_seed(0)
    stage1 = patchalign3d_tiny(text_dim=None).eval()
    with pytest.raises(ValueError, match="no text head"):
        detect_keypoints(make_cloud(200), ["nose"], model=stage1, text=bank)


def test_text_bank_lookup_is_by_name(tiny_model):
    g = torch.Generator().manual_seed(0)
    bank = TextBank(["a", "b"], torch.nn.functional.normalize(torch.randn(2, 64, generator=g), dim=-1), {})
    cloud = make_cloud(300)
    ab = detect_keypoints(cloud, ["a", "b"], model=tiny_model, text=bank)
    ba = detect_keypoints(cloud, ["b", "a"], model=tiny_model, text=bank)
    np.testing.assert_allclose(ab.field, ba.field[:, ::-1])
