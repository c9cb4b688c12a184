"""Analytic initialisation: one 6D Gaussian per visible voxel of the working grid, no learning.

For a working volume (HU ``[K, J, I]``, spacing ``h`` mm), a TF and an optional segmentation mask:

* **Opacity** (see :func:`classify_cells` and :func:`splat_opacity`). A voxel's cell has the optical depth
  ``tau = e h`` over its length ``h``, ``e`` the mean extinction ``-ln(1 - a) / unit_distance`` of the cell as the
  reference renderer samples it (TF opacity ``a`` of the trilinearly interpolated HU, times the gradient-opacity
  factor; averaged over 27 points, so a bone voxel next to soft tissue is only partly opaque, as in the
  reference, and a cell that reaches into a thin opaque HU band is not lost). Each voxel becomes an isotropic
  Gaussian of standard deviation ``s = sigma_factor * h`` whose opacity ``o`` makes one layer of such Gaussians
  (one per voxel of a ``h``-spaced grid) absorb, on average over the screen, exactly ``tau``: a pixel at
  screen offset ``x`` from a Gaussian is attenuated by ``1 - o g(x)``, so the layer's mean optical depth is
  ``(1 / h^2) * integral of -ln(1 - o g) = 2 pi sigma_factor^2 Li2(o)`` (``Li2`` the dilogarithm; ``o`` small:
  ``2 pi sigma_factor^2 o``, the thin limit). The rasterizer's rules (:mod:`RenderFMLib.raster.project`) change
  this in two ways, both included: anti-aliasing multiplies the opacity by a compensation ``c <= 1`` while
  spreading the footprint by ``1 / c``, and alpha below ``ALPHA_MIN`` is dropped, which cuts the footprint at the
  contour where ``o c g = ALPHA_MIN``. The deposited depth is then
  ``2 pi sigma_factor^2 (Li2(o c) - Li2(ALPHA_MIN)) / c``; it is matched to ``tau`` for a typical on-screen
  compensation :data:`SCREEN_COMPENSATION`. The direction factor ``exp(-lam / direction_std^2)`` of 6DGS slicing
  (``mu_d = 0``) is divided out.
* **Calibration** (docs/results/analytic_quality.md): ``sigma_factor = 0.4`` (about the trilinear kernel's
  ``1 / sqrt(6)``; smaller scores slightly better at 256^2 but shows the voxel lattice as a dot pattern on close-up
  views, larger blurs), ``compensation = 0.5`` (the anti-aliasing compensation of these Gaussians when a pixel is
  about 0.75 voxel, as for a whole torso on a 3 mm grid at 256^2; matching it keeps faint TFs such as CT-X-ray
  within a few percent of the reference's absorption, where ``c = 1`` loses a quarter of it). Slab tests in
  Testing/Python/test_analytic.py check the absorption against the emission-absorption reference.
* **Colour.** The reference renderer's view-independent radiance (:func:`RenderFMLib.illumination.baked_radiance`:
  TF colour lit by the world-fixed key light with shadows, sky light with ambient occlusion and multiple
  scattering), scene-linear, averaged over the voxel's cell where its material is (:func:`classify_cells`); the
  Gaussians' image is tone mapped like the reference's (:func:`RenderFMLib.tonemap.tone_map`). SH degree 0
  (view-independent). With ``colour="tf"`` the plain TF colour instead, which renders like the reference's
  ``emission-absorption`` mode (no tone mapping).
* **Pruning.** Voxels whose cell opacity is below ``min_alpha`` (transparent), outside the mask, or buried in
  material that lets less than ``max_transmittance`` through along every axis direction (see
  :func:`hidden_voxels`) get no Gaussian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from .conditioning import DEFAULT_LAMBDA
from .errors import RenderFMError
from .gaussians import Gaussians6D
from .illumination import MAX_OPACITY as MAX_UNIT_OPACITY  # per-unit-distance TF opacity cap, as the reference
from .illumination import (
    Illumination,
    TFTable,
    baked_radiance,
    compute_illumination,
    gradient_volume,
    hu_tensor,
)
from .raster.project import ALPHA_MIN
from .transfer import TransferFunction
from .volume import Volume

#: Largest opacity given to a single Gaussian.
MAX_OPACITY = 0.99
#: Spatial standard deviation of the Gaussians in voxels (see "Calibration" above).
SIGMA_FACTOR = 0.4
#: Typical anti-aliasing compensation ``c`` on screen (see :func:`splat_opacity` and "Calibration" above): a
#: Gaussian of ``sigma`` pixels has ``c = sigma^2 / (sigma^2 + EPS2D)``.
SCREEN_COMPENSATION = 0.5
#: Points per axis at which a voxel's cell is classified (see :func:`classify_cells`).
SUBSAMPLES = 3
#: A cell point takes the radiance interpolated from non-transparent voxels where they make up at least this
#: fraction of its interpolation weight, else the TF colour times the lighting (see :func:`classify_cells`).
KNOWN_WEIGHT = 0.5
#: Direction standard deviation (broad: nearly view-independent opacity).
DIRECTION_STD = 10.0


@dataclass
class AnalyticResult:
    """Gaussians of the analytic initialisation plus where they came from.

    ``voxel_index``: ``[N]`` int64 flat indices into the working grid ``[K, J, I]`` (the network reads its output
    there). ``counts``: voxels considered, transparent, masked out, hidden, kept.
    """

    gaussians: Gaussians6D
    voxel_index: torch.Tensor
    illumination: Illumination
    counts: dict


def classify_cells(hu: torch.Tensor, gradient: torch.Tensor | None, tf: TransferFunction, step_mm: float,
                   radiance: torch.Tensor | None = None, lighting: torch.Tensor | None = None,
                   subsamples: int = SUBSAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """Opacity ``[K, J, I]`` of each voxel's cell over ``step_mm`` mm and its colour ``[K, J, I, 3]``, as the
    reference renderer sees the cell.

    The reference classifies trilinearly interpolated HU, so a voxel's cell is not uniform: next to air or soft
    tissue only part of a bone voxel's cell is opaque, and a thin opaque HU band (CT-Lung's, say) may cross a cell
    whose centre is transparent. The cell's mean extinction ``e`` (1/mm) is taken at ``subsamples^3`` points
    (midpoint rule; 1 = the voxel centre only) of the interpolated HU, with the voxel's gradient-opacity factor
    (``gradient`` ``[3, K, J, I]``, unused without gradient opacity); the opacity is ``1 - exp(-e * step_mm)``.

    The colour is the extinction-weighted mean over the same points of: the per-voxel ``radiance``
    ``[K, J, I, 3]`` interpolated from the voxels the TF does not leave transparent (a transparent voxel's own
    radiance means nothing) where these make up at least :data:`KNOWN_WEIGHT` of the interpolation weight, else
    (e.g. a thin HU band between two transparent voxels) the TF colour of the interpolated HU times the
    interpolated ``lighting`` ``[K, J, I, 3]`` (the radiance of white material). Measured on the phantom, this
    beats the voxel-centre radiance by 1-3 dB on TFs whose colour changes where their opacity starts
    (CT-Soft-Tissue, CT-Lung) and matches it elsewhere. Without ``radiance`` it is the TF colour of the
    interpolated HU, as the emission-absorption reference colours its samples.
    """
    table = TFTable.build(tf, hu.device)
    opacity, colour = table.table[:, 3:4], table.table[:, :3]
    factor = tf.gradient_factor(torch.linalg.vector_norm(gradient, dim=0)) if tf.has_gradient_opacity else None
    offsets = (np.arange(subsamples) + 0.5) / subsamples - 0.5
    channels = [hu[None]]
    if radiance is not None:
        known = (table.lookup(hu, opacity)[..., 0] > 0).to(hu.dtype)
        channels += [known[None], (radiance * known[..., None]).permute(3, 0, 1, 2), lighting.permute(3, 0, 1, 2)]
    stack = torch.cat(channels)  # [C, K, J, I]: HU (, weight, weighted radiance, lighting)

    def shifted(x: torch.Tensor, dim: int, delta: float) -> torch.Tensor:
        """Linear interpolation of ``x`` at ``delta`` voxels (|delta| <= 1/2) along ``dim``, edges replicated."""
        if delta == 0:
            return x
        n = x.shape[dim]
        if delta > 0:
            neighbour = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim=dim)
        else:
            neighbour = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim=dim)
        return (1.0 - abs(delta)) * x + abs(delta) * neighbour

    def shade(point: torch.Tensor) -> torch.Tensor:
        """Colour ``[K, J, I, 3]`` at interpolated points ``[C, K, J, I]``."""
        rgb = table.lookup(point[0], colour)
        if radiance is None:
            return rgb
        weight = point[1][..., None]
        interpolated = point[2:5].permute(1, 2, 3, 0) / weight.clamp(min=1e-6)
        return torch.where(weight > KNOWN_WEIGHT, interpolated, rgb * point[5:8].permute(1, 2, 3, 0))

    depth = torch.zeros_like(hu)
    mixed = torch.zeros(hu.shape + (3,), dtype=hu.dtype, device=hu.device)
    for dk in offsets:
        along_k = shifted(stack, 1, dk)
        for dj in offsets:
            along_j = shifted(along_k, 2, dj)
            for di in offsets:
                point = shifted(along_j, 3, di)
                a = table.lookup(point[0], opacity)[..., 0]
                if factor is not None:
                    a = a * factor
                extinction = -torch.log1p(-a.clamp(0.0, MAX_UNIT_OPACITY))
                depth += extinction
                mixed += extinction[..., None] * shade(point)
    alpha = -torch.expm1(-depth * step_mm / (subsamples ** 3 * tf.unit_distance))
    cell_colour = torch.where((depth > 0)[..., None], mixed / depth.clamp(min=1e-12)[..., None], shade(stack))
    return alpha, cell_colour


def dilogarithm(x: np.ndarray) -> np.ndarray:
    """``Li2(x) = sum_k x^k / k^2`` for ``x`` in [0, 1] (scipy's ``spence(1 - x)``)."""
    from scipy.special import spence

    return spence(1.0 - np.asarray(x, dtype=np.float64))


def splat_opacity(depth: torch.Tensor, sigma_factor: float = SIGMA_FACTOR,
                  compensation: float = SCREEN_COMPENSATION) -> torch.Tensor:
    """Base opacity ``[N]`` of Gaussians of standard deviation ``sigma_factor`` voxels such that a layer of them, one
    per voxel, absorbs the optical depth ``depth`` ``[N]`` (per voxel length) when the rasterizer's anti-aliasing
    compensation is ``compensation`` (see the module docstring): solves
    ``2 pi sigma_factor^2 (Li2(o c) - Li2(ALPHA_MIN)) / c = depth`` for ``o``, clamped to ``MAX_OPACITY``.
    A depth of 0 gives ``o = ALPHA_MIN / c``, the opacity at which a Gaussian starts to show.
    """
    if not 0.0 < compensation <= 1.0 or sigma_factor <= 0.0:
        raise RenderFMError(f"need 0 < compensation <= 1 and sigma_factor > 0, got {compensation}, {sigma_factor}")
    peaks = np.linspace(ALPHA_MIN, MAX_OPACITY * compensation, 4096)  # o c
    table = dilogarithm(peaks)
    target = depth.double().cpu().numpy() * compensation / (2.0 * math.pi * sigma_factor ** 2) + table[0]
    opacity = np.interp(target, table, peaks) / compensation
    return torch.as_tensor(opacity, dtype=depth.dtype, device=depth.device).clamp(max=MAX_OPACITY)


def hidden_voxels(alpha: torch.Tensor, max_transmittance: float = 1e-3) -> torch.Tensor:
    """Boolean ``[K, J, I]``: voxels that receive less than ``max_transmittance`` of the light from every one of
    the six axis directions (the product of ``1 - alpha`` of the voxels between them and the volume's border).

    Such voxels are buried in material that no view sees through; oblique rays through a convex body cross at
    least as much material as the shortest axis path, so the test is conservative for them too. A
    ``max_transmittance`` of 0 hides nothing.
    """
    if max_transmittance <= 0.0:
        return torch.zeros_like(alpha, dtype=torch.bool)
    depth = -torch.log1p(-alpha.clamp(max=1.0 - 1e-6))  # optical depth of each voxel
    threshold = -float(np.log(max_transmittance))
    hidden = torch.ones_like(alpha, dtype=torch.bool)
    for dim in range(3):
        before = torch.cumsum(depth, dim=dim) - depth  # optical depth between the voxel and the low border
        after = torch.flip(torch.cumsum(torch.flip(depth, (dim,)), dim=dim), (dim,)) - depth
        hidden &= (before > threshold) & (after > threshold)
    return hidden


def white(tf: TransferFunction) -> TransferFunction:
    """``tf`` with every colour white (same opacity, shading and name)."""
    low, high = float(tf.color_points[0, 0]), float(tf.color_points[-1, 0])
    return replace(tf, color_points=np.array([[low, 1.0, 1.0, 1.0], [max(high, low + 1.0), 1.0, 1.0, 1.0]]))


def analytic_gaussians(volume: Volume, tf: TransferFunction, mask=None, illumination: Illumination | None = None,
                       device="cpu", min_alpha: float = 1.0 / 255.0, max_transmittance: float = 1e-3,
                       sigma_factor: float = SIGMA_FACTOR, compensation: float = SCREEN_COMPENSATION,
                       labels=None, colour: str = "baked", subsamples: int = SUBSAMPLES) -> AnalyticResult:
    """Gaussians for ``volume`` (the working grid: see :func:`RenderFMLib.volume.working_volume`) and ``tf``.

    ``mask``: optional ``[K, J, I]`` array, non-zero = shown. ``labels``: optional ``[K, J, I]`` integer label map
    stored per Gaussian. ``illumination`` is computed (default lighting) when not given and needed.
    ``colour``: ``"baked"`` (lit radiance, for the cinematic reference) or ``"tf"`` (plain TF colour, for the
    emission-absorption reference). ``sigma_factor``, ``compensation``: see :func:`splat_opacity`;
    ``subsamples``: see :func:`classify_cells`.
    """
    if colour not in ("baked", "tf"):
        raise RenderFMError(f"colour must be 'baked' or 'tf', got {colour!r}")
    device = torch.device(device)
    if illumination is None and colour == "baked":
        illumination = compute_illumination(volume, tf, device=device)
    spacing = float(np.mean(volume.spacing))
    with torch.no_grad():
        hu = hu_tensor(volume, device)
        # the gradient the matching reference mode uses: smoothed (cinematic), plain (emission-absorption)
        gradient = illumination.gradient if colour == "baked" else gradient_volume(hu, volume.ijk_to_ras)
        radiance = lighting = None
        if colour == "baked":
            radiance = torch.from_numpy(baked_radiance(volume, tf, illumination)).to(device)
            # the radiance of white material with this TF's opacity: the lighting of thin HU bands
            lighting = torch.from_numpy(baked_radiance(volume, white(tf), illumination)).to(device)
        alpha, cell_colour = classify_cells(hu, gradient, tf, spacing, radiance, lighting, subsamples)
        del radiance, lighting
        visible = alpha >= min_alpha
        shown = torch.ones_like(visible) if mask is None else torch.as_tensor(np.asarray(mask) > 0, device=device)
        hidden = hidden_voxels(alpha, max_transmittance)
        keep = visible & shown & ~hidden
        index = torch.nonzero(keep.reshape(-1)).squeeze(1)
        counts = {"voxels": int(keep.numel()), "transparent": int((~visible).sum()),
                  "masked_out": int((visible & ~shown).sum()), "hidden": int((visible & shown & hidden).sum()),
                  "kept": int(index.numel())}
        k, j, i = torch.unravel_index(index, volume.shape)
        ijk = torch.stack([i, j, k], dim=1).cpu().numpy()
        means = torch.as_tensor(volume.ijk_to_ras_points(ijk), dtype=torch.float32, device=device)
        radiance = cell_colour.reshape(-1, 3)[index]
        depth = -torch.log1p(-alpha.reshape(-1)[index].clamp(max=1.0 - 1e-6))
        direction_factor = math.exp(-DEFAULT_LAMBDA / DIRECTION_STD ** 2)
        opacity = (splat_opacity(depth, sigma_factor, compensation) / direction_factor).clamp(1e-4, MAX_OPACITY)
        label_values = None
        if labels is not None:
            label_values = torch.as_tensor(np.asarray(labels).reshape(-1), device=device)[index]
        gaussians = Gaussians6D.from_isotropic(means, radiance, opacity, sigma_factor * spacing, DIRECTION_STD,
                                               labels=label_values)
    return AnalyticResult(gaussians, index, illumination, counts)
