import numpy as np
import pytest
import torch
import trimesh

import patchalign3d as pa
from patchalign3d.api import segment, segment_mesh
from patchalign3d.text import TextBank
from tests.conftest import make_cloud

NAMES = ["seat", "back", "leg"]


@pytest.fixture
def bank():
    g = torch.Generator().manual_seed(0)
    return TextBank(NAMES, torch.nn.functional.normalize(torch.randn(3, 64, generator=g), dim=-1), {"text_dim": 64})


def test_single_cloud_fields(tiny_model, bank, cloud):
    seg = segment(cloud, NAMES, model=tiny_model, text=bank)
    n, g = len(cloud), tiny_model.config.num_groups
    assert seg.labels.shape == (n,) and seg.labels.dtype == np.int64
    assert seg.point_logits.shape == (n, 3) and seg.patch_logits.shape == (g, 3)
    assert seg.patch_centers.shape == (g, 3)
    assert np.array_equal(seg.labels, seg.point_logits.argmax(1))
    assert seg.part_names == NAMES
    # patch centres are input points (FPS picks points), and the first is point 0 (release FPS)
    assert np.allclose(seg.patch_centers[0], cloud[0])


def test_nearest_assignment_uses_nearest_centre(tiny_model, bank, cloud):
    seg = segment(cloud, NAMES, model=tiny_model, text=bank, normalize=False, up_axis="z")
    d = ((cloud[:, None] - seg.patch_centers[None]) ** 2).sum(-1)
    assert np.allclose(seg.point_logits, seg.patch_logits[d.argmin(1)], atol=1e-6)


def test_matches_manual_release_pipeline(tiny_model, bank, cloud):
    """Normalise, swap y/z, group, encode, cosine x 1/0.07, nearest centre: done by hand with the model's parts."""
    x = cloud - cloud.mean(0)
    x = x / np.linalg.norm(x, axis=1).max()
    x = torch.from_numpy(x[:, [0, 2, 1]].copy())[None]
    with torch.no_grad():
        p = tiny_model.group(x)
        emb = torch.nn.functional.normalize(tiny_model.proj(tiny_model.encoder(p.neighborhood, p.centers)), dim=-1)
        logits = emb @ bank.emb.T / 0.07
    seg = segment(cloud, NAMES, model=tiny_model, text=bank, dtype="float32")
    assert np.allclose(seg.patch_logits, logits[0].numpy(), atol=1e-4)


def test_permuting_points_permutes_labels(tiny_model, bank, cloud):
    perm = np.random.default_rng(1).permutation(len(cloud))
    perm = np.concatenate([[0], perm[perm != 0]])  # FPS starts at point 0: keep it first
    a = segment(cloud, NAMES, model=tiny_model, text=bank)
    b = segment(cloud[perm], NAMES, model=tiny_model, text=bank)
    assert np.array_equal(a.labels[perm], b.labels)


def test_translation_and_scale_do_not_change_labels(tiny_model, bank, cloud):
    a = segment(cloud, NAMES, model=tiny_model, text=bank)
    b = segment(cloud * 3.7 + np.array([5.0, -2.0, 1.0], dtype=np.float32), NAMES, model=tiny_model, text=bank)
    assert (a.labels == b.labels).mean() > 0.99


def test_batch_equals_one_by_one(tiny_model, bank):
    clouds = [make_cloud(300, 1), make_cloud(450, 2), make_cloud(300, 3)]
    batched = segment(clouds, NAMES, model=tiny_model, text=bank, batch_size=2)
    for c, s in zip(clouds, batched):
        alone = segment(c, NAMES, model=tiny_model, text=bank)
        assert np.array_equal(s.labels, alone.labels)
        assert np.allclose(s.point_logits, alone.point_logits, atol=1e-4)


def test_torch_and_batched_array_inputs(tiny_model, bank):
    arr = np.stack([make_cloud(200, 5), make_cloud(200, 6)])
    out_np = segment(arr, NAMES, model=tiny_model, text=bank)
    out_t = segment(torch.from_numpy(arr), NAMES, model=tiny_model, text=bank)
    assert len(out_np) == 2 and all(np.array_equal(a.labels, b.labels) for a, b in zip(out_np, out_t))


def test_bf16_mostly_agrees_with_fp32(tiny_model, bank, cloud):
    a = segment(cloud, NAMES, model=tiny_model, text=bank, dtype="float32")
    b = segment(cloud, NAMES, model=tiny_model, text=bank, dtype="bfloat16")
    assert (a.labels == b.labels).mean() > 0.9
    assert a.dtype == "float32" and b.dtype == "bfloat16"
    assert not np.array_equal(a.patch_logits, b.patch_logits)  # bf16 really ran
    assert all(p.dtype == torch.float32 for p in tiny_model.parameters())  # on a copy, not on the model


def test_dtype_auto_is_what_the_hardware_runs_fast(tiny_model, bank, cloud):
    from patchalign3d.precision import dtype_name, resolve_dtype

    seg = segment(cloud, NAMES, model=tiny_model, text=bank, dtype="auto")
    assert seg.dtype == dtype_name(resolve_dtype("auto", "cpu"))
    mesh = trimesh.creation.box()
    assert segment_mesh(mesh, NAMES, model=tiny_model, text=bank, num_points=64, dtype="auto").dtype == seg.dtype


def test_float32_is_exact_and_repeatable(tiny_model, bank, cloud):
    a = segment(cloud, NAMES, model=tiny_model, text=bank, dtype="bfloat16")  # a bf16 copy is cached now
    b = segment(cloud, NAMES, model=tiny_model, text=bank, dtype="float32")
    c = segment(cloud, NAMES, model=tiny_model, text=bank, dtype=torch.float32)
    assert np.array_equal(b.point_logits, c.point_logits) and a.dtype == "bfloat16"


@pytest.mark.parametrize("dtype", ["float16", "half", torch.float64])
def test_bad_dtype_names_the_choices(tiny_model, bank, cloud, dtype):
    with pytest.raises(ValueError, match="'auto', 'float32', 'bfloat16'|float32 or bfloat16"):
        segment(cloud, NAMES, model=tiny_model, text=bank, dtype=dtype)


@pytest.mark.slow
def test_compiled_network_agrees(tiny_model, bank, cloud):
    eager = segment(cloud, NAMES, model=tiny_model, text=bank, dtype="float32")
    compiled = segment(cloud, NAMES, model=tiny_model, text=bank, dtype="float32", compile=True)
    assert np.allclose(compiled.patch_logits, eager.patch_logits, atol=1e-3)
    bf16 = segment(cloud, NAMES, model=tiny_model, text=bank, dtype="bfloat16", compile=True)
    assert (bf16.labels == eager.labels).mean() > 0.9 and bf16.dtype == "bfloat16"


def test_max_points_encodes_a_subset_but_labels_all(tiny_model, bank):
    big = make_cloud(3000, 7)
    seg = segment(big, NAMES, model=tiny_model, text=bank, max_points=500)
    assert seg.labels.shape == (3000,)
    again = segment(big, NAMES, model=tiny_model, text=bank, max_points=500)
    assert np.array_equal(seg.labels, again.labels)  # seeded subset


@pytest.mark.parametrize("assign", ["membership", "interpolate"])
def test_other_assign_modes(tiny_model, bank, cloud, assign):
    seg = segment(cloud, NAMES, model=tiny_model, text=bank, assign=assign)
    assert seg.point_logits.shape == (len(cloud), 3) and np.isfinite(seg.point_logits).all()


def test_small_clouds(tiny_model, bank):
    # fewer points than groups (32) but at least the patch size (16): one patch per point
    seg = segment(make_cloud(20, 8), NAMES, model=tiny_model, text=bank)
    assert seg.patch_centers.shape == (20, 3)
    with pytest.raises(ValueError, match="at least 16 points"):
        segment(make_cloud(10, 8), NAMES, model=tiny_model, text=bank)


@pytest.mark.parametrize(
    "points, err, match",
    [
        (np.full((100, 3), np.nan, np.float32), ValueError, "NaN or infinite"),
        (np.where(np.arange(300)[:, None] == 4, np.inf, make_cloud(300)), ValueError, r"rows \[4\]"),
        (np.zeros((100, 2), np.float32), ValueError, r"shape \(N, 3\)"),
        (np.zeros((100, 3), np.int64), TypeError, "floating point"),
        ([1, 2, 3], TypeError, "numpy array"),
        ([], ValueError, "empty list"),
    ],
)
def test_bad_points(tiny_model, bank, points, err, match):
    with pytest.raises(err, match=match):
        segment(points, NAMES, model=tiny_model, text=bank)


@pytest.mark.parametrize(
    "names, match", [([], "empty"), (["seat", " "], "blank"), (["Seat", "seat"], "duplicate")]
)
def test_bad_part_names(tiny_model, bank, cloud, names, match):
    with pytest.raises(ValueError, match=match):
        segment(cloud, names, model=tiny_model, text=bank)


def test_name_missing_from_bank_and_wrong_width(tiny_model, bank, cloud):
    with pytest.raises(KeyError, match="armrest"):
        segment(cloud, ["seat", "armrest"], model=tiny_model, text=bank)
    with pytest.raises(ValueError, match="32-d but this model's head gives 64-d"):
        segment(cloud, NAMES, model=tiny_model, text=torch.randn(3, 32))
    with pytest.raises(ValueError, match="up_axis"):
        segment(cloud, NAMES, model=tiny_model, text=bank, up_axis="x")


def test_file_input_and_save(tiny_model, bank, cloud, tmp_path):
    np.savez(tmp_path / "c.npz", points=cloud)
    seg = segment(tmp_path / "c.npz", NAMES, model=tiny_model, text=bank)
    out = seg.save(tmp_path / "seg.npz")
    with np.load(out) as f:
        assert np.array_equal(f["labels"], seg.labels) and list(f["part_names"]) == NAMES
    ply = seg.save(tmp_path / "seg.ply")
    back = trimesh.load(ply)
    assert len(back.vertices) == len(cloud)


def test_segment_mesh_gives_vertex_and_face_labels(tiny_model, bank):
    mesh = trimesh.creation.capsule(height=1.0, radius=0.3, count=[16, 16])
    seg = segment_mesh(mesh, NAMES, model=tiny_model, text=bank, num_points=400)
    assert seg.vertex_labels.shape == (len(mesh.vertices),)
    assert seg.face_labels.shape == (len(mesh.faces),)
    assert seg.labels.shape == (400,)
    # a vertex that coincides with a sampled point's nearest centre gets that centre's label
    d = ((mesh.vertices[:, None] - seg.patch_centers[None]) ** 2).sum(-1)
    assert np.array_equal(seg.vertex_labels, seg.patch_logits[d.argmin(1)].argmax(1))


def test_public_namespace():
    assert pa.segment is segment and callable(pa.load_model) and pa.TextBank is TextBank


def test_text_none_uses_the_encoder_the_checkpoint_names(cloud):
    from patchalign3d.model import patchalign3d_tiny
    from patchalign3d.text import get_text_encoder

    model = patchalign3d_tiny(text_dim=384).eval()
    model.text_meta = get_text_encoder("minilm").meta()
    seg = segment(cloud, ["wing", "tail"], model=model)
    bank = TextBank.build(["wing", "tail"], get_text_encoder("minilm"))
    assert np.array_equal(seg.labels, segment(cloud, ["wing", "tail"], model=model, text=bank).labels)


def test_segment_mesh_list_equals_one_by_one_and_saves_every_face(tiny_model, bank, tmp_path):
    capsule = trimesh.creation.capsule(height=1.0, radius=0.3, count=[16, 16])
    box = trimesh.creation.box(extents=[1.0, 0.4, 0.6])
    box.visual.face_colors = [10, 200, 10, 255]
    box.export(tmp_path / "box.glb")
    both = segment_mesh([capsule, tmp_path / "box.glb"], NAMES, model=tiny_model, text=bank, num_points=300)
    for src, seg in zip([capsule, tmp_path / "box.glb"], both):
        alone = segment_mesh(src, NAMES, model=tiny_model, text=bank, num_points=300)
        assert np.array_equal(seg.face_labels, alone.face_labels)
    scene = trimesh.load(both[1].save(tmp_path / "parts.glb"), process=False)
    counts = {n: len(g.faces) for n, g in scene.geometry.items()}
    assert counts == {n: int((both[1].face_labels == k).sum()) for k, n in enumerate(NAMES) if (both[1].face_labels == k).any()}
    with pytest.raises(TypeError, match=r"mesh_or_path\[1\] must be a trimesh.Trimesh"):
        segment_mesh([capsule, 3], NAMES, model=tiny_model, text=bank)
