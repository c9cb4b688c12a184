"""6DGS conditioning against a direct float64 implementation of the formulas, plus gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from RenderFMLib.conditioning import (
    Gaussians3D,
    condition,
    condition_on_directions,
    conditioning_factors,
    factors_from_cholesky,
    view_directions,
)
from RenderFMLib.errors import GaussianError
from RenderFMLib.gaussians import Gaussians6D
from RenderFMLib.sh import sh_to_color


def direct_condition(cov6, mean_p, mean_d, opacity, camera_center, lam):
    """The DESIGN.md formulas, literally, in float64 numpy for one Gaussian and one camera."""
    d = mean_p - camera_center
    d = d / np.linalg.norm(d)
    s_pp, s_pd, s_dd = cov6[:3, :3], cov6[:3, 3:], cov6[3:, 3:]
    x = d - mean_d
    mean = mean_p + s_pd @ np.linalg.solve(s_dd, x)
    cov = s_pp - s_pd @ np.linalg.solve(s_dd, s_pd.T)
    alpha = opacity * math.exp(-lam * x @ np.linalg.solve(s_dd, x))
    return mean, cov, alpha, d


def random_spd(count: int, rng: np.random.Generator) -> np.ndarray:
    """Random SPD 6x6 matrices (Wishart-like, mixed scales, strong correlations included)."""
    a = rng.normal(size=(count, 6, 12)) * rng.uniform(0.2, 3.0, size=(count, 6, 1))
    return a @ a.transpose(0, 2, 1) / 12 + 1e-3 * np.eye(6)


@pytest.mark.parametrize("lam", [0.35, 0.2, 0.0])
def test_matches_direct_formulas_on_random_spd_covariances(lam):
    rng = np.random.default_rng(0)
    count = 40
    cov6 = random_spd(count, rng)
    means = rng.normal(size=(count, 3)) * 30
    dir_means = rng.normal(size=(count, 3))
    opacity = rng.uniform(0.05, 0.95, size=count)
    sh = rng.normal(size=(count, 16, 3)) * 0.2
    centers = np.array([[400.0, 30.0, -20.0], [-10.0, -350.0, 80.0], [0.0, 5.0, 500.0]])
    t = torch.from_numpy
    factors = factors_from_cholesky(torch.linalg.cholesky(t(cov6)), t(means), t(dir_means), t(opacity), t(sh))
    out = condition(factors, t(centers), lam)
    assert out.num_views == 3 and len(out) == count
    for c, center in enumerate(centers):
        for n in range(count):
            mean, cov, alpha, d = direct_condition(cov6[n], means[n], dir_means[n], opacity[n], center, lam)
            np.testing.assert_allclose(out.means[c, n].numpy(), mean, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(out.covs[c, n].numpy(), cov, rtol=1e-7, atol=1e-9 * np.abs(cov).max())
            assert math.isclose(float(out.opacities[c, n]), alpha, rel_tol=1e-9, abs_tol=1e-12)
            expected_color = sh_to_color(t(sh[n]), t(d))
            assert torch.allclose(out.colors[c, n], expected_color)


def test_gaussians6d_path_matches_direct_formulas_and_is_symmetric_pd(random_gaussians):
    count = 30
    g = random_gaussians(count, degree=1, labels=False, seed=3, dtype=torch.float64, position=20.0, log_diag=1.0,
                         offdiag=3.0, sh=1.0)  # offdiag x3: near-saturated correlations
    center = np.array([120.0, -300.0, 40.0])
    out = condition(g, torch.from_numpy(center))
    assert out.num_views is None and out.means.shape == (count, 3)
    cov6 = g.covariance().numpy()
    for n in range(count):
        mean, cov, alpha, _ = direct_condition(cov6[n], g.means[n].numpy(), g.dir_means[n].numpy(),
                                               float(g.opacity[n]), center, 0.35)
        np.testing.assert_allclose(out.means[n].numpy(), mean, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(out.covs[n].numpy(), cov, rtol=1e-6, atol=1e-9 * np.abs(cov).max())
        assert math.isclose(float(out.opacities[n]), alpha, rel_tol=1e-8, abs_tol=1e-12)
    assert torch.equal(out.covs, out.covs.transpose(-1, -2))
    assert bool((torch.linalg.eigvalsh(out.covs) > 0).all())


def test_float32_conditioning_stays_positive_definite(random_gaussians):
    count = 2000
    g = random_gaussians(count, degree=0, labels=False, seed=4, position=100.0, log_diag=2.0, offdiag=4.0, sh=0.0,
                         opacity=0.0)
    out = condition(g, torch.tensor([0.0, 0.0, 600.0]))
    assert torch.isfinite(out.means).all() and torch.isfinite(out.opacities).all()
    assert bool((torch.linalg.eigvalsh(out.covs.double()) > 0).all())


def test_batch_equals_single_views_and_directions(random_gaussians):
    g = random_gaussians(12, degree=2, seed=5, position=10.0, log_diag=0.3, sh=0.2)
    centers = torch.tensor([[100.0, 0.0, 0.0], [0.0, -200.0, 50.0]])
    factors = conditioning_factors(g)
    batch = condition(factors, centers)
    for c in range(2):
        single = condition(g, centers[c])
        view = batch.view(c)
        for name in ("means", "covs", "colors", "opacities"):
            assert torch.allclose(getattr(view, name), getattr(single, name), atol=1e-6)
        assert torch.equal(view.labels, g.labels)
    same = condition_on_directions(factors, view_directions(g.means, centers))
    assert torch.allclose(same.means, batch.means)
    # one shared direction (distant viewer)
    shared = condition_on_directions(g, torch.tensor([0.0, 1.0, 0.0]))
    assert shared.means.shape == (12, 3)
    expected = sh_to_color(g.sh, torch.tensor([0.0, 1.0, 0.0]).expand(12, 3))
    assert torch.allclose(shared.colors, expected)


def test_isotropic_gaussians_are_view_independent():
    means = torch.randn(6, 3) * 10
    g = Gaussians6D.from_isotropic(means, torch.rand(6, 3), torch.full((6,), 0.6), 1.5, direction_std=10.0)
    out = condition(g, torch.tensor([[300.0, 0.0, 0.0], [0.0, 0.0, -300.0]]))
    assert torch.allclose(out.means, means.expand(2, 6, 3))
    assert torch.allclose(out.covs, torch.eye(3).expand(2, 6, 3, 3) * 2.25)
    assert torch.allclose(out.opacities, torch.full((2, 6), 0.6 * math.exp(-0.35 / 100.0)))


def test_gradcheck_small_double(random_gaussians):
    g = random_gaussians(3, degree=1, labels=False, seed=6, dtype=torch.float64, position=5.0, direction=0.5,
                         log_diag=0.3, sh=0.1)  # small SH: colours stay > 0 (no clamp)
    params = [p.requires_grad_() for p in g.parameters().values()]
    centers = torch.tensor([[40.0, 10.0, 5.0], [-30.0, 25.0, 60.0]], dtype=torch.float64)

    def function(*tensors):
        out = condition(Gaussians6D(*tensors), centers, 0.35)
        return out.means, out.covs, out.colors, out.opacities

    assert torch.autograd.gradcheck(function, params, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("seed, dtype", [(0, torch.float32), (1, torch.float32), (2, torch.float64)])
def test_cpu_fast_factors_match_torch_autograd(random_gaussians, seed, dtype):
    pytest.importorskip("numba")
    from RenderFMLib.raster.cpu_fast_factors import conditioning_factors_cpu_fast

    # wide spreads: strongly anisotropic and correlated 6x6 factors
    g = random_gaussians(500, degree=1, seed=seed, dtype=dtype, log_diag=1.0, offdiag=2.0)
    leaves = [g.chol_log_diag.requires_grad_(), g.chol_offdiag.requires_grad_()]
    reference, fast = conditioning_factors(g), conditioning_factors_cpu_fast(g)
    names = ("chol_dd", "gain", "cov")
    tolerance = 1e-5 if dtype == torch.float32 else 1e-10
    for name in names:
        expected, actual = getattr(reference, name).detach(), getattr(fast, name).detach()
        assert actual.dtype == dtype
        assert float((actual - expected).abs().max()) <= tolerance * float(expected.abs().max())
    assert fast.means is g.means and fast.sh is g.sh and fast.labels is g.labels
    generator = torch.Generator().manual_seed(seed)
    weights = {name: torch.randn(500, 3, 3, generator=generator, dtype=dtype) for name in names}
    def loss(factors, subset):
        return sum((getattr(factors, name) * weights[name]).sum() for name in subset)

    for subset in (names, ("gain",), ("chol_dd", "cov")):  # unused outputs get no gradient
        expected = torch.autograd.grad(loss(conditioning_factors(g), subset), leaves)
        actual = torch.autograd.grad(loss(conditioning_factors_cpu_fast(g), subset), leaves)
        for want, got in zip(expected, actual, strict=True):
            assert float((got - want).abs().max()) <= tolerance * float(want.abs().max())


def test_cpu_fast_rendering_differentiates_the_6d_parameters_like_torch(random_gaussians):
    pytest.importorskip("numba")
    from RenderFMLib.camera import orbit_cameras
    from RenderFMLib.raster import render_gaussians

    g = random_gaussians(300, degree=1, seed=4, position=20.0, log_diag=0.5, opacity=0.5)
    g.requires_grad_()
    camera = orbit_cameras((0.0, 0.0, 0.0), 200.0, 1, width=48, height=40, elevation_deg=10.0)[0]
    leaves = [g.chol_log_diag, g.chol_offdiag]
    grads = []
    for backend in ("torch", "cpu-fast"):  # cpu-fast: numba factors and blend, torch conditioning and projection
        output = render_gaussians(g, camera, backend=backend)
        grads.append(torch.autograd.grad((output.rgb * output.rgb).sum(), leaves))
    for want, got in zip(*grads, strict=True):
        assert float(want.abs().max()) > 0
        assert float(torch.linalg.norm(got - want)) <= 5e-3 * float(torch.linalg.norm(want))


def test_errors():
    g = Gaussians6D.from_isotropic(torch.zeros(2, 3), torch.rand(2, 3), torch.full((2,), 0.5), 1.0)
    with pytest.raises(GaussianError, match="lambda"):
        condition(g, torch.tensor([0.0, 0.0, 10.0]), lam=-1.0)
    with pytest.raises(GaussianError, match="camera centres"):
        condition(g, torch.zeros(2, 2))
    with pytest.raises(GaussianError, match="view directions"):
        condition_on_directions(g, torch.zeros(1, 3, 3))
    with pytest.raises(GaussianError, match="covs"):
        Gaussians3D(torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(GaussianError, match="batch"):
        condition(g, torch.tensor([0.0, 0.0, 10.0])).view(0)
