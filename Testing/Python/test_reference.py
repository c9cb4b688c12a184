"""Tests of the photoreal reference renderer (RenderFMLib.reference, .illumination, .tonemap, .reference_eval),
its command line (``renderfm reference``) and the benchmark command (``renderfm bench --reference``).

Volumes are small (the 6 mm torso phantom, 60x43x67 voxels, or 48^3 scenes made here) and images 48-64 pixels, so
the whole file runs in well under a minute on two CPU cores.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from RenderFMLib.camera import Camera, orbit_cameras
from RenderFMLib.errors import RenderFMError
from RenderFMLib.illumination import LightingRig, baked_radiance, compute_illumination
from RenderFMLib.metrics import psnr
from RenderFMLib.presets import get_preset
from RenderFMLib.reference import default_step_mm, render_reference
from RenderFMLib.reference_eval import compare_with_vtk, vtk_display_equivalent
from RenderFMLib.tonemap import tone_map
from RenderFMLib.transfer import TransferFunction
from RenderFMLib.volume import Volume, save_volume

torch.set_num_threads(2)

MODES = ("emission-absorption", "shaded", "cinematic")

#: A white, opaque-above-0-HU transfer function with some specularity (for the synthetic scenes).
WHITE = TransferFunction(np.array([[-1000.0, 0.9, 0.9, 0.9], [1000.0, 0.9, 0.9, 0.9]]),
                         np.array([[-1000.0, 0.0], [0.0, 0.0], [200.0, 1.0], [1000.0, 1.0]]),
                         ambient=0.1, diffuse=0.9, specular=0.5, specular_power=30.0, name="white")


def _scene(sphere: bool = True, n: int = 48, spacing: float = 2.0) -> Volume:
    """Air with a plate (z slab) and optionally a sphere floating above it; smooth one-voxel edges."""
    k, j, i = np.mgrid[:n, :n, :n].astype(np.float64)
    inside = np.clip(2.5 - np.abs(k - 8.0), 0.0, 1.0)  # plate 5 voxels thick around k = 8
    if sphere:
        inside = np.maximum(inside, np.clip(7.0 - np.sqrt((i - 24) ** 2 + (j - 24) ** 2 + (k - 30) ** 2), 0, 1))
    hu = (-1000.0 + 2000.0 * inside).astype(np.float32)
    origin = -spacing * (n - 1) / 2.0
    return Volume(hu, np.array([[spacing, 0, 0, origin], [0, spacing, 0, origin], [0, 0, spacing, origin],
                                [0, 0, 0, 1.0]]), name="scene")


def _camera(volume: Volume, direction, size: int = 64, target=None) -> Camera:
    target = volume.center_ras() if target is None else np.asarray(target, dtype=np.float64)
    direction = np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction)
    up = np.array([0.0, 1.0, 0.0]) if abs(direction[2]) > 0.9 else np.array([0.0, 0.0, 1.0])
    return Camera(position=tuple(target + 400.0 * direction), focal_point=tuple(target), view_up=tuple(up),
                  view_angle_deg=25.0, width=size, height=size)


def _pixel(camera: Camera, point) -> tuple[int, int]:
    uv, _ = camera.project(np.asarray(point, dtype=np.float64)[None])
    return int(uv[0, 1]), int(uv[0, 0])  # row, column


@pytest.fixture(scope="module")
def views(small_volume):
    return orbit_cameras(small_volume.center_ras(), small_volume.radius_mm(), 4, 64, 64, elevation_deg=20)


@pytest.fixture(scope="module")
def bone():
    return get_preset("CT-Bone")


# ---- basic contract ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_is_finite_bounded_and_deterministic(small_volume, views, bone, mode):
    rgb, alpha = render_reference(small_volume, bone, views[1], mode=mode)
    assert rgb.shape == (64, 64, 3) and alpha.shape == (64, 64, 1)
    assert rgb.dtype == np.float32 and alpha.dtype == np.float32
    assert np.isfinite(rgb).all() and np.isfinite(alpha).all()
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0 and alpha.min() >= 0.0 and alpha.max() <= 1.0
    assert 0.2 < float((alpha > 0.5).mean()) < 0.9  # the torso fills part of the frame
    again = render_reference(small_volume, bone, views[1], mode=mode)
    assert np.array_equal(rgb, again[0]) and np.array_equal(alpha, again[1])  # bit for bit


@pytest.mark.parametrize("mode", MODES)
def test_image_does_not_depend_on_chunking(small_volume, views, bone, mode):
    illumination = compute_illumination(small_volume, bone) if mode == "cinematic" else None
    big = render_reference(small_volume, bone, views[2], mode=mode, chunk_rays=65536, illumination=illumination)
    small = render_reference(small_volume, bone, views[2], mode=mode, chunk_rays=509, illumination=illumination)
    assert np.array_equal(big[0], small[0]) and np.array_equal(big[1], small[1])


def test_opacity_correction_makes_images_step_invariant(small_volume, views, bone):
    step = default_step_mm(small_volume)
    coarse = render_reference(small_volume, bone, views[0], mode="emission-absorption", step_mm=step)
    fine = render_reference(small_volume, bone, views[0], mode="emission-absorption", step_mm=step / 2)
    assert psnr(coarse[0], fine[0]) > 35.0  # same picture; without correction alpha would double
    assert abs(float(coarse[1].mean()) - float(fine[1].mean())) < 0.01


def test_axis_flips_of_the_voxel_grid_do_not_change_the_image(small_volume, views, bone):
    flipped = small_volume.array[::-1, :, ::-1].copy()
    m = small_volume.ijk_to_ras.copy()
    m[:3, 3] = small_volume.ijk_to_ras_points([small_volume.shape[2] - 1, 0, small_volume.shape[0] - 1])
    m[:3, 0] *= -1
    m[:3, 2] *= -1
    other = Volume(flipped, m, name="flipped")
    a = render_reference(small_volume, bone, views[1], mode="shaded")[0]
    b = render_reference(other, bone, views[1], mode="shaded")[0]
    assert psnr(a, b) > 45.0


def test_bad_arguments_raise_clear_errors(small_volume, views, bone):
    with pytest.raises(RenderFMError, match="render mode"):
        render_reference(small_volume, bone, views[0], mode="pretty")
    with pytest.raises(RenderFMError, match="step_mm"):
        render_reference(small_volume, bone, views[0], step_mm=0.0)
    with pytest.raises(RenderFMError, match="phase_g"):
        LightingRig(phase_g=1.5)
    with pytest.raises(RenderFMError, match="light direction"):
        LightingRig(key_direction=(0, 0, 0))


# ---- agreement with VTK ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["CT-Bone", "CT-Muscle"])
def test_emission_absorption_and_shaded_agree_with_vtk(small_volume, views, preset):
    # Measured on these 64x64 views: 41.8-50.9 dB display-matched (VTK stretches its ray image by n/(n-1) when
    # it draws it, see vtk_display_equivalent), 22-26 dB raw because of that stretch alone. 38 dB leaves margin
    # for other VTK builds' fixed-point rounding.
    rows = compare_with_vtk(small_volume, get_preset(preset), views[:2])
    assert {row["mode"] for row in rows} == {"emission-absorption", "shaded"}
    for row in rows:
        assert row["psnr_display_matched"] > 38.0, row
        assert row["psnr_display_matched"] > row["psnr"] + 5.0, row


def test_shaded_mode_follows_the_tf_shade_flag_like_vtk(small_volume, views, bone):
    flat = replace(bone, shade=False, color_points=bone.color_points.copy(), opacity_points=bone.opacity_points.copy())
    shaded = render_reference(small_volume, flat, views[0], mode="shaded")
    plain = render_reference(small_volume, flat, views[0], mode="emission-absorption")
    assert np.array_equal(shaded[0], plain[0]) and np.array_equal(shaded[1], plain[1])


def test_vtk_display_equivalent_stretches_about_the_projected_box(small_volume, views):
    ones = np.ones((64, 64, 1), dtype=np.float32)
    out = vtk_display_equivalent(ones, small_volume, views[0])
    assert out.shape == ones.shape and out.max() == pytest.approx(1.0)
    assert 0.2 < float(out.mean()) < 1.0  # zero outside the region VTK casts rays in


# ---- cinematic lighting ---------------------------------------------------------------------------------------
def test_sphere_casts_a_soft_shadow_on_the_plate():
    volume = _scene(sphere=True)
    light = np.array([0.5, 0.0, 1.0]) / np.linalg.norm([0.5, 0.0, 1.0])
    rig = LightingRig(key_direction=tuple(light), sky_intensity=0.2, scatter_strength=0.0)
    top = volume.ijk_to_ras_points([24.0, 24.0, 10.5])  # plate surface under the sphere centre
    sphere_centre = volume.ijk_to_ras_points([24.0, 24.0, 30.0])
    shadow = sphere_centre - light * (sphere_centre[2] - top[2]) / light[2]  # where the centre's shadow falls
    lit = shadow + np.array([0.0, 30.0, 0.0])  # same height, beside the shadow
    camera = _camera(volume, (0.0, 0.0, 1.0), target=volume.center_ras())
    rgb, alpha = render_reference(volume, WHITE, camera, lighting=rig)
    shaded_pixel, lit_pixel = _pixel(camera, shadow), _pixel(camera, lit)
    dark = float(rgb[shaded_pixel].mean())
    bright = float(rgb[lit_pixel].mean())
    assert alpha[shaded_pixel] > 0.99 and alpha[lit_pixel] > 0.99  # both on the plate
    assert dark < 0.5 * bright, (dark, bright)  # measured: about 0.2x
    illumination = compute_illumination(volume, WHITE, rig)
    assert float(illumination.key_transmittance.min()) < 0.01  # the sphere blocks the key light


def test_specular_highlight_depends_on_the_view():
    volume = _scene(sphere=False)
    light = np.array([0.0, -0.6, 0.8])
    mirror = np.array([0.0, 0.6, 0.8])  # the light reflected by the plate
    point = volume.ijk_to_ras_points([24.0, 24.0, 10.5])
    cameras = [_camera(volume, mirror, target=point), _camera(volume, (0.6, 0.0, 0.8), target=point)]
    colours = {}
    for specular in (0.6, 0.0):
        tf = replace(WHITE, specular=specular, color_points=WHITE.color_points.copy(),
                     opacity_points=WHITE.opacity_points.copy())
        rig = LightingRig(key_direction=tuple(light), phase_g=0.0, exposure=-1.5)  # keep clear of the shoulder
        illumination = compute_illumination(volume, tf, rig)
        colours[specular] = [render_reference(volume, tf, c, illumination=illumination)[0][_pixel(c, point)]
                             for c in cameras]
    highlight = colours[0.6][0].mean() - colours[0.6][1].mean()
    assert highlight > 0.06, colours  # same point, brighter in the highlight view (measured 0.81 vs 0.71)
    assert abs(colours[0.0][0].mean() - colours[0.0][1].mean()) < 0.2 * highlight  # the rest is view-independent


def test_baked_radiance_is_the_view_independent_part_of_the_cinematic_render():
    volume = _scene(sphere=False)
    tf = replace(WHITE, specular=0.0, color_points=WHITE.color_points.copy(),
                 opacity_points=WHITE.opacity_points.copy())
    rig = LightingRig(key_direction=(0.0, 0.3, 0.95), phase_g=0.0)
    illumination = compute_illumination(volume, tf, rig)
    baked = baked_radiance(volume, tf, illumination)
    assert baked.shape == volume.shape + (3,) and baked.dtype == np.float32 and np.isfinite(baked).all()
    point = volume.ijk_to_ras_points([24.0, 24.0, 10.5])
    camera = _camera(volume, (0.0, 0.0, 1.0), target=point)
    rgb, alpha = render_reference(volume, tf, camera, illumination=illumination)
    pixel = _pixel(camera, point)
    # the render composites the surface's radiance; compare with its outermost opaque voxel, tone-mapped alike
    expected = tone_map(torch.from_numpy(baked[9, 24, 24][None]), torch.ones(1, 1), rig.exposure)[0].numpy()
    assert np.allclose(rgb[pixel], expected, atol=0.08), (rgb[pixel], expected)


def test_illumination_is_reused_and_must_match_the_volume(small_volume, views, bone):
    illumination = compute_illumination(small_volume, bone)
    assert illumination.fields.shape == (8,) + small_volume.shape
    assert 0.0 <= float(illumination.sky.min()) and float(illumination.sky.max()) <= 1.0
    first = render_reference(small_volume, bone, views[0], illumination=illumination)
    assert np.array_equal(first[0], render_reference(small_volume, bone, views[0])[0])
    other = Volume(small_volume.array[:-1].copy(), small_volume.ijk_to_ras, name="cropped")
    with pytest.raises(RenderFMError, match="illumination"):
        render_reference(other, bone, views[0], illumination=illumination)
    with pytest.raises(RenderFMError, match="lighting rig"):
        render_reference(small_volume, bone, views[0], illumination=illumination, lighting=LightingRig(exposure=1))


def test_tone_map_keeps_alpha_and_order():
    rgb = torch.tensor([[0.0, 0.1, 0.5], [2.0, 4.0, 8.0], [0.3, 0.3, 0.3]])
    alpha = torch.tensor([[1.0], [1.0], [0.5]])
    out = tone_map(rgb, alpha)
    assert float(out.max()) <= 1.0 and float(out.min()) >= 0.0
    assert bool((out[0, 1:] > out[0, :-1]).all()) and bool((out[1, 1:] > out[1, :-1]).all())
    assert float(out[2, 0]) <= 0.5  # premultiplied output never exceeds alpha


@pytest.mark.gpu
def test_cuda_matches_cpu(small_volume, views, bone):
    for mode in MODES:
        cpu = render_reference(small_volume, bone, views[1], mode=mode)[0]
        gpu = render_reference(small_volume, bone, views[1], mode=mode, device="cuda")[0]
        assert psnr(cpu, gpu) > 40.0, mode


@pytest.mark.data
def test_real_ct_agrees_with_vtk(shared_data):
    from RenderFMLib.volume import load_volume, working_volume

    volume = working_volume(load_volume(shared_data / "ct" / "upper_abdomen_totalseg_small.nii.gz"), 4.0)
    cameras = orbit_cameras(volume.center_ras(), volume.radius_mm(), 4, 64, 64, elevation_deg=20)[:1]
    for row in compare_with_vtk(volume, get_preset("CT-Bone"), cameras):
        assert row["psnr_display_matched"] > 35.0, row


# ---- command line -----------------------------------------------------------------------------------------------
def test_cli_reference_writes_pngs_contact_sheet_and_json(tmp_path, small_volume, capsys):
    import imageio.v3 as iio

    from RenderFMLib.cli import main

    path = tmp_path / "torso.nii.gz"
    save_volume(small_volume, path)
    sheet = tmp_path / "sheet.png"
    code = main(["reference", str(path), "--preset", "CT-Bone", "CT-Muscle", "--views", "2", "--size", "40x32",
                 "--spacing", "6", "--mode", "emission-absorption", "--out", str(tmp_path / "out"),
                 "--contact-sheet", str(sheet), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    items = report["volumes"][0]["presets"]
    assert [item["preset"] for item in items] == ["CT-Bone", "CT-Muscle"]
    files = [f for item in items for f in item["files"]]
    assert len(files) == 4
    for f in files:
        assert iio.imread(f).shape == (32, 40, 3)
    assert iio.imread(sheet).shape[0] > 2 * 32


def test_cli_reference_reports_errors_without_traceback(tmp_path, capsys):
    from RenderFMLib.cli import main

    assert main(["reference", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path)]) == 1
    assert "missing.nii.gz" in capsys.readouterr().err


def test_cli_bench_reference_times_every_mode_against_vtk(tmp_path, capsys):
    from RenderFMLib.cli import main

    out = tmp_path / "bench.md"
    code = main(["bench", "--reference", "--size", "24", "--volume-size", "24", "--runs", "1", "--warmup", "0",
                 "--json", "--out", str(out)])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    cases = {row["case"] for row in report["rows"]}
    assert {"vtk-cpu", "reference emission-absorption", "reference shaded", "reference cinematic"} <= cases
    assert all(row["seconds"] > 0 for row in report["rows"])
    assert all(row["speedup"] > 0 for row in report["rows"] if row["baseline"])
    assert "| reference | vtk-cpu | 24² |" in out.read_text()

