"""Cameras: the VTK/Slicer form a user sees, and the OpenCV form rasterizers and ray marchers use.

A :class:`Camera` stores what Slicer's camera node stores — position, focal point and view-up in RAS mm, a
vertical view angle (perspective) or a parallel scale (orthographic: half the view height in mm) — plus the image
size in pixels. :meth:`Camera.world_to_camera` and :meth:`Camera.intrinsics` are the one conversion to the
OpenCV convention (camera x right, y down, z forward; pixel ``(u, v)`` with ``u`` along image columns, ``v`` along
rows from the top, pixel centres at ``+0.5``). Every renderer in RenderFM uses these two functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .errors import CameraError

#: RAS unit vectors, for readability.
ANTERIOR = np.array([0.0, 1.0, 0.0])
SUPERIOR = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class Camera:
    """A pinhole or orthographic camera in RAS millimetres (VTK semantics) with an image size in pixels.

    ``view_angle_deg`` is VTK's vertical view angle (used when ``parallel_projection`` is false);
    ``parallel_scale`` is half the height of the view in mm (used when it is true).
    """

    position: tuple[float, float, float]
    focal_point: tuple[float, float, float]
    view_up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    view_angle_deg: float = 30.0
    width: int = 256
    height: int = 256
    parallel_projection: bool = False
    parallel_scale: float = 100.0

    def __post_init__(self) -> None:
        for name in ("position", "focal_point", "view_up"):
            value = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if value.shape != (3,) or not np.isfinite(value).all():
                raise CameraError(f"camera {name} must be 3 finite numbers, got {getattr(self, name)!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if int(self.width) < 1 or int(self.height) < 1:
            raise CameraError(f"image size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        if not 0.0 < self.view_angle_deg < 180.0:
            raise CameraError(f"view angle must be in (0, 180) degrees, got {self.view_angle_deg}")
        if self.parallel_projection and not self.parallel_scale > 0:
            raise CameraError(f"parallel scale must be positive, got {self.parallel_scale}")
        self.basis()  # raises on degenerate direction / view-up

    # ---- OpenCV form ------------------------------------------------------------------------------------
    def basis(self) -> np.ndarray:
        """Rows ``[right, down, forward]``: unit camera axes in RAS (3x3, orthonormal, right-handed)."""
        position = np.array(self.position)
        forward = np.array(self.focal_point) - position
        distance = np.linalg.norm(forward)
        if distance < 1e-9:
            raise CameraError("camera position and focal point coincide: no view direction")
        forward /= distance
        right = np.cross(forward, np.array(self.view_up))
        norm = np.linalg.norm(right)
        if norm < 1e-6:
            raise CameraError("camera view-up is parallel to the view direction")
        right /= norm
        down = np.cross(forward, right)
        return np.stack([right, down, forward])

    def world_to_camera(self) -> np.ndarray:
        """4x4 OpenCV world(RAS mm)-to-camera matrix: camera x right, y down, z forward (mm)."""
        rotation = self.basis()
        matrix = np.eye(4)
        matrix[:3, :3] = rotation
        matrix[:3, 3] = -rotation @ np.array(self.position)
        return matrix

    @property
    def focal_length_px(self) -> float:
        """Focal length in pixels for perspective cameras (square pixels): ``(H/2) / tan(angle/2)``."""
        return 0.5 * self.height / math.tan(math.radians(self.view_angle_deg) / 2.0)

    @property
    def pixels_per_mm(self) -> float:
        """Scale of an orthographic camera: pixels per mm, ``(H/2) / parallel_scale``."""
        return 0.5 * self.height / self.parallel_scale

    def intrinsics(self) -> np.ndarray:
        """3x3 matrix K. Perspective: ``u = fx x/z + cx``. Orthographic: ``u = fx x + cx`` (fx in px/mm)."""
        f = self.pixels_per_mm if self.parallel_projection else self.focal_length_px
        return np.array([[f, 0.0, self.width / 2.0], [0.0, f, self.height / 2.0], [0.0, 0.0, 1.0]])

    @property
    def center(self) -> np.ndarray:
        """Camera centre (RAS mm), shape (3,)."""
        return np.array(self.position)

    @property
    def distance(self) -> float:
        """Distance from position to focal point (mm)."""
        return float(np.linalg.norm(np.array(self.focal_point) - np.array(self.position)))

    def project(self, points_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project RAS points ``(N, 3)`` to pixels ``(N, 2)`` as ``(u, v)`` plus camera depth ``z`` ``(N,)`` in mm.

        ``(0, 0)`` is the top-left corner of the image; pixel ``(c, r)`` covers ``[c, c+1) x [r, r+1)``.
        """
        p = np.asarray(points_ras, dtype=np.float64).reshape(-1, 3)
        cam = p @ self.world_to_camera()[:3, :3].T + self.world_to_camera()[:3, 3]
        k = self.intrinsics()
        z = cam[:, 2]
        if self.parallel_projection:
            xy = cam[:, :2]
        else:
            xy = cam[:, :2] / np.where(np.abs(z) < 1e-12, 1e-12, z)[:, None]
        uv = xy * np.array([k[0, 0], k[1, 1]]) + np.array([k[0, 2], k[1, 2]])
        return uv, z

    def pixel_rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Ray origins and unit directions through every pixel centre, each ``(H, W, 3)`` in RAS mm.

        Perspective rays start at the camera centre; orthographic rays start on the camera plane.
        """
        k = self.intrinsics()
        v, u = np.meshgrid(np.arange(self.height) + 0.5, np.arange(self.width) + 0.5, indexing="ij")
        x = (u - k[0, 2]) / k[0, 0]
        y = (v - k[1, 2]) / k[1, 1]
        rot = self.basis()  # rows: right, down, forward
        if self.parallel_projection:
            origins = self.center + x[..., None] * rot[0] + y[..., None] * rot[1]
            directions = np.broadcast_to(rot[2], origins.shape).copy()
        else:
            d = x[..., None] * rot[0] + y[..., None] * rot[1] + rot[2]
            directions = d / np.linalg.norm(d, axis=-1, keepdims=True)
            origins = np.broadcast_to(self.center, directions.shape).copy()
        return origins, directions

    def resized(self, width: int, height: int) -> "Camera":
        """The same camera with another image size (the vertical field of view is kept)."""
        return replace(self, width=width, height=height)

    # ---- VTK form -----------------------------------------------------------------------------------------
    def to_vtk(self, vtk_camera) -> None:
        """Write this camera into a ``vtkCamera`` (the renderer's aspect comes from the window size)."""
        vtk_camera.SetPosition(*self.position)
        vtk_camera.SetFocalPoint(*self.focal_point)
        vtk_camera.SetViewUp(*self.view_up)
        vtk_camera.OrthogonalizeViewUp()
        vtk_camera.SetViewAngle(self.view_angle_deg)
        vtk_camera.SetParallelProjection(bool(self.parallel_projection))
        vtk_camera.SetParallelScale(self.parallel_scale)

    @classmethod
    def from_vtk(cls, vtk_camera, width: int, height: int) -> "Camera":
        """Read a ``vtkCamera`` (e.g. a Slicer camera node's) for an image of ``width`` x ``height`` pixels."""
        return cls(position=tuple(vtk_camera.GetPosition()), focal_point=tuple(vtk_camera.GetFocalPoint()),
                   view_up=tuple(vtk_camera.GetViewUp()), view_angle_deg=float(vtk_camera.GetViewAngle()),
                   width=width, height=height, parallel_projection=bool(vtk_camera.GetParallelProjection()),
                   parallel_scale=float(vtk_camera.GetParallelScale()))

    def to_dict(self) -> dict:
        """JSON-ready dictionary of the VTK-form parameters."""
        return {"position": list(self.position), "focal_point": list(self.focal_point), "view_up": list(self.view_up),
                "view_angle_deg": self.view_angle_deg, "width": self.width, "height": self.height,
                "parallel_projection": self.parallel_projection, "parallel_scale": self.parallel_scale}

    @classmethod
    def from_dict(cls, data: dict) -> "Camera":
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


# ---- view generators ------------------------------------------------------------------------------------------
def fit_distance(radius_mm: float, view_angle_deg: float, width: int, height: int, margin: float = 1.05) -> float:
    """Camera distance at which a sphere of ``radius_mm`` fits the view (narrower of the two fields of view)."""
    half_v = math.radians(view_angle_deg) / 2.0
    half_h = math.atan(math.tan(half_v) * width / height)
    return margin * radius_mm / math.sin(min(half_v, half_h))


def orbit_cameras(center_ras, radius_mm: float, n_views: int, width: int = 256, height: int = 256,
                  elevation_deg: float = 0.0, view_angle_deg: float = 30.0, start_azimuth_deg: float = 0.0,
                  margin: float = 1.05) -> list[Camera]:
    """``n_views`` cameras orbiting the superior axis through ``center_ras``, all looking at it, superior up.

    View 0 (azimuth 0) is anterior: the camera is in front of the patient looking posterior, as Slicer's default
    3D view, so the patient's left is on the image's right. Azimuth increases towards the patient's left
    (view at 90 degrees looks from the left side). ``elevation_deg`` lifts the cameras towards superior.
    """
    if n_views < 1:
        raise CameraError(f"number of views must be at least 1, got {n_views}")
    center = np.asarray(center_ras, dtype=np.float64)
    distance = fit_distance(radius_mm, view_angle_deg, width, height, margin)
    cameras = []
    for index in range(n_views):
        azimuth = math.radians(start_azimuth_deg + 360.0 * index / n_views)
        elevation = math.radians(elevation_deg)
        offset = np.array([-math.sin(azimuth) * math.cos(elevation), math.cos(azimuth) * math.cos(elevation),
                           math.sin(elevation)])
        up = SUPERIOR - offset * float(SUPERIOR @ offset)
        up = up / np.linalg.norm(up) if np.linalg.norm(up) > 1e-6 else -np.array([0.0, 1.0, 0.0])
        cameras.append(Camera(position=tuple(center + distance * offset), focal_point=tuple(center),
                              view_up=tuple(up), view_angle_deg=view_angle_deg, width=width, height=height))
    return cameras


def sphere_cameras(center_ras, radius_mm: float, n_views: int, width: int = 256, height: int = 256,
                   seed: int = 0, view_angle_deg: float = 30.0, margin: float = 1.05,
                   distance_jitter: float = 0.0) -> list[Camera]:
    """``n_views`` cameras spread over the whole sphere around ``center_ras`` (Fibonacci lattice, random roll
    offset from ``seed``), looking at the centre with superior up where possible. ``distance_jitter`` scales each
    distance by a random factor in ``[1, 1 + distance_jitter]``."""
    if n_views < 1:
        raise CameraError(f"number of views must be at least 1, got {n_views}")
    rng = np.random.default_rng(seed)
    center = np.asarray(center_ras, dtype=np.float64)
    base = fit_distance(radius_mm, view_angle_deg, width, height, margin)
    phase = rng.uniform(0, 2 * math.pi)
    golden = math.pi * (3.0 - math.sqrt(5.0))
    cameras = []
    for index in range(n_views):
        z = 1.0 - 2.0 * (index + 0.5) / n_views
        r = math.sqrt(max(0.0, 1.0 - z * z))
        theta = phase + golden * index
        offset = np.array([r * math.cos(theta), r * math.sin(theta), z])
        up = SUPERIOR if abs(offset @ SUPERIOR) < 0.99 else ANTERIOR
        distance = base * (1.0 + distance_jitter * rng.uniform())
        cameras.append(Camera(position=tuple(center + distance * offset), focal_point=tuple(center),
                              view_up=tuple(up), view_angle_deg=view_angle_deg, width=width, height=height))
    return cameras


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"WxH"`` or ``"N"`` (square) into ``(width, height)``; raises :class:`CameraError`."""
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        raise CameraError(f"image size must look like 256x256 or 256, got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1 or max(parts) > 8192:
        raise CameraError(f"image size must be WxH with 1..8192 pixels per side, got {text!r}")
    return parts[0], parts[1]
