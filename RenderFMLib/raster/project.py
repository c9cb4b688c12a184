"""EWA projection of 3D Gaussians and the splatting rules every backend follows (the 3DGS / gsplat semantics).

Rules (shared by the ``torch``, ``cpu-fast`` and ``gsplat`` backends, so their images agree):

* The camera comes from :meth:`Camera.world_to_camera` and :meth:`Camera.intrinsics` only: perspective
  ``u = fx x / z + cx`` or orthographic ``u = fx x + cx``; pixel ``(c, r)`` has its centre at ``(c + 0.5, r + 0.5)``.
* 2D covariance ``Sigma2D = J W Sigma W^T J^T + EPS2D * I`` (``J`` the projection's Jacobian at the mean, with the
  3DGS/gsplat clamp of ``x/z`` to 1.3x the field of view; for orthographic ``J = diag(fx, fy)``). The ``EPS2D``
  dilation (a pixel-sized low-pass filter) keeps sub-pixel Gaussians from aliasing.
* Anti-aliasing (:data:`ANTIALIASED`, the default; gsplat's ``rasterize_mode="antialiased"``, Mip-Splatting's 2D
  filter): the opacity is multiplied by ``sqrt(det(Sigma2D - EPS2D I) / det(Sigma2D))``, so the dilation spreads a
  Gaussian's footprint without adding to its integral. Without it (``antialiased=False``, 3DGS's "classic" rule) a
  Gaussian smaller than a pixel covers up to several times the area its opacity was made for: voxel-sized
  Gaussians seen from a distance turn too opaque. Every step below uses the compensated opacity, so a faint
  Gaussian much smaller than a pixel can drop below ``ALPHA_MIN`` and vanish (as in gsplat): zoomed far out,
  faint material fades (see :mod:`RenderFMLib.analytic`).
* Gaussians with camera depth ``z < NEAR_PLANE`` mm, a degenerate 2D covariance or opacity ``< ALPHA_MIN`` are
  culled, as are those whose screen extent misses the image.
* Per pixel, ``alpha = min(ALPHA_MAX, opacity * exp(-1/2 delta^T Sigma2D^-1 delta))``; contributions with
  ``alpha < ALPHA_MIN`` are skipped. The screen extent is therefore ``sqrt(2 ln(255 opacity))`` standard deviations
  (at most 3.33): outside it alpha is below ``ALPHA_MIN`` anyway, so the extent changes nothing but speed.
* Front to back by camera depth ``z`` of the mean; a pixel stops at the first Gaussian that would bring its
  transmittance below ``T_MIN`` (that Gaussian is not blended).
* Output: premultiplied linear RGB ``sum_i w_i c_i``, ``alpha = sum_i w_i`` with ``w_i = alpha_i T_i``; optional depth
  ``sum_i w_i z_i / alpha`` (mm; 0 where nothing was drawn).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..camera import Camera

TILE_SIZE = 16
EPS2D = 0.3
NEAR_PLANE = 0.01
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4
#: Default splatting rule: opacity compensation for the ``EPS2D`` dilation (see the rules above).
ANTIALIASED = True
#: The Jacobian clamps ``x/z`` to the field of view plus this fraction of it (3DGS uses 1.3 x; gsplat the same).
FOV_MARGIN = 0.3


@dataclass
class RasterOutput:
    """A rendered view as torch tensors: ``rgb`` ``[H, W, 3]`` premultiplied linear RGB (composited over the
    background when one was given), ``alpha`` ``[H, W, 1]``, ``depth`` ``[H, W, 1]`` mm or ``None``."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor | None = None


@dataclass(frozen=True)
class CameraParams:
    """The OpenCV form of a :class:`Camera`: ``viewmat`` 4x4 world-to-camera, ``K`` 3x3, image size, model."""

    viewmat: np.ndarray
    K: np.ndarray
    width: int
    height: int
    ortho: bool

    @classmethod
    def from_camera(cls, camera: Camera) -> "CameraParams":
        return cls(camera.world_to_camera(), camera.intrinsics(), camera.width, camera.height,
                   bool(camera.parallel_projection))

    @property
    def tiles(self) -> tuple[int, int]:
        """Number of tiles ``(across, down)``."""
        return math.ceil(self.width / TILE_SIZE), math.ceil(self.height / TILE_SIZE)

    def jacobian_limits(self) -> tuple[float, float, float, float]:
        """Clamp limits of ``x/z`` and ``y/z``: ``(x_neg, x_pos, y_neg, y_pos)`` (perspective only)."""
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        tan_x, tan_y = 0.5 * self.width / fx, 0.5 * self.height / fy
        return (cx / fx + FOV_MARGIN * tan_x, (self.width - cx) / fx + FOV_MARGIN * tan_x,
                cy / fy + FOV_MARGIN * tan_y, (self.height - cy) / fy + FOV_MARGIN * tan_y)


@dataclass
class Projected:
    """Per-Gaussian screen-space quantities (``N`` = all input Gaussians; culled ones have ``visible`` false).

    ``means2d`` ``[N, 2]`` pixels; ``conics`` ``[N, 3]`` = ``(a, b, c)`` of the inverse 2D covariance
    ``[[a, b], [b, c]]``; ``depths`` ``[N]`` camera z (mm); ``opacities`` ``[N]`` the opacities splatted (after
    anti-aliasing compensation); ``radii`` ``[N, 2]`` int32 half extents in pixels (x, y); ``visible`` ``[N]`` bool.
    ``means2d``, ``conics``, ``depths`` and ``opacities`` are differentiable.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    opacities: torch.Tensor
    radii: torch.Tensor
    visible: torch.Tensor


def project_gaussians(means: torch.Tensor, covs: torch.Tensor, opacities: torch.Tensor, camera: CameraParams,
                      antialiased: bool = ANTIALIASED) -> Projected:
    """EWA-project ``means`` ``[N, 3]`` / ``covs`` ``[N, 3, 3]`` (RAS mm) with ``opacities`` ``[N]`` for ``camera``
    (``antialiased``: compensate the opacities for the ``EPS2D`` dilation, see the module rules)."""
    dtype, device = means.dtype, means.device
    rotation = torch.as_tensor(camera.viewmat[:3, :3], dtype=dtype, device=device)
    translation = torch.as_tensor(camera.viewmat[:3, 3], dtype=dtype, device=device)
    fx, fy, cx, cy = (float(v) for v in (camera.K[0, 0], camera.K[1, 1], camera.K[0, 2], camera.K[1, 2]))
    p = means @ rotation.T + translation
    x, y, z = p.unbind(-1)
    zeros = torch.zeros_like(z)
    if camera.ortho:
        u, v = fx * x + cx, fy * y + cy
        row0 = torch.stack([torch.full_like(z, fx), zeros, zeros], -1)
        row1 = torch.stack([zeros, torch.full_like(z, fy), zeros], -1)
    else:
        zc = z.clamp_min(NEAR_PLANE)
        u, v = fx * x / zc + cx, fy * y / zc + cy
        x_neg, x_pos, y_neg, y_pos = camera.jacobian_limits()
        tx = zc * (x / zc).clamp(-x_neg, x_pos)
        ty = zc * (y / zc).clamp(-y_neg, y_pos)
        row0 = torch.stack([fx / zc, zeros, -fx * tx / (zc * zc)], -1)
        row1 = torch.stack([zeros, fy / zc, -fy * ty / (zc * zc)], -1)
    jw = torch.stack([row0, row1], dim=-2) @ rotation  # [N, 2, 3]: J W
    cov2d = jw @ covs @ jw.transpose(-1, -2)  # [N, 2, 2]
    a = cov2d[:, 0, 0] + EPS2D
    b = 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0])
    c = cov2d[:, 1, 1] + EPS2D
    det = a * c - b * b
    if antialiased:
        det_plain = cov2d[:, 0, 0] * cov2d[:, 1, 1] - b * b
        ratio = det_plain / torch.where(det > 0, det, torch.ones_like(det))
        opacities = opacities * torch.sqrt(ratio.clamp_min(1e-12)) * (ratio > 0)
    ok = (z >= NEAR_PLANE) & (det > 0) & (opacities >= ALPHA_MIN) & torch.isfinite(det)
    safe_det = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c / safe_det, -b / safe_det, a / safe_det], dim=-1)
    with torch.no_grad():
        extent = torch.sqrt(2.0 * torch.log((255.0 * opacities).clamp_min(1.0)))
        rx = torch.ceil(extent * torch.sqrt(a.clamp_min(0.0)))
        ry = torch.ceil(extent * torch.sqrt(c.clamp_min(0.0)))
        visible = ok & (u + rx > 0) & (u - rx < camera.width) & (v + ry > 0) & (v - ry < camera.height)
        visible &= (rx > 0) & (ry > 0)
        radii = torch.where(visible.unsqueeze(-1), torch.stack([rx, ry], -1), 0.0).to(torch.int32)
    return Projected(torch.stack([u, v], dim=-1), conics, z, opacities, radii, visible)


def pixel_bounds(means2d: np.ndarray | torch.Tensor, radii, width: int, height: int):
    """Inclusive pixel ranges ``(x0, x1, y0, y1)`` whose centres lie within each Gaussian's extent, clipped to the
    image (numpy or torch, like the inputs). Empty when ``x0 > x1`` or ``y0 > y1``."""
    lib = torch if isinstance(means2d, torch.Tensor) else np
    u, v = means2d[..., 0], means2d[..., 1]
    rx, ry = radii[..., 0], radii[..., 1]
    x0 = lib.clip(lib.ceil(u - rx - 0.5), 0, width - 1)
    x1 = lib.clip(lib.floor(u + rx - 0.5), 0, width - 1)
    y0 = lib.clip(lib.ceil(v - ry - 0.5), 0, height - 1)
    y1 = lib.clip(lib.floor(v + ry - 0.5), 0, height - 1)
    return x0, x1, y0, y1


def finish(rgb: torch.Tensor, alpha: torch.Tensor, depth: torch.Tensor | None, background) -> RasterOutput:
    """Composite over ``background`` (3 linear RGB values or ``None``) and normalise the depth."""
    if background is not None:
        bg = torch.as_tensor(background, dtype=rgb.dtype, device=rgb.device).reshape(3)
        rgb = rgb + (1.0 - alpha) * bg
    if depth is not None:
        depth = torch.where(alpha > 0, depth / alpha.clamp_min(1e-12), torch.zeros_like(depth))
    return RasterOutput(rgb, alpha, depth)
