"""Camera rigs: the Find3D orbit by default, and the one projection every renderer and lookup shares.

Conventions (OpenGL, as pyrender): a camera pose is camera-to-world; the camera looks down its -z axis with
+y up. Pixel ``(u, v)`` has ``u`` growing right and ``v`` growing down, pixel ``(i, j)`` covering
``[j, j+1) x [i, i+1)`` with its centre at ``+0.5``. Depth is the distance along the viewing axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CameraConfig:
    """The view rig.

    Attributes:
        num_views: views on the orbit (Find3D: 10).
        distance: camera distance from the origin (Find3D: 3).
        elevations: elevations in degrees, cycled over the views (Find3D: 30, -20 alternating).
        azimuth_range: ``[start, stop)`` in degrees, split into ``num_views`` equal steps with the stop left
            out (Find3D's ``np.linspace(-180, 180, 10, endpoint=False)``: -180, -144, ..., 144, 36 degrees apart).
        resolution: square image size in pixels (Find3D: 500).
        orthographic: orthographic (Find3D) or perspective projection.
        ortho_half_extent: half-width of the orthographic view volume in world units.
        fov_deg: vertical field of view of the perspective camera.
    """

    num_views: int = 10
    distance: float = 3.0
    elevations: list[float] = field(default_factory=lambda: [30.0, -20.0])
    azimuth_range: list[float] = field(default_factory=lambda: [-180.0, 180.0])
    resolution: int = 500
    orthographic: bool = True
    ortho_half_extent: float = 1.0
    fov_deg: float = 40.0


def _rotate(vectors: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """``(N, 3)`` vectors rotated by each of ``(V, 3, 3)`` rotations, ``(V, N, 3)``.

    One ``(N, 3) @ (3, 3V)`` GEMM: far faster than ``einsum`` or batched ``matmul`` with an inner size of 3.
    """
    num = rotations.shape[0]
    stacked = rotations.transpose(2, 0, 1).reshape(3, 3 * num)  # column block v is R_v^T
    return (vectors @ stacked).reshape(len(vectors), num, 3).transpose(1, 0, 2)


def look_at(eye: np.ndarray, target: np.ndarray | None = None, up: np.ndarray | None = None) -> np.ndarray:
    """The ``(4, 4)`` camera-to-world pose of a camera at ``eye`` looking at ``target`` (default origin)."""
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    up = np.array([0.0, 1.0, 0.0]) if up is None else np.asarray(up, dtype=np.float64)
    back = np.asarray(eye, dtype=np.float64) - target  # camera +z points away from what it sees
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-8:  # looking straight along `up`: any perpendicular works
        right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(back, right), back, eye
    return pose


def orbit_eye(distance: float, elevation_deg: float, azimuth_deg: float) -> np.ndarray:
    """Camera position on a y-up sphere (PyTorch3D's spherical convention, which Find3D used)."""
    el, az = np.deg2rad(elevation_deg), np.deg2rad(azimuth_deg)
    return distance * np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])


@dataclass(frozen=True)
class CameraRig:
    """``V`` square cameras sharing intrinsics.

    Attributes:
        poses: ``(V, 4, 4)`` camera-to-world.
        resolution: image size ``R`` (images are ``R x R``).
        orthographic: projection kind.
        half_extent: orthographic half-width in world units.
        fov_deg: perspective vertical field of view.
        znear, zfar: clip range (depth outside it is not rendered).
    """

    poses: np.ndarray
    resolution: int
    orthographic: bool = True
    half_extent: float = 1.0
    fov_deg: float = 40.0
    znear: float = 0.05
    zfar: float = 10.0

    @property
    def num_views(self) -> int:
        return int(self.poses.shape[0])

    @property
    def _tan_half(self) -> float:
        return float(np.tan(np.deg2rad(self.fov_deg) / 2))

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points ``(N, 3)`` in every camera frame, ``(V, N, 3)``."""
        world_to_cam = np.linalg.inv(self.poses)  # (V, 4, 4)
        p = np.asarray(points, dtype=np.float64)
        return _rotate(p, world_to_cam[:, :3, :3]) + world_to_cam[:, None, :3, 3]

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Continuous pixel coordinates and depth of world points in every view.

        Args:
            points: ``(N, 3)`` world positions.

        Returns:
            ``uv`` ``(V, N, 2)`` float64 (``u`` right, ``v`` down, pixel centres at ``+0.5``) and
            ``depth`` ``(V, N)`` (distance along the viewing axis; negative behind the camera).
        """
        cam = self.to_camera(points)
        depth = -cam[..., 2]
        if self.orthographic:
            ndc = cam[..., :2] / self.half_extent
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                ndc = cam[..., :2] / (depth[..., None] * self._tan_half)
        r = self.resolution
        uv = np.stack([(ndc[..., 0] + 1) * r / 2, (1 - ndc[..., 1]) * r / 2], axis=-1)
        return uv, depth

    def _local_rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre rays in the camera frame, ``(R * R, 3)`` origins and unit directions."""
        r = self.resolution
        centres = (np.arange(r) + 0.5) / r * 2 - 1
        x, y = np.meshgrid(centres, -centres)  # image rows go down, camera +y goes up
        x, y = x.ravel(), y.ravel()
        if self.orthographic:
            origins = np.stack([x * self.half_extent, y * self.half_extent, np.zeros_like(x)], -1)
            return origins, np.broadcast_to([0.0, 0.0, -1.0], origins.shape)
        directions = np.stack([x * self._tan_half, y * self._tan_half, -np.ones_like(x)], -1)
        return np.zeros_like(directions), directions / np.linalg.norm(directions, axis=-1, keepdims=True)

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Rays through every pixel centre, row-major.

        Returns:
            ``origins`` and unit ``directions``, each ``(V, R * R, 3)`` in world coordinates.
        """
        local_o, local_d = self._local_rays()
        rot, eye = self.poses[:, :3, :3], self.poses[:, :3, 3]
        return _rotate(local_o, rot) + eye[:, None], _rotate(np.asarray(local_d), rot)

    def ray_depth_scale(self) -> np.ndarray:
        """``(R * R,)`` factor turning distance along a pixel's ray into depth along the viewing axis."""
        return -self._local_rays()[1][:, 2]


def rig_angles(config: CameraConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(V,)`` elevations and ``(V,)`` azimuths of the views of ``config``, in degrees."""
    if config.num_views < 1:
        raise ValueError(f"num_views must be at least 1, got {config.num_views}")
    if len(config.azimuth_range) != 2:
        raise ValueError(f"azimuth_range must be [start, stop] in degrees, got {config.azimuth_range}")
    if not config.elevations:
        raise ValueError("elevations must hold at least one angle")
    # The stop is left out as in Find3D: with -180..180 it would repeat the first direction.
    azimuths = np.linspace(config.azimuth_range[0], config.azimuth_range[1], config.num_views, endpoint=False)
    elevations = np.array([config.elevations[i % len(config.elevations)] for i in range(config.num_views)])
    return elevations.astype(np.float64), azimuths


def make_rig(config: CameraConfig | None = None, margin: float = 2.0) -> CameraRig:
    """The rig of ``config``: cameras on an orbit looking at the origin.

    ``margin`` sets the clip range ``distance -/+ margin``; normalised shapes fit well inside it.
    """
    config = config or CameraConfig()
    elevations, azimuths = rig_angles(config)
    poses = np.stack(
        [look_at(orbit_eye(config.distance, e, a)) for e, a in zip(elevations, azimuths, strict=True)]
    )
    return CameraRig(
        poses=poses,
        resolution=config.resolution,
        orthographic=config.orthographic,
        half_extent=config.ortho_half_extent,
        fov_deg=config.fov_deg,
        znear=max(config.distance - margin, 1e-3),
        zfar=config.distance + margin,
    )


#: ZeroKey's view count: 3 rings of 8 azimuths plus a view from straight above and one from straight below.
ZEROKEY_NUM_VIEWS = 26


def pinhole_orbit_rig(
    *,
    azimuths_per_ring: int = 8,
    elevations: tuple[float, ...] = (-45.0, 0.0, 45.0),
    poles: bool = True,
    distance: float = 3.0,
    fov_deg: float = 40.0,
    resolution: int = 512,
    margin: float = 2.0,
) -> CameraRig:
    """A perspective (pinhole) rig around the whole shape, top and bottom included, as ZeroKey renders.

    Every elevation is a full ring of ``azimuths_per_ring`` views (azimuths ``360 / n`` apart from 0; rings
    offset by half a step from one another so that no two views of neighbouring rings line up), and
    ``poles`` adds a view from straight above and one from straight below. The defaults give
    :data:`ZEROKEY_NUM_VIEWS` views. At distance 3 with a 40-degree field of view a shape inside the unit
    sphere fills most of the image (half-angle 19.5 of 20 degrees for radius 1). The orbit of
    :class:`CameraConfig` instead cycles two elevations over the views and never looks from above or below.
    """
    if azimuths_per_ring < 1 or not elevations:
        raise ValueError("a pinhole orbit needs at least one ring with at least one view")
    if any(abs(e) >= 90 for e in elevations):
        raise ValueError(f"ring elevations must lie strictly between -90 and 90 degrees, got {list(elevations)}")
    step = 360.0 / azimuths_per_ring
    angles = [(e, r * step / 2 + a * step) for r, e in enumerate(elevations) for a in range(azimuths_per_ring)]
    if poles:
        angles += [(90.0, 0.0), (-90.0, 0.0)]
    # looking straight down the up axis, look_at picks the picture's up itself; z up in the image is as good as any
    poses = np.stack([look_at(orbit_eye(distance, e, a), up=np.array([0.0, 0.0, -1.0]) if abs(e) == 90 else None)
                      for e, a in angles])
    return CameraRig(poses=poses, resolution=resolution, orthographic=False, fov_deg=fov_deg,
                     znear=max(distance - margin, 1e-3), zfar=distance + margin)
