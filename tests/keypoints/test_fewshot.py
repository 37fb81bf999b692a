import numpy as np
import pytest

from patchalign3d.keypoints import KeypointPrototypes, detect_keypoints
from tests.conftest import make_cloud


def test_a_single_annotated_point_is_found_again_on_the_same_shape(tiny_model):
    cloud = make_cloud(700, seed=4)
    for variant in ("prototype", "nearest"):
        protos = KeypointPrototypes(tiny_model, variant=variant).fit([cloud], [{"tip": [321]}])
        kps = protos.predict(cloud)
        assert kps.of("tip").tolist() == [321]  # cosine 1 at the annotated point itself
        assert kps.mode == "few_shot" and kps.info["instances"] == {"tip": 1}


def test_transfer_is_invariant_to_scale_and_shift(tiny_model):
    cloud = make_cloud(600, seed=6)
    protos = KeypointPrototypes(tiny_model, variant="nearest").fit([cloud], [{"a": [10], "b": [400]}])
    moved = cloud * 2.5 + np.array([1.0, -3.0, 0.5], np.float32)  # normalisation undoes scale and shift
    assert protos.predict(moved).indices.tolist() == protos.predict(cloud).indices.tolist() == [10, 400]


def test_instances_follow_the_support(tiny_model):
    a, b = make_cloud(500, seed=1), make_cloud(500, seed=2)
    protos = KeypointPrototypes(tiny_model, min_relative_score=0.0).fit([a, b], [{"x": [1, 2, 3, 4]}, {"x": [5, 6]}])
    assert protos.instances == {"x": 3}
    assert len(protos.predict(make_cloud(500, seed=3)).of("x")) <= 3


def test_positions_snap_to_the_nearest_point_and_meshes_work(tiny_model, chair):
    cloud = make_cloud(400, seed=8)
    by_position = KeypointPrototypes(tiny_model).fit([cloud], [{"p": cloud[[42]] + 1e-4}])
    by_index = KeypointPrototypes(tiny_model).fit([cloud], [{"p": [42]}])
    np.testing.assert_allclose(by_position.support["p"], by_index.support["p"])
    legs = {"leg end": np.asarray(chair.keypoints["leg end"], np.float32)}
    protos = KeypointPrototypes(tiny_model).fit([chair.mesh], [legs], num_points=1024)
    kps = protos.predict(chair.mesh, num_points=1024)
    assert 1 <= len(kps.of("leg end")) <= 4 and kps.points.shape == (1024, 3)


def test_detect_keypoints_few_shot_mode_and_precomputed_features(tiny_model):
    from patchalign3d.api import point_features

    cloud = make_cloud(500, seed=9)
    protos = KeypointPrototypes(tiny_model).fit([cloud], [{"q": [77]}])
    a = detect_keypoints(cloud, ["q"], mode="few_shot", prototypes=protos)
    b = protos.predict(None, ["q"], features=point_features(cloud, model=tiny_model))
    assert a.indices.tolist() == b.indices.tolist() == [77]


def test_save_and_load(tiny_model, tmp_path):
    cloud = make_cloud(300)
    protos = KeypointPrototypes(tiny_model, features="embeddings", variant="nearest").fit([cloud], [{"k": [5, 200]}])
    path = protos.save(tmp_path / "p.pt")
    again = KeypointPrototypes.load(path, tiny_model)
    assert again.variant == "nearest" and again.features == "embeddings" and again.instances == {"k": 2}
    assert again.predict(cloud).indices.tolist() == protos.predict(cloud).indices.tolist()
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a KeypointPrototypes file"):
        KeypointPrototypes.load(tmp_path / "bad.pt")


def test_bad_input(tiny_model):
    cloud = make_cloud(300)
    with pytest.raises(ValueError, match="2 shapes but 1 annotations"):
        KeypointPrototypes(tiny_model).fit([cloud, cloud], [{"a": [1]}])
    with pytest.raises(ValueError, match=r"annotation 0, 'a': point index 300 is outside"):
        KeypointPrototypes(tiny_model).fit([cloud], [{"a": [300]}])
    with pytest.raises(ValueError, match="hold no keypoints"):
        KeypointPrototypes(tiny_model).fit([cloud], [{"a": []}])
    with pytest.raises(ValueError, match="non-empty list of shapes"):
        KeypointPrototypes(tiny_model).fit(cloud, [{"a": [1]}])
    with pytest.raises(RuntimeError, match="before fit"):
        KeypointPrototypes(tiny_model).predict(cloud)
    protos = KeypointPrototypes(tiny_model).fit([cloud], [{"a": [1]}])
    with pytest.raises(KeyError, match=r"no support keypoints for \['b'\]"):
        protos.predict(cloud, ["b"])
    with pytest.raises(ValueError, match="features must be one of"):
        KeypointPrototypes(tiny_model, features="pixels")
