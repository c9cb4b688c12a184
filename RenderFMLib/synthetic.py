"""Synthetic scenes of random CT-like 6D Gaussians, for benchmarks and tests (deterministic per seed)."""

from __future__ import annotations

import torch

from .camera import Camera, orbit_cameras
from .gaussians import Gaussians6D

#: Side of the scenes' cube (mm): about a torso.
SCENE_BOX_MM = 300.0


def make_scene(count: int, box_mm: float = SCENE_BOX_MM, std_mm: float = 1.5, seed: int = 0,
               opacity: tuple[float, float] = (0.05, 0.9), sh_degree: int = 3, device="cpu") -> Gaussians6D:
    """``count`` random CT-like Gaussians (spatial std ``std_mm`` x [0.7, 1.3] per axis, correlated 6D
    covariances, direction means near 0) in a cube of side ``box_mm`` centred on the origin: colours in [0, 1],
    opacities uniform in ``opacity``, SH of degree ``sh_degree`` with small view-dependent terms."""
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(count, 3, generator=gen) - 0.5) * box_mm
    low, high = opacity
    g = Gaussians6D.from_isotropic(means, torch.rand(count, 3, generator=gen),
                                   torch.rand(count, generator=gen) * (high - low) + low,
                                   std_mm * (0.7 + 0.6 * torch.rand(count, 3, generator=gen)), direction_std=2.0,
                                   sh_degree=sh_degree)
    g.chol_offdiag = torch.randn(count, 15, generator=gen) * 0.3
    g.sh[:, 1:] = torch.randn(count, g.sh.shape[1] - 1, 3, generator=gen) * 0.05
    g.dir_means = torch.randn(count, 3, generator=gen) * 0.3
    return g.to(device)


def scene_cameras(views: int, size: int, box_mm: float = SCENE_BOX_MM) -> list[Camera]:
    """``views`` square cameras of ``size`` pixels on an orbit (15 degrees elevation) that frames
    :func:`make_scene`'s cube (radius: half its diagonal)."""
    return orbit_cameras((0.0, 0.0, 0.0), 0.5 * 3 ** 0.5 * box_mm, views, size, size, elevation_deg=15.0)
