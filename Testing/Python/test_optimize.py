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


@pytest.fixture(autouse=True)
def _threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, 2))
    yield
    torch.set_num_threads(previous)


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
