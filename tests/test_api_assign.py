"""segment(assign=...) wires each assignment mode through: every point's logits follow the mode's rule.

The expected logits are recomputed here with NumPy from what the result itself reports (patch centres and
patch logits, in the input frame) and the rules README's option table states: the nearest centre's row;
the mean over the patches that hold the point (patch = the centre's ``group_size`` nearest points), else the
nearest centre's row; the same mean with all-zero logits for a point in no patch (the release's
``--assign membership``: its argmax is label 0); inverse-distance weights over the 3 nearest centres.
Distances are compared in the input frame: normalisation is a shift and one scale, the y/z swap an
isometry, so nearest points and distance ratios are the same in the model's frame.
"""

import numpy as np
import pytest
import torch

import patchalign3d as pa
from patchalign3d.model import patchalign3d_tiny

NAMES = ["seat", "back", "leg", "arm"]
NUM_GROUPS = 8  # 8 patches x 16 points hold at most 128 of the 200 points: many points are in no patch


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    model = patchalign3d_tiny().eval()  # group_size 16, 64-d text head
    rng = np.random.default_rng(3)
    points = rng.normal(size=(200, 3)).astype(np.float32)
    text = rng.normal(size=(len(NAMES), 64)).astype(np.float32)
    return model, points, text


def run(case, assign):
    model, points, text = case
    return pa.segment(points, NAMES, model=model, text=text, num_groups=NUM_GROUPS, assign=assign)


def distances(seg):
    pts, centres = seg.points.astype(np.float64), seg.patch_centers.astype(np.float64)
    return np.linalg.norm(pts[:, None] - centres[None], axis=-1)  # (N, G)


def membership(seg, group_size=16):
    """(N, G) True where point n is one of centre g's ``group_size`` nearest points."""
    d = distances(seg)
    members = np.zeros(d.shape, bool)
    nearest_points = np.argsort(d, axis=0)[:group_size]  # (group_size, G)
    for g in range(d.shape[1]):
        members[nearest_points[:, g], g] = True
    return members


def nearest_rows(seg):
    return seg.patch_logits[distances(seg).argmin(1)]


def member_mean(seg):
    members = membership(seg)
    counts = members.sum(1)
    mean = (members.astype(np.float64) @ seg.patch_logits) / np.maximum(counts, 1)[:, None]
    return mean, counts > 0


def check(seg, expected):
    np.testing.assert_allclose(seg.point_logits, expected, rtol=1e-4, atol=1e-4)
    assert np.array_equal(seg.labels, expected.argmax(1))


def test_nearest(case):
    seg = run(case, "nearest")
    check(seg, nearest_rows(seg))


def test_membership(case):
    seg = run(case, "membership")
    mean, inside = member_mean(seg)
    assert 0 < inside.sum() < len(inside)  # both kinds of point occur
    check(seg, np.where(inside[:, None], mean, nearest_rows(seg)))
    # a point in several patches takes their mean, which is not the nearest centre's row
    several = membership(seg).sum(1) > 1
    assert several.any() and not np.allclose(seg.point_logits[several], nearest_rows(seg)[several], atol=1e-3)


def test_membership_release(case):
    seg = run(case, "membership_release")
    mean, inside = member_mean(seg)
    check(seg, np.where(inside[:, None], mean, 0.0))
    # the release's rule: a point in no patch has all-zero logits, so it is labelled part 0
    assert (~inside).any() and np.all(seg.point_logits[~inside] == 0) and np.all(seg.labels[~inside] == 0)


def test_interpolate(case):
    seg = run(case, "interpolate")
    d = distances(seg)
    idx = np.argsort(d, axis=1)[:, :3]
    w = 1.0 / (np.take_along_axis(d, idx, 1) + 1e-8)
    w /= w.sum(1, keepdims=True)
    expected = (seg.patch_logits[idx] * w[..., None]).sum(1)
    check(seg, expected)
    assert not np.allclose(expected, nearest_rows(seg), atol=1e-3)  # the rule differs from "nearest" here


@pytest.mark.parametrize("assign", ["nearest", "membership", "membership_release", "interpolate"])
def test_segment_mesh_labels_vertices_and_faces_by_the_mode(case, assign):
    """A mesh's vertices and face centres are not among the sampled points: "nearest" and "interpolate" apply
    their rule to them directly; the membership modes (patch membership exists for sampled points only) give
    each the labels of its nearest sampled point. (The membership modes used to index the samples' memberships
    with vertex numbers: an IndexError with more samples than vertices, else wrong labels.)"""
    import trimesh

    from patchalign3d.api import point_features

    model = case[0]
    mesh = trimesh.creation.icosphere(subdivisions=3)  # 642 vertices, 1280 faces; 400 samples
    vertices = np.asarray(mesh.vertices, np.float32)
    # names whose embeddings are the model's own at four sides of the sphere: labels vary over the surface
    emb = point_features(vertices, model=model).embeddings
    sides = [vertices[:, 0].argmax(), vertices[:, 0].argmin(), vertices[:, 1].argmax(), vertices[:, 1].argmin()]
    text = (emb[sides] - emb.mean(0)).astype(np.float32)
    seg = pa.segment_mesh(mesh, NAMES, model=model, text=text, num_points=400, num_groups=16, assign=assign)
    for queries, labels in ((mesh.vertices, seg.vertex_labels), (mesh.triangles_center, seg.face_labels)):
        q = np.asarray(queries, np.float64)
        to_centres = np.linalg.norm(q[:, None] - seg.patch_centers[None].astype(np.float64), axis=-1)
        nearest = seg.patch_logits[to_centres.argmin(1)].argmax(1)
        if assign == "nearest":
            expected = nearest
        elif assign == "interpolate":
            idx = np.argsort(to_centres, axis=1)[:, :3]
            w = 1.0 / (np.take_along_axis(to_centres, idx, 1) + 1e-8)
            expected = (seg.patch_logits[idx] * (w / w.sum(1, keepdims=True))[..., None]).sum(1).argmax(1)
            assert np.mean(nearest != expected) > 0.02  # the two rules label these queries differently
        else:
            to_points = np.linalg.norm(q[:, None] - seg.points[None].astype(np.float64), axis=-1)
            expected = seg.labels[to_points.argmin(1)]
        assert len(np.unique(expected)) == len(NAMES)
        assert np.mean(labels == expected) > 0.995  # a tie between equidistant centres may break either way
