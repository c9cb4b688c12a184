"""The cpu-fast backward pass (RenderFMLib.raster.cpu_fast_grad) against the torch reference's autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from RenderFMLib.camera import Camera, orbit_cameras
from RenderFMLib.conditioning import Gaussians3D, condition
from RenderFMLib.gaussians import Gaussians6D
from RenderFMLib.raster import rasterize, render_gaussians
from RenderFMLib.raster.cpu_fast_grad import rasterize_cpu_fast_differentiable
from RenderFMLib.raster.project import CameraParams
from RenderFMLib.raster.torch_backend import rasterize_torch
from RenderFMLib.synthetic import make_scene


def random_scene(count: int, seed: int, box: float = 120.0) -> Gaussians6D:
    """CT-like Gaussians with opacities 0.38-0.98 (some clamp at ALPHA_MAX and some pixels saturate, so the
    early-stop and clamp paths are exercised)."""
    return make_scene(count, box_mm=box, std_mm=2.0, seed=seed, opacity=(0.38, 0.98), sh_degree=1)


def cameras():
    perspective = orbit_cameras((0, 0, 0), 110, 3, 72, 56, elevation_deg=20, start_azimuth_deg=30)[1]
    orthographic = Camera(position=(40.0, -300.0, 60.0), focal_point=(0.0, 0.0, 0.0), view_up=(0.0, 0.0, 1.0),
                          parallel_projection=True, parallel_scale=70.0, width=64, height=60)
    return {"perspective": perspective, "orthographic": orthographic}


def gradients(function, g3: Gaussians3D, camera: Camera, seed: int):
    """Image and input gradients of a random linear loss on rgb, alpha and depth (float64)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (camera.height, camera.width)
    weights = [torch.randn(*shape, k, generator=gen, dtype=torch.float64) for k in (3, 1, 1)]
    leaves = [t.detach().double().clone().requires_grad_() for t in (g3.means, g3.covs, g3.colors, g3.opacities)]
    out = function(*leaves, CameraParams.from_camera(camera), background=(0.1, 0.2, 0.3), return_depth=True)
    loss = (out.rgb * weights[0]).sum() + (out.alpha * weights[1]).sum() + 1e-3 * (out.depth * weights[2]).sum()
    loss.backward()
    return out, [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("kind", ["perspective", "orthographic"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cpu_fast_gradients_match_torch_autograd(kind, seed):
    camera = cameras()[kind]
    g3 = condition(random_scene(2500, seed, box=60.0), camera.center)
    reference, expected = gradients(rasterize_torch, g3, camera, seed)
    fast, actual = gradients(rasterize_cpu_fast_differentiable, g3, camera, seed)
    # A Gaussian whose alpha lands within rounding of ALPHA_MIN (or a pixel within rounding of T_MIN) may be blended
    # by one backend and skipped by the other: such flips touch a handful of pixels and the Gaussians covering them.
    for part in ("rgb", "alpha", "depth"):
        want, got = getattr(reference, part).detach(), getattr(fast, part).detach()
        scale = float(want.abs().max())
        flipped = float(((want - got).abs() > 1e-6 * scale).double().mean())
        assert flipped < 0.01, f"{part}: {flipped:.2%} of pixels differ"
    saturated = float((reference.alpha > 0.999).double().mean())
    assert saturated > 0.01  # pixels that stop early (transmittance below T_MIN) are exercised
    for name, want, got in zip(("means", "covs", "colors", "opacities"), expected, actual, strict=True):
        scale = float(want.abs().max())
        assert scale > 0, name
        per_gaussian = (want - got).reshape(len(want), -1).abs().amax(dim=1)
        disagree = float((per_gaussian > 1e-6 * scale).double().mean())
        assert disagree < 0.05, f"{name}: {disagree:.2%} of the Gaussians' gradients differ"
        relative = float((want - got).norm() / want.norm())
        assert relative < 5e-3, f"{name}: relative error {relative:.2e}"


def test_gradient_of_a_hidden_gaussian_is_zero_and_of_a_visible_one_is_not():
    camera = Camera(position=(0.0, -200.0, 0.0), focal_point=(0.0, 0.0, 0.0), width=32, height=32)
    means = torch.tensor([[0.0, -20.0, 0.0], [0.0, 20.0, 0.0], [500.0, 0.0, 0.0]])  # front, behind, off-screen
    covs = torch.eye(3).expand(3, 3, 3) * 400.0
    colors = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9]], requires_grad=True)
    opacities = torch.tensor([0.99, 0.9, 0.9], requires_grad=True)
    out = rasterize(Gaussians3D(means, covs, colors, opacities), camera, backend="cpu-fast")
    out.rgb[16, 16].sum().backward()
    assert float(colors.grad[0].abs().sum()) > 0.5  # the front Gaussian makes the centre pixel
    assert float(colors.grad[1].abs().sum()) < 0.05 * float(colors.grad[0].abs().sum())  # mostly hidden
    assert float(colors.grad[2].abs().sum()) == 0.0 and float(opacities.grad[2]) == 0.0  # culled


def test_auto_backend_optimises_6d_gaussians_on_the_cpu():
    """render_gaussians picks cpu-fast with gradients on a CPU; a few Adam steps on a 6D scene reduce the loss,
    and every 6D parameter receives the same gradient as through the torch backend."""
    camera = orbit_cameras((0, 0, 0), 110, 2, 48, 40, elevation_deg=10)[0]
    target_scene, scene = random_scene(600, 7), random_scene(600, 8)
    with torch.no_grad():
        target = render_gaussians(target_scene, camera, backend="torch").rgb
    grads = {}
    for backend in ("torch", "auto"):
        g = random_scene(600, 8)
        g.requires_grad_()
        (render_gaussians(g, camera, backend=backend).rgb - target).abs().mean().backward()
        grads[backend] = {name: t.grad.clone() for name, t in g.parameters().items()}
    for name, want in grads["torch"].items():
        assert torch.allclose(want, grads["auto"][name], rtol=1e-3, atol=1e-7), name
    scene.requires_grad_()
    params = list(scene.parameters().values())
    optimizer = torch.optim.Adam(params, lr=0.02)
    losses = []
    for _ in range(15):
        loss = (render_gaussians(scene, camera).rgb - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], np.round(losses, 4)


def test_optimize_benchmark_times_a_full_step_per_backend():
    from RenderFMLib.bench_optimize import step_seconds

    for backend in ("torch", "cpu-fast"):
        times = step_seconds(backend, 2000, 32, runs=2, warmup=1, device="cpu")
        assert len(times) == 2 and all(0.0 < t < 60.0 for t in times)
