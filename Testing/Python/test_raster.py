"""Rasterizer backends: agreement with the torch reference, geometry, gradients, edge cases, backend choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from RenderFMLib.camera import Camera, orbit_cameras
from RenderFMLib.conditioning import Gaussians3D, condition, conditioning_factors
from RenderFMLib.errors import BackendUnavailableError
from RenderFMLib.gaussians import Gaussians6D
from RenderFMLib.raster import (
    available_backends,
    backend_status,
    rasterize,
    render_gaussians,
    resolve_backend,
)
from RenderFMLib.raster.project import ALPHA_MIN, EPS2D, CameraParams
from RenderFMLib.raster.torch_backend import rasterize_torch
from RenderFMLib.synthetic import make_scene

pytestmark = pytest.mark.usefixtures("two_torch_threads")


def random_scene(count=3000, box=120.0, std=1.5, seed=0, degree=3) -> Gaussians6D:
    """CT-like random scene: ~voxel-sized Gaussians in a box, some anisotropy and view dependence."""
    return make_scene(count, box_mm=box, std_mm=std, seed=seed, sh_degree=degree).validate()


def perspective(width=96, height=64) -> Camera:
    return orbit_cameras((0, 0, 0), 110, 3, width, height, elevation_deg=20, start_azimuth_deg=30)[1]


def orthographic(width=80, height=72) -> Camera:
    return Camera(position=(40.0, -300.0, 60.0), focal_point=(0.0, 0.0, 0.0), view_up=(0.0, 0.0, 1.0),
                  parallel_projection=True, parallel_scale=70.0, width=width, height=height)


CAMERAS = {"perspective": perspective, "orthographic": orthographic}


@pytest.mark.parametrize("antialiased", [True, False])
@pytest.mark.parametrize("kind", CAMERAS)
def test_cpu_fast_agrees_with_torch(kind, antialiased):
    camera = CAMERAS[kind]()
    g = random_scene()
    reference = render_gaussians(g, camera, backend="torch", return_depth=True, antialiased=antialiased)
    fast = render_gaussians(g, camera, backend="cpu-fast", return_depth=True, antialiased=antialiased)
    assert reference.rgb.shape == fast.rgb.shape == (camera.height, camera.width, 3)
    assert float(reference.alpha.mean()) > 0.1  # the scene covers a good part of the image
    assert float((reference.rgb - fast.rgb).abs().mean()) <= 1e-3
    assert float((reference.alpha - fast.alpha).abs().mean()) <= 1e-3
    covered = reference.alpha[..., 0] > 0.5
    assert float((reference.depth - fast.depth)[covered].abs().mean()) < 1e-2  # mm
    # the split path (conditioned Gaussians in, numba projection) matches the fused one
    split = rasterize(condition(g, camera.center), camera, backend="cpu-fast", antialiased=antialiased)
    assert float((split.rgb - fast.rgb).abs().max()) < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("antialiased", [True, False])
@pytest.mark.parametrize("kind", CAMERAS)
def test_gsplat_agrees_with_torch(kind, antialiased):
    if "gsplat" not in available_backends("cuda"):
        pytest.skip(f"gsplat unavailable: {backend_status('gsplat', 'cuda')}")
    camera = CAMERAS[kind]()
    g = random_scene().to("cuda")
    reference = render_gaussians(g, camera, backend="torch", antialiased=antialiased)
    fast = render_gaussians(g, camera, backend="gsplat", antialiased=antialiased)
    assert float((reference.rgb - fast.rgb).abs().mean()) <= 1e-3
    assert float((reference.alpha - fast.alpha).abs().mean()) <= 1e-3


@pytest.mark.parametrize("kind", CAMERAS)
@pytest.mark.parametrize("backend", ["torch", "cpu-fast"])
def test_single_gaussian_lands_where_the_camera_projects_it(kind, backend):
    camera = CAMERAS[kind]()
    mean = torch.tensor([[12.0, -7.0, 15.0]])
    g3 = Gaussians3D(mean, torch.eye(3)[None] * 0.8, torch.ones(1, 3), torch.tensor([0.8]))
    out = rasterize(g3, camera, backend=backend, return_depth=True)
    weight = out.alpha[..., 0].double()
    rows, cols = torch.meshgrid(torch.arange(camera.height) + 0.5, torch.arange(camera.width) + 0.5, indexing="ij")
    centroid = np.array([float((weight * cols).sum() / weight.sum()), float((weight * rows).sum() / weight.sum())])
    uv, z = camera.project(mean.numpy())
    np.testing.assert_allclose(centroid, uv[0], atol=0.05)
    peak = np.unravel_index(int(weight.argmax()), weight.shape)
    assert abs(float(out.depth[peak]) - z[0]) < 1e-3 * z[0]


def test_gradients_flow_through_the_torch_backend():
    camera = perspective(48, 40)
    g = random_scene(400, box=100.0, std=2.5)
    g3 = condition(g, camera.center)
    leaves = [t.detach().clone().requires_grad_() for t in (g3.means, g3.covs, g3.colors, g3.opacities)]
    out = rasterize(Gaussians3D(*leaves), camera, backend="torch")
    loss = (out.rgb - 0.3).abs().mean() + out.alpha.mean()
    loss.backward()
    for tensor in leaves:
        assert tensor.grad is not None and bool(torch.isfinite(tensor.grad).all())
        assert float(tensor.grad.abs().sum()) > 0
    g.requires_grad_()
    render_gaussians(g, camera, backend="torch").rgb.sum().backward()
    for name, tensor in g.parameters().items():
        assert tensor.grad is not None and bool(torch.isfinite(tensor.grad).all()), name


def test_torch_backend_gradcheck_tiny_scene():
    camera = CameraParams.from_camera(Camera(position=(0.0, -60.0, 0.0), focal_point=(0.0, 0.0, 0.0),
                                             view_angle_deg=30.0, width=16, height=12))
    means = torch.tensor([[0.5, 0.0, 0.3], [-1.5, 3.0, -0.6], [1.0, -4.0, 1.2]], dtype=torch.float64)
    covs = torch.stack([torch.eye(3, dtype=torch.float64) * s for s in (4.0, 6.0, 3.0)])
    colors = torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.8, 0.3], [0.3, 0.3, 0.9]], dtype=torch.float64)
    opacities = torch.tensor([0.6, 0.5, 0.7], dtype=torch.float64)
    inputs = [t.clone().requires_grad_() for t in (means, covs, colors, opacities)]

    def function(m, c, col, op):
        sym = 0.5 * (c + c.transpose(-1, -2))
        out = rasterize_torch(m, sym, col, op, camera, return_depth=True)
        return out.rgb, out.alpha, out.depth

    assert torch.autograd.gradcheck(function, inputs, eps=1e-6, atol=1e-5, fast_mode=True)


def test_torch_backend_chunking_and_tile_size_do_not_change_the_image():
    camera = perspective(64, 48)
    g3 = condition(random_scene(2000), camera.center)
    params = CameraParams.from_camera(camera)
    whole = rasterize_torch(g3.means, g3.covs, g3.colors, g3.opacities, params)
    for options in ({"max_pairs": 20000}, {"tile": 16}, {"tile": 4}):
        other = rasterize_torch(g3.means, g3.covs, g3.colors, g3.opacities, params, **options)
        assert torch.allclose(whole.rgb, other.rgb, atol=1e-6), options
        assert torch.allclose(whole.alpha, other.alpha, atol=1e-6), options


@pytest.mark.parametrize("backend", ["torch", "cpu-fast"])
def test_empty_and_culled_scenes_give_zeros(backend):
    camera = perspective(40, 30)
    empty = Gaussians3D(torch.zeros(0, 3), torch.zeros(0, 3, 3), torch.zeros(0, 3), torch.zeros(0))
    behind = camera.center + 50.0 * (camera.center - np.array(camera.focal_point)) / camera.distance
    culled = Gaussians3D(torch.tensor(np.array([behind, [5000.0, 0.0, 0.0]]), dtype=torch.float32),
                         torch.eye(3).expand(2, 3, 3) * 4.0, torch.ones(2, 3), torch.full((2,), 0.9))
    for g3 in (empty, culled):
        out = rasterize(g3, camera, backend=backend, return_depth=True)
        assert out.rgb.shape == (30, 40, 3) and out.alpha.shape == (30, 40, 1) and out.depth.shape == (30, 40, 1)
        assert not out.rgb.any() and not out.alpha.any() and not out.depth.any()
    transparent = Gaussians3D(torch.zeros(1, 3), torch.eye(3)[None], torch.ones(1, 3), torch.tensor([1e-3]))
    assert not rasterize(transparent, camera, backend=backend).alpha.any()


@pytest.mark.parametrize("backend", ["torch", "cpu-fast"])
def test_background_and_premultiplied_output(backend):
    camera = perspective(40, 30)
    g = random_scene(500)
    plain = render_gaussians(g, camera, backend=backend)
    white = render_gaussians(g, camera, backend=backend, background=(1.0, 1.0, 1.0))
    assert torch.allclose(white.rgb, plain.rgb + (1.0 - plain.alpha), atol=1e-6)
    brightest = float(condition(g, camera.center).colors.max())  # colours in [0, 0.9] plus the SH wiggle
    assert bool((plain.rgb <= plain.alpha * brightest + 1e-5).all())  # premultiplied


def test_opaque_front_gaussian_hides_the_one_behind():
    camera = Camera(position=(0.0, -100.0, 0.0), focal_point=(0.0, 0.0, 0.0), width=32, height=32)
    g3 = Gaussians3D(torch.tensor([[0.0, 10.0, 0.0], [0.0, -10.0, 0.0]]), torch.eye(3).expand(2, 3, 3) * 100.0,
                     torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), torch.tensor([0.99, 0.99]))
    for backend in ("torch", "cpu-fast"):
        centre = rasterize(g3, camera, backend=backend).rgb[16, 16]
        assert float(centre[0]) > 0.95 and float(centre[2]) < 0.05, backend  # red (front, y = -10) wins


@pytest.mark.parametrize("backend", ["torch", "cpu-fast"])
def test_antialiasing_keeps_the_splat_integral(backend):
    """A Gaussian of about half a pixel deposits ``opacity * 2 pi sqrt(det Sigma2D)`` of alpha (the integral of its
    footprint, ``Sigma2D`` without the ``EPS2D`` dilation) when anti-aliased; the classic rule deposits the dilated
    footprint's integral, twice as much here. Both lose the fraction ``ALPHA_MIN / peak`` of it outside the contour
    where alpha falls below ``ALPHA_MIN``."""
    camera = Camera(position=(0.0, -400.0, 0.0), focal_point=(0.0, 0.0, 0.0), view_angle_deg=20.0, width=33,
                    height=33)
    std_mm, opacity = 2.0, 0.9
    g3 = Gaussians3D(torch.zeros(1, 3), torch.eye(3)[None] * std_mm ** 2, torch.ones(1, 3), torch.tensor([opacity]))
    variance = (std_mm * float(camera.intrinsics()[0, 0]) / 400.0) ** 2  # pixels^2, about 0.22
    for antialiased, spread in ((True, variance), (False, variance + EPS2D)):
        peak = opacity * (variance / (variance + EPS2D) if antialiased else 1.0)
        expected = opacity * 2.0 * np.pi * spread * (1.0 - ALPHA_MIN / peak)
        deposited = float(rasterize(g3, camera, backend=backend, antialiased=antialiased).alpha.sum())
        assert deposited == pytest.approx(expected, rel=0.02), antialiased


def test_factors_and_gaussians_render_the_same():
    camera = perspective(48, 32)
    g = random_scene(800)
    factors = conditioning_factors(g)
    for backend in ("torch", "cpu-fast"):
        a = render_gaussians(g, camera, backend=backend)
        b = render_gaussians(factors, camera, backend=backend)
        assert torch.allclose(a.rgb, b.rgb, atol=1e-6)


def test_backend_choice():
    assert "torch" in available_backends() and "cpu-fast" in available_backends()
    assert resolve_backend("auto", "cpu") == "cpu-fast"
    assert resolve_backend("auto", "cpu", needs_grad=True) == "cpu-fast"  # differentiable through cpu_fast_grad
    assert resolve_backend("TORCH") == "torch"
    with pytest.raises(BackendUnavailableError, match="unknown rasterizer backend"):
        resolve_backend("opengl")
    with pytest.raises(BackendUnavailableError, match="differentiates Gaussians on the CPU only"):
        resolve_backend("cpu-fast", "meta", needs_grad=True)
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="gsplat.*CUDA"):
            resolve_backend("gsplat")
        assert "CUDA" in backend_status("gsplat", "cpu")
    g3 = condition(random_scene(10), torch.zeros(2, 3) + torch.tensor([0.0, -300.0, 0.0]))
    with pytest.raises(BackendUnavailableError, match="one view"):
        rasterize(g3, perspective())
