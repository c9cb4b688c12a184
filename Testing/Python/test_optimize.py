"""Per-scan optimisation: the loss falls, held-out PSNR rises, budgets, cancel, random start, errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from RenderFMLib.camera import orbit_cameras, sphere_cameras
from RenderFMLib.optimize import evaluate_views, image_loss, optimize_gaussians, random_gaussians
from RenderFMLib.pipeline import prepare_scene, render_scene_reference
from RenderFMLib.presets import get_preset

pytestmark = pytest.mark.usefixtures("two_torch_threads")


@pytest.fixture(scope="module")
def tiny():
    """A tiny scene (the phantom on a 16 mm grid, about 2800 Gaussians), 6 training views and 2 held-out views of
    40 x 40 pixels with their cinematic reference images."""
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    from RenderFMLib.phantom import make_phantom

    scene = prepare_scene(make_phantom(seed=0, spacing_mm=6.0).volume, get_preset("CT-Bone"), spacing_mm=16.0,
                          device="cpu")
    center, radius = scene.working.center_ras(), scene.working.radius_mm()
    train = sphere_cameras(center, radius, 6, 40, 40, seed=1)
    held = orbit_cameras(center, radius, 2, 40, 40, elevation_deg=20, start_azimuth_deg=90)
    targets = [render_scene_reference(scene, camera)[0] for camera in train]
    held_out = [(camera, render_scene_reference(scene, camera)[0]) for camera in held]
    return scene, train, targets, held_out


def test_image_loss_is_zero_for_identical_images_and_differentiable():
    target = torch.rand(24, 24, 3)
    assert float(image_loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    guess = torch.zeros(24, 24, 3, requires_grad=True)
    loss = image_loss(guess, target)
    loss.backward()
    assert float(loss.detach()) > 0.1 and float(guess.grad.abs().sum()) > 0


def test_optimisation_from_the_analytic_start_improves_held_out_psnr(tiny):
    scene, train, targets, held_out = tiny
    before = evaluate_views(scene, None, held_out)["psnr"]
    fractions = []
    gaussians, log = optimize_gaussians(scene, train, targets, iterations=15, sh_degree=1, held_out=held_out,
                                        eval_every_s=1e9, progress=lambda fraction, loss: fractions.append(fraction))
    assert log.iterations == 15 and len(log.losses) == 15 and fractions[-1] == 1.0
    assert np.mean(log.losses[-4:]) < np.mean(log.losses[:4])
    assert log.curve[0][1] == pytest.approx(before, abs=1e-6) and len(log.curve) == 2  # start and end
    after = evaluate_views(scene, gaussians, held_out)["psnr"]
    assert after == pytest.approx(log.curve[-1][1], abs=1e-6)
    assert after > before + 0.5  # measured +1.5 dB
    assert gaussians.sh_degree == 1 and len(gaussians) == scene.num_gaussians
    assert not any(t.requires_grad for t in gaussians.parameters().values())
    assert scene.gaussians.sh_degree == 0  # the scene's Gaussians are untouched


def test_random_start_improves(tiny):
    scene, train, targets, held_out = tiny
    start = random_gaussians(scene.working, scene.num_gaussians, seed=3)
    lo = scene.working.ijk_to_ras[:3, 3]
    hi = (scene.working.ijk_to_ras @ np.r_[np.array(scene.working.shape[::-1]) - 1.0, 1.0])[:3]
    assert bool(((start.means.numpy() >= np.minimum(lo, hi) - 1e-3) &
                 (start.means.numpy() <= np.maximum(lo, hi) + 1e-3)).all())
    random_scene = replace(scene, gaussians=start)
    before = evaluate_views(random_scene, None, held_out)["psnr"]
    gaussians, log = optimize_gaussians(random_scene, train, targets, iterations=15)
    assert evaluate_views(random_scene, gaussians, held_out)["psnr"] > before + 0.5  # measured +1.3 dB


def test_budgets_cancel_and_errors(tiny):
    scene, train, targets, _ = tiny
    gaussians, log = optimize_gaussians(scene, train, targets, iterations=None, seconds=1e-9)
    assert log.iterations == 0
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3

    gaussians, log = optimize_gaussians(scene, train, targets, iterations=1000, cancel=cancel)
    assert log.iterations == 3
    assert gaussians.means.shape == scene.gaussians.means.shape
    with pytest.raises(ValueError, match="same, non-zero number"):
        optimize_gaussians(scene, train, targets[:2])
    with pytest.raises(ValueError, match="iterations or seconds"):
        optimize_gaussians(scene, train, targets, iterations=None, seconds=None)


def test_finetune_scene_reports_and_counts_only_preparation_time(tiny):
    from RenderFMLib.finetune import finetune_scene, optimize_scene

    scene = tiny[0]
    tuned, log, reference_seconds = optimize_scene(scene, "per_scan", iterations=3, views=2, size=24, sh_degree=1)
    assert tuned.method == "per_scan" and log.iterations == 3 and not log.curve and tuned.gaussians.sh_degree == 1
    assert tuned.prep_seconds == pytest.approx(scene.prep_seconds + reference_seconds + log.seconds)
    tuned, report = finetune_scene(scene, seconds=None, iterations=3, views=2, size=24, held_out=1, sh_degree=1)
    assert tuned.method == "analytic+finetune" and report.iterations == 3 and len(report.curve) == 2
    assert report.psnr_before == pytest.approx(report.curve[0][1], abs=1e-3)  # the curve is rounded
    assert report.psnr_after == pytest.approx(report.curve[-1][1], abs=1e-3)
    # held-out evaluation is not preparation time
    assert tuned.prep_seconds <= scene.prep_seconds + report.reference_seconds + report.seconds + 1e-6
    with pytest.raises(InterruptedError):
        finetune_scene(scene, iterations=3, views=2, size=24, held_out=1, cancel=lambda: True)


def test_evaluate_volume_runs_the_gaussian_methods():
    from RenderFMLib.evaluate import EvalSettings, evaluate_volume
    from RenderFMLib.phantom import make_phantom

    settings = EvalSettings(views=2, size=24, train_views=2, per_scan_s=0.3, spacing_mm=16.0, device="cpu",
                            methods=("analytic", "per_scan"))
    result, images = evaluate_volume(make_phantom(seed=0, spacing_mm=6.0).volume, get_preset("CT-Bone"), settings)
    assert set(result["methods"]) == {"analytic", "per_scan"} and set(images) == {"reference", "analytic", "per_scan"}
    per_scan = result["methods"]["per_scan"]
    assert per_scan["iterations"] >= 1 and per_scan["prep_s"] > result["methods"]["analytic"]["prep_s"]
    assert all(len(images[name]) == 2 and images[name][0].shape == (24, 24, 3) for name in images)
    assert np.isfinite(per_scan["psnr"]) and per_scan["fps"] > 0


def test_evaluation_puts_every_method_on_one_grid():
    from RenderFMLib.evaluate import EvalSettings, shared_spacing_mm
    from RenderFMLib.model.weights import read_header
    from RenderFMLib.resources import default_weights_path

    network_spacing = read_header(default_weights_path()).working_spacing_mm
    assert shared_spacing_mm(EvalSettings(methods=("analytic", "feedforward"))) == network_spacing
    assert shared_spacing_mm(EvalSettings(methods=("vtk", "finetune"))) == network_spacing
    assert shared_spacing_mm(EvalSettings(methods=("analytic", "per_scan"))) is None  # the device's default
    assert shared_spacing_mm(EvalSettings(spacing_mm=2.5, methods=("analytic", "feedforward"))) == 2.5
