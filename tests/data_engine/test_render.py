"""Both renderers: same face ids and depth away from silhouettes; colours from the mesh's own materials."""

from __future__ import annotations

import ctypes.util

import numpy as np
import pytest
import trimesh
from scipy import ndimage

from data_engine.cameras import CameraConfig, make_rig
from data_engine.render import (
    RaycastRenderer,
    RenderConfig,
    decode_face_colors,
    encode_face_colors,
    make_renderer,
)

from .conftest import composed_mesh

HAS_GL = any(ctypes.util.find_library(name) for name in ("EGL", "OSMesa"))
needs_gl = pytest.mark.skipif(
    not HAS_GL, reason="no EGL/OSMesa library (apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri)"
)


@pytest.fixture(scope="module")
def pyrender_renderer():
    return make_renderer(RenderConfig(backend="pyrender"))


def interior(face_ids: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood shows one face (away from silhouettes and face edges)."""
    lo = ndimage.minimum_filter(face_ids, size=(1, 3, 3), mode="nearest")
    hi = ndimage.maximum_filter(face_ids, size=(1, 3, 3), mode="nearest")
    return (lo == hi) & (face_ids >= 0)


def test_face_color_code_round_trips():
    colors = encode_face_colors(70000)
    ids = decode_face_colors(colors[:, :3])
    np.testing.assert_array_equal(ids, np.arange(70000))
    assert decode_face_colors(np.zeros((2, 3), np.uint8)).tolist() == [-1, -1]


def test_raycast_depth_of_a_sphere_is_analytic():
    sphere = trimesh.creation.icosphere(5, radius=0.5)
    rig = make_rig(CameraConfig(num_views=2, resolution=32))
    out = RaycastRenderer().render(sphere, rig)
    origins, directions = rig.rays()
    hit = out.face_ids.reshape(2, -1) >= 0
    # orthographic ray x = o + t d hits |x| = 0.5 at t = -o.d - sqrt((o.d)^2 - |o|^2 + 0.25)
    od = np.einsum("vpk,vpk->vp", origins, directions)
    disc = od**2 - np.einsum("vpk,vpk->vp", origins, origins) + 0.25
    inside = disc > 0.01  # clear of the silhouette, where the tessellation differs most
    t = -od - np.sqrt(np.where(disc > 0, disc, 0))
    assert (hit == (disc > 0))[disc**2 > 1e-3].mean() > 0.99
    np.testing.assert_allclose(out.depth.reshape(2, -1)[inside & hit], t[inside & hit], atol=2e-3)
    assert np.isinf(out.depth.reshape(2, -1)[~hit]).all()


@needs_gl
@pytest.mark.parametrize("orthographic", [True, False])
def test_backends_agree_on_face_ids_and_depth(pyrender_renderer, orthographic):
    mesh = composed_mesh()
    rig = make_rig(CameraConfig(num_views=4, resolution=96, orthographic=orthographic))
    ray = RaycastRenderer().render(mesh, rig)
    gl = pyrender_renderer.render(mesh, rig)
    assert ray.face_ids.shape == gl.face_ids.shape == (4, 96, 96)
    inner = interior(ray.face_ids)
    assert inner.sum() > 1000  # enough pixels for the comparison to mean something
    assert (ray.face_ids[inner] == gl.face_ids[inner]).mean() > 0.995
    same = inner & (ray.face_ids == gl.face_ids)
    np.testing.assert_allclose(gl.depth[same], ray.depth[same], atol=5e-3)
    # silhouettes agree too, up to a thin band of edge pixels
    assert ((ray.face_ids >= 0) == (gl.face_ids >= 0)).mean() > 0.99


def _colored_box(kind: str) -> trimesh.Trimesh:
    box = trimesh.creation.box((0.8, 0.8, 0.8))
    if kind == "vertex":
        box.visual.vertex_colors = np.tile([220, 30, 30, 255], (len(box.vertices), 1))
    elif kind == "texture":
        from PIL import Image

        uv = np.stack([np.full(len(box.vertices), 0.25), np.full(len(box.vertices), 0.5)], 1)
        image = Image.fromarray(np.tile(np.array([[[30, 200, 30], [30, 30, 220]]], np.uint8), (2, 1, 1)))
        box.visual = trimesh.visual.TextureVisuals(uv=uv, image=image)
    return box


@pytest.mark.parametrize("backend", ["raycast", pytest.param("pyrender", marks=needs_gl)])
@pytest.mark.parametrize("kind, channel", [("vertex", 0), ("texture", 1)])
def test_colour_comes_from_the_mesh(backend, kind, channel):
    renderer = make_renderer(RenderConfig(backend=backend))
    rig = make_rig(CameraConfig(num_views=2, resolution=48))
    out = renderer.render(_colored_box(kind), rig)
    pixels = out.rgb[out.face_ids >= 0].astype(int)
    dominant = np.bincount(pixels.argmax(axis=1), minlength=3)
    assert dominant.argmax() == channel


def test_plain_mesh_gets_the_neutral_albedo_on_the_background_colour():
    config = RenderConfig(albedo=[0.5, 0.5, 0.5], background=[0.0, 0.0, 1.0])
    out = RaycastRenderer(config).render(
        trimesh.creation.icosphere(2, radius=0.4), make_rig(CameraConfig(num_views=1, resolution=32))
    )
    shape = out.face_ids[0] >= 0
    grey = out.rgb[0][shape].astype(int)
    assert (np.abs(grey[:, 0] - grey[:, 2]) <= 1).all() and (np.abs(grey[:, 0] - grey[:, 1]) <= 1).all()
    assert (out.rgb[0][~shape] == [0, 0, 255]).all()
