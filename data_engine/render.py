"""Rendering: shaded RGB, depth and per-pixel face id of a mesh from a camera rig, two backends.

``RaycastRenderer`` casts one ray per pixel (trimesh with embreex; no OpenGL, exact face ids).
``PyrenderRenderer`` rasterises with pyrender (EGL or OSMesa headless; the GPU when there is one); face ids
come from a flat pass over an unshared-vertex copy whose vertex colours encode ``face + 1``.
Both shade with the mesh's own texture / vertex / face colours (a neutral albedo when it has none), an
ambient term and a headlight.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import trimesh

from .cameras import CameraRig

#: Face ids are packed into 24-bit RGB as ``face + 1`` (0 is the background).
MAX_PYRENDER_FACES = 2**24 - 2


@dataclass
class RenderConfig:
    """Renderer choice and lighting.

    Attributes:
        backend: ``"raycast"`` (trimesh + embreex, CPU) or ``"pyrender"`` (OpenGL).
        platform: ``PYOPENGL_PLATFORM`` used by pyrender when the environment sets none (``egl``/``osmesa``).
        ambient: ambient light, as a fraction of the albedo.
        headlight: strength of a directional light at the camera (Lambertian, two-sided).
        albedo: RGB in [0, 1] for meshes without their own colours or textures.
        background: RGB in [0, 1] behind the shape.
        use_materials: shade with the mesh's textures and colours (otherwise ``albedo`` everywhere).
    """

    backend: str = "raycast"
    platform: str = "egl"
    ambient: float = 0.35
    headlight: float = 0.65
    albedo: list[float] = field(default_factory=lambda: [0.7, 0.7, 0.7])
    background: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    use_materials: bool = True


@dataclass
class RenderOutput:
    """Per-view images, ``V`` views of ``R x R`` pixels.

    Attributes:
        rgb: ``(V, R, R, 3)`` uint8 shaded colour.
        depth: ``(V, R, R)`` float32 distance along the viewing axis, ``inf`` on background.
        face_ids: ``(V, R, R)`` int64 front-most face per pixel, ``-1`` on background.
    """

    rgb: np.ndarray
    depth: np.ndarray
    face_ids: np.ndarray


class Renderer(Protocol):
    """Anything that renders a mesh from a rig."""

    def render(self, mesh: trimesh.Trimesh, rig: CameraRig) -> RenderOutput: ...


def has_own_colors(mesh: trimesh.Trimesh) -> bool:
    """Whether the mesh carries textures, materials or vertex/face colours of its own."""
    return bool(mesh.visual is not None and mesh.visual.defined)


def surface_albedo(
    mesh: trimesh.Trimesh, face_ids: np.ndarray, points: np.ndarray, default: np.ndarray
) -> np.ndarray:
    """Base colour of surface points from the mesh's texture, vertex or face colours.

    Args:
        mesh: the mesh (its ``visual`` is read).
        face_ids: ``(M,)`` face of each point.
        points: ``(M, 3)`` positions on those faces.
        default: ``(3,)`` albedo in [0, 1] when the mesh has no colour information.

    Returns:
        ``(M, 3)`` float32 in [0, 1].
    """
    visual = mesh.visual
    if len(face_ids) == 0 or not has_own_colors(mesh):
        return np.broadcast_to(np.asarray(default, np.float32), (len(face_ids), 3)).copy()
    if visual.kind == "face":
        return visual.face_colors[face_ids, :3].astype(np.float32) / 255
    bary = trimesh.triangles.points_to_barycentric(mesh.triangles[face_ids], points)
    corners = mesh.faces[face_ids]  # (M, 3)
    if visual.kind == "vertex":
        colors = visual.vertex_colors[:, :3].astype(np.float32)[corners]  # (M, 3 corners, 3)
        return np.einsum("mc,mck->mk", bary, colors) / 255
    return _texture_albedo(visual, corners, bary, default)


def _material_color(material: object, default: np.ndarray) -> np.ndarray:
    """A material's base colour in [0, 1] (``default`` without one)."""
    color = getattr(material, "main_color", None)
    return np.asarray(default if color is None else np.asarray(color)[:3] / 255, dtype=np.float32)


def _texture_albedo(
    visual: trimesh.visual.TextureVisuals, corners: np.ndarray, bary: np.ndarray, default: np.ndarray
) -> np.ndarray:
    base = _material_color(visual.material, default)
    image = getattr(visual.material, "image", None)
    if image is None or visual.uv is None or len(visual.uv) == 0:
        return np.broadcast_to(base, (len(corners), 3)).copy()
    uv = np.einsum("mc,mck->mk", bary, np.asarray(visual.uv, dtype=np.float64)[corners])
    texel = trimesh.visual.color.uv_to_interpolated_color(uv, image)[:, :3].astype(np.float32) / 255
    # glTF multiplies the texture by the base-colour factor; OBJ's map_Kd usually comes with Kd = 1.
    return texel * base


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055)


def shade(albedo: np.ndarray, normals: np.ndarray, view_dirs: np.ndarray, config: RenderConfig) -> np.ndarray:
    """Two-sided Lambert with a headlight, ``albedo * (ambient + headlight * |n . v|)``.

    Lighting is done in linear colour and encoded back to sRGB, as pyrender's shader does, so the two
    backends give images of similar brightness.

    Args:
        albedo: ``(M, 3)`` sRGB base colour in [0, 1].
        normals: ``(M, 3)`` unit surface normals.
        view_dirs: ``(M, 3)`` unit ray directions.

    Returns:
        ``(M, 3)`` uint8 sRGB.
    """
    cos = np.abs(np.einsum("mk,mk->m", normals, view_dirs))[:, None]
    linear = _srgb_to_linear(np.clip(albedo, 0, 1)) * (config.ambient + config.headlight * cos)
    return (_linear_to_srgb(np.clip(linear, 0, 1)) * 255 + 0.5).astype(np.uint8)


def _ray_intersector(mesh: trimesh.Trimesh):
    """Embree when available (fast), trimesh's pure-Python intersector otherwise."""
    try:
        from trimesh.ray.ray_pyembree import RayMeshIntersector
    except ImportError:  # pragma: no cover - embreex is in the `render` extra
        from trimesh.ray.ray_triangle import RayMeshIntersector
    return RayMeshIntersector(mesh)


class RaycastRenderer:
    """One ray per pixel centre; face ids and depth are exact, no OpenGL needed."""

    def __init__(self, config: RenderConfig | None = None) -> None:
        self.config = config or RenderConfig()

    def render(self, mesh: trimesh.Trimesh, rig: CameraRig) -> RenderOutput:
        """Render ``mesh`` from every camera of ``rig``; see ``RenderOutput`` for shapes."""
        origins, directions = rig.rays()  # (V, P, 3) each
        num_views, num_pix = origins.shape[:2]
        tri, ray, loc = _ray_intersector(mesh).intersects_id(
            origins.reshape(-1, 3), directions.reshape(-1, 3), multiple_hits=False, return_locations=True
        )
        face_ids = np.full(num_views * num_pix, -1, dtype=np.int64)
        face_ids[ray] = tri
        forward = -rig.poses[:, :3, 2]  # (V, 3) viewing direction
        view_of_ray = ray // num_pix
        depth = np.full(num_views * num_pix, np.inf, dtype=np.float32)
        depth[ray] = np.einsum("mk,mk->m", loc - rig.poses[view_of_ray, :3, 3], forward[view_of_ray])

        rgb = np.empty((num_views * num_pix, 3), dtype=np.uint8)
        rgb[:] = (np.clip(self.config.background, 0, 1) * 255 + 0.5).astype(np.uint8)
        default = np.asarray(self.config.albedo, np.float32)
        albedo = (
            surface_albedo(mesh, tri, loc, default)
            if self.config.use_materials
            else np.tile(default, (len(tri), 1))
        )
        rgb[ray] = shade(albedo, mesh.face_normals[tri], directions.reshape(-1, 3)[ray], self.config)

        r = rig.resolution
        return RenderOutput(
            rgb=rgb.reshape(num_views, r, r, 3),
            depth=depth.reshape(num_views, r, r),
            face_ids=face_ids.reshape(num_views, r, r),
        )


def encode_face_colors(num_faces: int) -> np.ndarray:
    """``(F, 4)`` uint8 RGBA whose RGB packs ``face + 1`` little-endian (so black is background)."""
    if num_faces > MAX_PYRENDER_FACES:
        raise ValueError(f"{num_faces} faces exceed the 24-bit face-id encoding; use the raycast backend")
    code = np.arange(1, num_faces + 1, dtype=np.int64)
    return np.stack([code & 255, (code >> 8) & 255, (code >> 16) & 255, np.full_like(code, 255)], 1).astype(
        np.uint8
    )


def decode_face_colors(rgb: np.ndarray) -> np.ndarray:
    """Inverse of ``encode_face_colors`` on an image ``(..., 3)`` uint8: face id, ``-1`` on background."""
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] | (rgb[..., 1] << 8) | (rgb[..., 2] << 16)) - 1


def face_id_mesh(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """A copy with unshared vertices whose three corners all carry the colour code of their face."""
    num_faces = len(mesh.faces)
    colors = np.repeat(encode_face_colors(num_faces), 3, axis=0)
    return trimesh.Trimesh(
        vertices=mesh.vertices[mesh.faces].reshape(-1, 3),
        faces=np.arange(3 * num_faces).reshape(-1, 3),
        vertex_colors=colors,
        process=False,
    )


def _import_pyrender(platform: str):
    # PyOpenGL reads the platform once, at import; headless machines need EGL or OSMesa chosen before that.
    if "DISPLAY" not in os.environ:
        os.environ.setdefault("PYOPENGL_PLATFORM", platform)
    import pyrender

    return pyrender


@contextlib.contextmanager
def _single_sample(pyrender_module) -> Iterator[None]:
    """Keep GL_MULTISAMPLE off during a pass.

    pyrender resolves a 4x multisampled buffer on every colour pass except segmentation passes, and those
    skip materials (vertex colours come out black). Averaged samples would decode to wrong face ids at every
    face edge, so for the id pass the renderer's ``glEnable(GL_MULTISAMPLE)`` is made a no-op.
    """
    from OpenGL.GL import GL_MULTISAMPLE, glDisable

    module = pyrender_module.renderer
    original = module.glEnable
    module.glEnable = lambda cap: None if cap == GL_MULTISAMPLE else original(cap)
    glDisable(GL_MULTISAMPLE)
    try:
        yield
    finally:
        module.glEnable = original


_OFFSCREEN = None


def _shared_offscreen(pyrender_module, resolution: int):
    """The process's one pyrender offscreen context, resized to ``resolution``.

    One per process because pyrender's EGL teardown calls ``eglTerminate`` on the display every context
    shares, which kills any other live context; resizing an EGL context only reallocates framebuffers.
    """
    global _OFFSCREEN
    if _OFFSCREEN is None:
        _OFFSCREEN = pyrender_module.OffscreenRenderer(resolution, resolution)
    _OFFSCREEN.viewport_width = _OFFSCREEN.viewport_height = resolution
    return _OFFSCREEN


class PyrenderRenderer:
    """OpenGL rasterisation through pyrender (the process-wide offscreen context, reused across meshes)."""

    def __init__(self, config: RenderConfig | None = None) -> None:
        self.config = config or RenderConfig()
        self._pyrender = _import_pyrender(self.config.platform)

    def _camera(self, rig: CameraRig):
        pr = self._pyrender
        if rig.orthographic:
            return pr.OrthographicCamera(
                xmag=rig.half_extent, ymag=rig.half_extent, znear=rig.znear, zfar=rig.zfar
            )
        return pr.PerspectiveCamera(
            yfov=np.deg2rad(rig.fov_deg), aspectRatio=1.0, znear=rig.znear, zfar=rig.zfar
        )

    def _shaded_mesh(self, mesh: trimesh.Trimesh):
        pr = self._pyrender
        if self.config.use_materials and has_own_colors(mesh):
            return pr.Mesh.from_trimesh(mesh, smooth=False)
        material = pr.MetallicRoughnessMaterial(
            baseColorFactor=[*self.config.albedo, 1.0], metallicFactor=0.0, roughnessFactor=1.0
        )
        plain = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
        return pr.Mesh.from_trimesh(plain, material=material, smooth=False)

    def render(self, mesh: trimesh.Trimesh, rig: CameraRig) -> RenderOutput:
        """Render ``mesh`` from every camera of ``rig``; see ``RenderOutput`` for shapes."""
        pr = self._pyrender
        renderer = _shared_offscreen(pr, rig.resolution)
        camera = self._camera(rig)
        flags = pr.RenderFlags
        # All views of one scene, then the other: pyrender re-uploads meshes whenever the scene changes.
        shaded = pr.Scene(bg_color=[*self.config.background, 1.0], ambient_light=[self.config.ambient] * 3)
        shaded.add(self._shaded_mesh(mesh))
        cam_node = shaded.add(camera)
        # pyrender's BRDF divides the diffuse term by pi, so scale the light to get `headlight * cos`.
        light_node = shaded.add(pr.DirectionalLight(intensity=self.config.headlight * np.pi))
        rgbs = []
        for pose in rig.poses:
            shaded.set_pose(cam_node, pose)
            shaded.set_pose(light_node, pose)
            rgbs.append(renderer.render(shaded, flags=flags.SKIP_CULL_FACES)[0][..., :3])

        ids = pr.Scene(bg_color=[0.0, 0.0, 0.0, 0.0], ambient_light=[0.0, 0.0, 0.0])
        ids.add(pr.Mesh.from_trimesh(face_id_mesh(mesh), smooth=False))
        id_cam_node = ids.add(camera)
        faces, depths = [], []
        with _single_sample(pr):
            for pose in rig.poses:
                ids.set_pose(id_cam_node, pose)
                code, depth = renderer.render(ids, flags=flags.FLAT | flags.SKIP_CULL_FACES)
                faces.append(decode_face_colors(code))
                depths.append(self._linear_depth(depth, rig))
        return RenderOutput(rgb=np.stack(rgbs), depth=np.stack(depths), face_ids=np.stack(faces))

    @staticmethod
    def _linear_depth(depth: np.ndarray, rig: CameraRig) -> np.ndarray:
        """pyrender's depth (0 on background) as distance along the view axis, ``inf`` on background.

        pyrender linearises with the perspective formula whatever the camera; orthographic depth buffers
        are already linear in NDC, so undo that formula and map NDC depth back to [znear, zfar].
        """
        out = np.full(depth.shape, np.inf, dtype=np.float32)
        hit = depth > 0
        if not rig.orthographic:
            out[hit] = depth[hit]
            return out
        n, f = rig.znear, rig.zfar
        ndc = (f + n - 2 * n * f / depth[hit].astype(np.float64)) / (f - n)
        out[hit] = n + (ndc + 1) / 2 * (f - n)
        return out


def make_renderer(config: RenderConfig | None = None) -> Renderer:
    """The renderer named by ``config.backend``."""
    config = config or RenderConfig()
    if config.backend == "raycast":
        return RaycastRenderer(config)
    if config.backend == "pyrender":
        return PyrenderRenderer(config)
    raise ValueError(f"unknown render backend {config.backend!r}; expected 'raycast' or 'pyrender'")
