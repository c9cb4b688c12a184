"""6D Gaussians: the Cholesky parameterisation, the container, and the SH basis."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from RenderFMLib.errors import GaussianError, RenderFMError
from RenderFMLib.gaussians import (
    PARAMETER_NAMES,
    TRIL_COLS,
    TRIL_ROWS,
    Gaussians6D,
    cholesky_factor,
    covariance_from_params,
    isotropic_params,
    params_from_covariance,
)
from RenderFMLib.sh import C0, degree_from_coefficients, eval_sh, rgb_to_sh_dc, sh_basis, sh_dc_to_rgb, sh_to_color


# ---- parameterisation ---------------------------------------------------------------------------------------------
def test_cholesky_factor_follows_the_6dgs_formula():
    gen = torch.Generator().manual_seed(1)
    log_diag = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    offdiag = torch.randn(4, 15, generator=gen, dtype=torch.float64)
    factor = cholesky_factor(log_diag, offdiag)
    assert factor.shape == (4, 6, 6)
    assert torch.equal(factor, torch.tril(factor))
    assert torch.allclose(torch.diagonal(factor, dim1=-2, dim2=-1), torch.exp(log_diag))
    # row-major strictly-lower order: (1,0), (2,0), (2,1), (3,0), ...
    assert (TRIL_ROWS[:4], TRIL_COLS[:4]) == ((1, 2, 2, 3), (0, 0, 1, 0))
    for k, (i, j) in enumerate(zip(TRIL_ROWS, TRIL_COLS, strict=True)):
        expected = (2.0 * torch.sigmoid(offdiag[:, k]) - 1.0) * torch.exp(log_diag[:, i])
        assert torch.allclose(factor[:, i, j], expected)
    cov = covariance_from_params(log_diag, offdiag)
    assert torch.allclose(cov, factor @ factor.transpose(-1, -2))
    assert bool((torch.linalg.eigvalsh(cov) > 0).all())


def test_params_from_covariance_round_trip():
    gen = torch.Generator().manual_seed(2)
    log_diag = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    offdiag = torch.randn(50, 15, generator=gen, dtype=torch.float64) * 2
    cov = covariance_from_params(log_diag, offdiag)
    back_diag, back_off = params_from_covariance(cov)
    assert torch.allclose(back_diag, log_diag, atol=1e-9)
    assert torch.allclose(back_off, offdiag, atol=1e-6)
    assert back_diag.dtype == torch.float64


def test_params_from_covariance_rejects_unrepresentable_and_clamps_on_request():
    # strong correlation: row 1 of the Cholesky factor has |L_10| > L_11
    cov = torch.eye(6, dtype=torch.float64)
    cov[0, 1] = cov[1, 0] = 0.9
    with pytest.raises(GaussianError, match="not representable"):
        params_from_covariance(cov)
    log_diag, offdiag = params_from_covariance(cov, clamp=True)
    assert torch.isfinite(log_diag).all() and torch.isfinite(offdiag).all()
    with pytest.raises(GaussianError, match="positive definite"):
        params_from_covariance(-torch.eye(6))


def test_isotropic_params_give_the_requested_standard_deviations():
    log_diag, offdiag = isotropic_params(3, torch.tensor([1.0, 2.0, 3.0]), direction_std=10.0)
    cov = covariance_from_params(log_diag.double(), offdiag.double())
    spatial = torch.diagonal(cov, dim1=-2, dim2=-1)[:, :3]
    assert torch.allclose(spatial, torch.tensor([[1.0], [4.0], [9.0]], dtype=torch.float64).expand(3, 3))
    assert torch.allclose(torch.diagonal(cov, dim1=-2, dim2=-1)[:, 3:], torch.full((3, 3), 100.0, dtype=torch.float64))
    assert torch.count_nonzero(cov - torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))) == 0
    anisotropic, _ = isotropic_params(2, torch.tensor([[1.0, 2.0, 4.0], [1.0, 1.0, 1.0]]))
    assert torch.allclose(anisotropic[0, :3], torch.log(torch.tensor([1.0, 2.0, 4.0])))
    with pytest.raises(GaussianError):
        isotropic_params(3, -1.0)
    with pytest.raises(GaussianError):
        isotropic_params(3, torch.ones(5))


# ---- container ------------------------------------------------------------------------------------------------
def test_container_basics(random_gaussians):
    g = random_gaussians(10)
    assert len(g) == 10 and g.sh_degree == 3 and g.dtype == torch.float32 and g.device.type == "cpu"
    assert set(g.parameters()) == set(PARAMETER_NAMES)
    assert "N=10" in repr(g)
    one = g[3]
    assert len(one) == 1 and torch.equal(one.means[0], g.means[3]) and int(one.labels[0]) == 3
    assert torch.equal(g[-1].means[0], g.means[9])
    assert len(g[2:5]) == 3
    mask = g.labels % 2 == 0
    assert torch.equal(g[mask].labels, g.labels[mask])
    assert torch.equal(g[[1, 4]].means, g.means[[1, 4]])
    assert torch.equal(g[np.array([0, 2])].sh, g.sh[[0, 2]])
    assert len(g[torch.zeros(10, dtype=torch.bool)]) == 0
    with pytest.raises(IndexError):
        g[10]
    with pytest.raises(IndexError):
        g[torch.ones(3, dtype=torch.bool)]

    both = Gaussians6D.cat([g[:4], g[4:]])
    for name in PARAMETER_NAMES + ("labels",):
        assert torch.equal(getattr(both, name), getattr(g, name))
    with pytest.raises(GaussianError, match="labelled"):
        Gaussians6D.cat([g, random_gaussians(2, labels=False)])
    with pytest.raises(GaussianError, match="SH degrees"):
        Gaussians6D.cat([g, random_gaussians(2, degree=1)])
    with pytest.raises(GaussianError):
        Gaussians6D.cat([])

    double = g.to(dtype=torch.float64)
    assert double.means.dtype == torch.float64 and double.labels.dtype == torch.int16
    clone = g.clone()
    clone.means += 1
    assert not torch.equal(clone.means, g.means)
    trainable = g.clone().requires_grad_()
    assert all(t.requires_grad for t in trainable.parameters().values())
    assert not any(t.requires_grad for t in trainable.detach().parameters().values())
    assert g.with_sh_degree(1).sh.shape == (10, 4, 3)
    padded = g.with_sh_degree(1).with_sh_degree(2)
    assert padded.sh.shape == (10, 9, 3) and torch.count_nonzero(padded.sh[:, 4:]) == 0
    assert torch.allclose(g.opacity, torch.sigmoid(g.opacity_logit))
    assert torch.allclose(g.covariance(), covariance_from_params(g.chol_log_diag, g.chol_offdiag))


@pytest.mark.parametrize("change, message", [
    (lambda v: v.update(means=torch.zeros(5, 2)), "means"),
    (lambda v: v.update(chol_offdiag=torch.zeros(5, 14)), "chol_offdiag"),
    (lambda v: v.update(sh=torch.zeros(5, 5, 3)), "sh"),
    (lambda v: v.update(opacity_logit=torch.zeros(5, dtype=torch.float64)), "dtype"),
    (lambda v: v.update(labels=torch.zeros(5, dtype=torch.int32)), "labels"),
    (lambda v: v.update(dir_means=torch.zeros(5, 3, dtype=torch.int64)), "floating"),
])
def test_validation_errors_are_clear(change, message, random_gaussians):
    values = {name: getattr(random_gaussians(5), name) for name in PARAMETER_NAMES + ("labels",)}
    change(values)
    with pytest.raises(GaussianError, match=message):
        Gaussians6D(**values)


def test_validate_detects_non_finite_values(random_gaussians):
    g = random_gaussians(5)
    g.chol_log_diag[2, 1] = float("nan")
    with pytest.raises(RenderFMError, match=r"chol_log_diag has non-finite values in 1 of 5"):
        g.validate()


def test_from_isotropic_gives_view_independent_colour():
    means = torch.zeros(3, 3)
    colors = torch.tensor([[0.1, 0.5, 0.9], [1.0, 0.0, 0.2], [2.0, 0.3, 0.3]])  # scene-linear (may exceed 1)
    g = Gaussians6D.from_isotropic(means, colors, torch.tensor([0.2, 0.5, 0.9]), 1.5, sh_degree=2,
                                   labels=torch.tensor([1, 2, 3]))
    assert g.sh_degree == 2 and g.labels.dtype == torch.int16
    assert torch.allclose(g.opacity, torch.tensor([0.2, 0.5, 0.9]))
    dirs = torch.nn.functional.normalize(torch.randn(3, 3), dim=-1)
    assert torch.allclose(sh_to_color(g.sh, dirs), colors, atol=1e-6)
    with pytest.raises(GaussianError):
        Gaussians6D.from_isotropic(means, colors, torch.tensor([0.0, 0.5, 1.0]), 1.5)


# ---- spherical harmonics -------------------------------------------------------------------------------------
def test_sh_basis_is_orthonormal_on_the_sphere():
    count = 20000
    index = torch.arange(count, dtype=torch.float64) + 0.5
    z = 1 - 2 * index / count
    phi = math.pi * (3 - math.sqrt(5)) * index
    r = torch.sqrt(1 - z * z)
    dirs = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)
    basis = sh_basis(dirs, 3)
    gram = basis.T @ basis * (4 * math.pi / count)
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=1e-3)


def test_sh_helpers():
    rgb = torch.tensor([0.2, 0.7, 1.3])
    assert torch.allclose(sh_dc_to_rgb(rgb_to_sh_dc(rgb)), rgb)
    assert math.isclose(float(rgb_to_sh_dc(torch.tensor(0.5 + C0, dtype=torch.float64))), 1.0)
    sh = torch.zeros(1, 4, 3)
    sh[0, 0] = -10.0  # would be negative: clamped at zero
    assert torch.equal(sh_to_color(sh, torch.tensor([[0.0, 0.0, 1.0]])), torch.zeros(1, 3))
    sh = torch.zeros(4, 3)
    sh[2] = 1.0  # the z-linear term: +C1 * z
    assert torch.allclose(eval_sh(sh, torch.tensor([0.0, 0.0, 1.0])), torch.full((3,), 0.4886025119029199))
    assert [degree_from_coefficients(k) for k in (1, 4, 9, 16)] == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        degree_from_coefficients(5)
