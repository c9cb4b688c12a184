"""Analytic initialisation: opacity model against the emission-absorption reference, pruning, colours, labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from RenderFMLib.analytic import (
    MAX_OPACITY,
    SCREEN_COMPENSATION,
    SIGMA_FACTOR,
    analytic_gaussians,
    classify_cells,
    dilogarithm,
    splat_opacity,
)
from RenderFMLib.camera import Camera, orbit_cameras
from RenderFMLib.errors import RenderFMError
from RenderFMLib.illumination import gradient_volume, hu_tensor
from RenderFMLib.presets import get_preset
from RenderFMLib.raster import render_gaussians
from RenderFMLib.raster.project import ALPHA_MIN
from RenderFMLib.reference import render_reference
from RenderFMLib.transfer import TransferFunction
from RenderFMLib.volume import Volume

pytestmark = pytest.mark.usefixtures("two_torch_threads")


def uniform_tf(opacity_per_mm: float, start_hu: float = -500.0) -> TransferFunction:
    """White material above ``start_hu`` + 250 HU (a ramp over 500 HU), nothing below."""
    return TransferFunction(np.array([[-1000.0, 1.0, 1.0, 1.0], [3000.0, 1.0, 1.0, 1.0]]),
                            np.array([[-1000.0, 0.0], [start_hu, 0.0], [start_hu + 500.0, opacity_per_mm],
                                      [3000.0, opacity_per_mm]]), name="uniform")


def slab(layers: int, spacing: float = 3.0) -> Volume:
    """A 32 x ``layers`` x 32 voxel slab of 100 HU (thin along A) in air, centred on the origin."""
    array = np.full((36, 36, 36), -1000.0, dtype=np.float32)  # [k, j, i]
    array[2:34, 18 - layers // 2:18 + (layers + 1) // 2, 2:34] = 100.0
    ijk_to_ras = np.diag([spacing, spacing, spacing, 1.0])
    ijk_to_ras[:3, 3] = -spacing * 17.5
    return Volume(array, ijk_to_ras, "slab")


def slab_camera(pixels_per_voxel: float, spacing: float = 3.0, size: int = 32, distance: float = 400.0) -> Camera:
    """Looking along +A at the slab, zoomed so that a voxel covers ``pixels_per_voxel`` pixels."""
    view = 2.0 * math.degrees(math.atan(spacing / pixels_per_voxel * size / (2.0 * distance)))
    return Camera(position=(0.4, -distance, 0.7), focal_point=(0.4, 0.0, 0.7), view_up=(0.0, 0.0, 1.0),
                  view_angle_deg=view, width=size, height=size)


def test_splat_opacity_solves_the_deposited_depth():
    depth = torch.tensor([0.0, 0.01, 0.05, 0.2, 0.5, 1.0, 1.5])
    for compensation in (SCREEN_COMPENSATION, 1.0):
        opacity = splat_opacity(depth, SIGMA_FACTOR, compensation).double().numpy()
        assert np.all(np.diff(opacity) > 0) and opacity.max() <= MAX_OPACITY + 1e-6
        assert opacity[0] == pytest.approx(ALPHA_MIN / compensation, rel=1e-3)  # depth 0: just below visible
        unclamped = opacity * compensation < MAX_OPACITY * compensation - 1e-6
        deposited = 2 * math.pi * SIGMA_FACTOR ** 2 * (dilogarithm(opacity * compensation)
                                                        - dilogarithm(ALPHA_MIN)) / compensation
        np.testing.assert_allclose(deposited[unclamped], depth.numpy()[unclamped], rtol=2e-3, atol=1e-5)
    # thin limit: opacity ~ depth / (2 pi sigma^2) + ALPHA_MIN / c
    small = splat_opacity(torch.tensor([1e-3]), 0.5, 1.0)
    assert float(small) == pytest.approx(1e-3 / (2 * math.pi * 0.25) + ALPHA_MIN, rel=2e-3)
    assert float(splat_opacity(torch.tensor([50.0]))) == pytest.approx(MAX_OPACITY)
    with pytest.raises(RenderFMError):
        splat_opacity(depth, SIGMA_FACTOR, 0.0)


def test_cell_classification_of_uniform_material_and_of_a_boundary():
    volume = slab(6)
    tf = uniform_tf(0.05)
    hu = hu_tensor(volume)
    alpha, colour = classify_cells(hu, gradient_volume(hu, volume.ijk_to_ras), tf, 3.0)
    inside = float(alpha[18, 18, 18])
    assert inside == pytest.approx(1.0 - 0.95 ** 3, rel=1e-4)  # per-voxel opacity over 3 mm, unit distance 1 mm
    assert float(alpha[18, 0, 18]) == 0.0  # air
    assert torch.allclose(colour[18, 18, 18], torch.ones(3))  # the TF colour (white)
    # face voxels: interpolated HU leaves part of the cell below the TF's threshold
    face = float(alpha[18, 15, 18])
    assert 0.3 * inside < face < inside
    plain, _ = classify_cells(hu, None, tf, 3.0, subsamples=1)
    assert float(plain[18, 15, 18]) == pytest.approx(inside, rel=1e-4)
    # radiance: a uniform interior keeps its own (a linear ramp averages to it); with a TF that starts just above
    # air, the air voxel in front of the slab (material from j = 15) is partly opaque, and its colour is neither
    # its own radiance nor its neighbour's but the TF colour (white) times the lighting there
    radiance = torch.zeros(hu.shape + (3,))
    radiance[..., 0] = torch.linspace(0.0, 1.0, hu.shape[1])[None, :, None]  # red grows along A (axis j)
    lighting = torch.full(hu.shape + (3,), 0.5)
    alpha, colour = classify_cells(hu, None, tf, 3.0, radiance, lighting)
    assert float(colour[18, 18, 18, 0]) == pytest.approx(float(radiance[18, 18, 18, 0]), abs=1e-5)
    alpha, colour = classify_cells(hu, None, uniform_tf(0.05, start_hu=-990.0), 3.0, radiance, lighting)
    assert float(alpha[18, 14, 18]) > 0.0
    assert torch.allclose(colour[18, 14, 18], torch.full((3,), 0.5), atol=1e-5)


@pytest.mark.parametrize("depth_per_voxel", [0.03, 0.1, 0.3, 1.0])
def test_slab_absorption_matches_the_emission_absorption_reference(depth_per_voxel):
    """Seen face-on at the calibration zoom (a pixel about 0.75 voxel: anti-aliasing compensation ~0.5), a slab of
    Gaussians absorbs what the reference renderer's ray marching absorbs. Tolerance 0.03 in alpha: the measured
    error is below 0.015 from faint (alpha 0.1) to opaque slabs; the rasterizer's 1/255 alpha cut-off and the
    lattice ripple of the Gaussians stay below it, a wrong opacity model (e.g. no Li2 term, or no
    compensation) misses by 0.04-0.1."""
    layers = 4
    volume = slab(layers)
    tf = uniform_tf(1.0 - math.exp(-depth_per_voxel / 3.0))
    gaussians = analytic_gaussians(volume, tf, colour="tf").gaussians
    camera = slab_camera(1.33)
    _, reference = render_reference(volume, tf, camera, mode="emission-absorption")
    splats = render_gaussians(gaussians, camera, backend="cpu-fast")
    centre = slice(8, 24)
    expected = float(reference[centre, centre].mean())
    assert 0.05 < expected < 0.999
    assert float(splats.alpha[centre, centre].mean()) == pytest.approx(expected, abs=0.03)
    # colour: white material, so the premultiplied colour is the alpha
    assert float(splats.rgb[centre, centre].mean()) == pytest.approx(expected, abs=0.03)


def test_counts_pruning_colours_and_labels(small_phantom):
    volume, labels = small_phantom.volume, small_phantom.labels
    tf = get_preset("CT-Bone")
    result = analytic_gaussians(volume, tf, labels=labels)
    counts = result.counts
    assert counts["kept"] == len(result.gaussians) == len(result.voxel_index) > 1000
    assert counts["kept"] + counts["transparent"] + counts["masked_out"] + counts["hidden"] == counts["voxels"]
    assert counts["transparent"] > 0 and counts["hidden"] > 0 and counts["masked_out"] == 0
    g = result.gaussians.validate()
    colours = g.sh[:, 0] * 0.28209479177387814 + 0.5
    assert bool(torch.isfinite(colours).all()) and float(colours.min()) >= 0.0
    # Gaussians sit on the voxel centres they came from and carry those voxels' labels
    flat = torch.as_tensor(labels.reshape(-1).astype(np.int16))
    assert torch.equal(g.labels, flat[result.voxel_index])
    k, rest = np.divmod(result.voxel_index.numpy(), volume.shape[1] * volume.shape[2])
    j, i = np.divmod(rest, volume.shape[2])
    centres = np.stack([i, j, k, np.ones_like(i)], axis=1) @ volume.ijk_to_ras.T
    np.testing.assert_allclose(g.means.numpy(), centres[:, :3], atol=1e-3)
    # a mask removes Gaussians outside it
    bone = np.isin(labels, [12, 13, 14, 28, 29, 30])
    masked = analytic_gaussians(volume, tf, mask=bone, illumination=result.illumination, labels=labels)
    assert 0 < masked.counts["kept"] < counts["kept"] and masked.counts["masked_out"] > 0
    assert bool(np.isin(masked.gaussians.labels.numpy(), [12, 13, 14, 28, 29, 30]).all())
    # hidden voxels are invisible: keeping them changes no view
    everything = analytic_gaussians(volume, tf, illumination=result.illumination, max_transmittance=0.0)
    assert everything.counts["hidden"] == 0 and len(everything.gaussians) == counts["kept"] + counts["hidden"]
    for camera in orbit_cameras(volume.center_ras(), volume.radius_mm(), 2, 64, 64, elevation_deg=30):
        pruned = render_gaussians(result.gaussians, camera, backend="cpu-fast")
        full = render_gaussians(everything.gaussians, camera, backend="cpu-fast")
        assert float((pruned.rgb - full.rgb).abs().mean()) < 2e-3
    with pytest.raises(RenderFMError, match="colour"):
        analytic_gaussians(volume, tf, colour="shaded")


def test_analytic_image_is_close_to_the_emission_absorption_reference(small_volume):
    """Whole phantom, TF colours, a pixel about a voxel: the Gaussians render like the reference's
    emission-absorption mode (measured 23.2 dB on this coarse 6 mm grid; the classic splatting rule, without
    anti-aliasing, gives 21.0 dB)."""
    from RenderFMLib.metrics import psnr

    tf = get_preset("CT-Bone")
    gaussians = analytic_gaussians(small_volume, tf, colour="tf").gaussians
    camera = orbit_cameras(small_volume.center_ras(), small_volume.radius_mm(), 3, 128, 128, elevation_deg=20)[1]
    reference, alpha = render_reference(small_volume, tf, camera, mode="emission-absorption")
    splats = render_gaussians(gaussians, camera, backend="cpu-fast")
    assert psnr(splats.rgb.clamp(0, 1).numpy(), reference) > 22.0
    assert abs(float(splats.alpha.mean()) - float(alpha.mean())) < 0.02
