import numpy as np
import pytest
import torch

from patchalign3d.api import point_features, segment
from tests.conftest import make_cloud


def test_shapes_norms_and_the_interpolated_logits(tiny_model):
    cloud = make_cloud(400)
    pf = point_features(cloud, model=tiny_model)
    assert pf.embeddings.shape == (400, 64) and pf.tokens.shape == (400, 64) and pf.patch_centers.shape == (32, 3)
    np.testing.assert_allclose(np.linalg.norm(pf.embeddings, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(pf.tokens, axis=1), 1, atol=1e-5)
    # the embedding at a patch centre is that patch's embedding: its cosine with a text is segment's logit
    text = torch.nn.functional.normalize(torch.randn(2, 64, generator=torch.Generator().manual_seed(0)), dim=-1)
    seg = segment(cloud, ["a", "b"], model=tiny_model, text=text, temperature=1.0)
    centres = [int(np.flatnonzero((cloud == c).all(1))[0]) for c in seg.patch_centers]
    np.testing.assert_allclose(pf.embeddings[centres] @ text.numpy().T, seg.patch_logits, atol=1e-4)


def test_queries_and_invariance(tiny_model):
    cloud = make_cloud(300, seed=3)
    pf = point_features(cloud, model=tiny_model, queries=cloud[:7])
    np.testing.assert_allclose(pf.query_embeddings, pf.embeddings[:7], atol=1e-5)
    np.testing.assert_allclose(pf.query_tokens, pf.tokens[:7], atol=1e-5)
    moved = point_features(cloud * 4 - 1, model=tiny_model)
    np.testing.assert_allclose(moved.embeddings, pf.embeddings, atol=1e-4)
    assert point_features(cloud, model=tiny_model).query_tokens is None


def test_errors(tiny_model):
    with pytest.raises(ValueError, match="up_axis"):
        point_features(make_cloud(100), model=tiny_model, up_axis="x")
    with pytest.raises(ValueError, match="at least 16 points"):
        point_features(make_cloud(10), model=tiny_model)
