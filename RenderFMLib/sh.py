"""Real spherical harmonics of degree 0-3 for view-dependent colour, in the 3D Gaussian Splatting convention.

A Gaussian's colour seen along the unit direction ``d`` (from the camera centre towards the Gaussian) is
``max(0, 0.5 + sum_k sh[k] * Y_k(d))`` per RGB channel, with the basis ordering and signs of the 3DGS
reference code (so SH coefficients exchange unchanged with 3DGS/6DGS PLY files). In RenderFM the resulting
colours are linear RGB. Coefficient tensors have shape ``[..., K, 3]`` with ``K = (degree + 1) ** 2``.
"""

from __future__ import annotations

import math

import torch

#: Band 0 constant ``1 / (2 sqrt(pi))``.
C0 = 0.28209479177387814
#: Band 1 constant ``sqrt(3 / (4 pi))``.
C1 = 0.4886025119029199
#: Band 2 constants.
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
#: Band 3 constants.
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
      1.445305721320277, -0.5900435899266435)

MAX_DEGREE = 3


def num_coefficients(degree: int) -> int:
    """Number of SH coefficients per channel for ``degree`` (1, 4, 9 or 16)."""
    if degree not in range(MAX_DEGREE + 1):
        raise ValueError(f"SH degree must be 0..{MAX_DEGREE}, got {degree}")
    return (degree + 1) ** 2


def degree_from_coefficients(count: int) -> int:
    """Inverse of :func:`num_coefficients`; raises ``ValueError`` for counts that are not 1, 4, 9 or 16."""
    degree = int(round(math.sqrt(count))) - 1
    if degree not in range(MAX_DEGREE + 1) or (degree + 1) ** 2 != count:
        raise ValueError(f"{count} SH coefficients per channel is not (degree+1)^2 for a degree in 0..{MAX_DEGREE}")
    return degree


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """The real SH basis ``[..., K]`` evaluated at unit directions ``dirs`` ``[..., 3]`` (3DGS signs)."""
    count = num_coefficients(degree)
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    terms = [torch.full_like(x, C0)]
    if degree >= 1:
        terms += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        terms += [C2[0] * x * y, C2[1] * y * z, C2[2] * (2.0 * zz - xx - yy), C2[3] * x * z, C2[4] * (xx - yy)]
    if degree >= 3:
        terms += [C3[0] * y * (3.0 * xx - yy), C3[1] * x * y * z, C3[2] * y * (4.0 * zz - xx - yy),
                  C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy), C3[4] * x * (4.0 * zz - xx - yy),
                  C3[5] * z * (xx - yy), C3[6] * x * (xx - 3.0 * yy)]
    basis = torch.stack(terms, dim=-1)
    assert basis.shape[-1] == count
    return basis


def eval_sh(sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Raw SH sum ``[..., 3]`` (no offset, no clamp) of coefficients ``sh`` ``[..., K, 3]`` at ``dirs`` ``[..., 3]``.

    ``sh`` and ``dirs`` broadcast over their leading dimensions; the degree is taken from ``K``.
    """
    basis = sh_basis(dirs, degree_from_coefficients(sh.shape[-2]))
    return (basis.unsqueeze(-1) * sh).sum(dim=-2)


def sh_to_color(sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Colour ``max(0, 0.5 + eval_sh(sh, dirs))`` ``[..., 3]`` (linear RGB in RenderFM)."""
    return torch.clamp_min(eval_sh(sh, dirs) + 0.5, 0.0)


def rgb_to_sh_dc(rgb: torch.Tensor) -> torch.Tensor:
    """The degree-0 coefficient ``[..., 3]`` that gives the view-independent colour ``rgb`` ``[..., 3]``."""
    return (rgb - 0.5) / C0


def sh_dc_to_rgb(dc: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_sh_dc` (no clamping)."""
    return dc * C0 + 0.5
