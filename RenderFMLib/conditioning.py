"""6DGS slicing: the 3D Gaussian a 6D Gaussian shows from a camera (conditional mean, covariance, opacity, colour).

For a camera centre ``c`` and each Gaussian, with the view direction ``d = normalize(mu_p - c)``:

* ``mu    = mu_p + Sigma_pd Sigma_dd^-1 (d - mu_d)``
* ``Sigma = Sigma_pp - Sigma_pd Sigma_dd^-1 Sigma_dp`` (the same for every view)
* ``alpha = sigmoid(o) * exp(-lam (d - mu_d)^T Sigma_dd^-1 (d - mu_d))`` (no 1/2 factor; ``lam = 0.35`` default)
* ``colour = max(0, 0.5 + SH(d))`` (linear RGB).

Everything is differentiable torch code on small 3x3 blocks: batched matrix products, and Cholesky factors and
triangular solves written out element by element (batched ``torch.linalg`` factorisations of millions of 3x3
matrices are slow on CPU). The view-independent part — the Cholesky
factor of ``Sigma_dd``, the regression gain and the conditional covariance — lives in
:class:`ConditioningFactors`; compute it once with :func:`conditioning_factors` and reuse it for every view while
the Gaussians do not change. The conditional covariance is formed as ``A (I + E^T E)^-1 A^T`` (``A``, ``E`` from
the 6x6 Cholesky factor), which is positive definite by construction and has no cancellation, instead of the
subtraction above.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from .errors import GaussianError
from .gaussians import Gaussians6D
from .sh import sh_to_color

#: Default strength of the view-dependent opacity falloff (6DGS).
DEFAULT_LAMBDA = 0.35


@dataclass
class Gaussians3D:
    """Conditioned (ordinary) 3D Gaussians for one view (``[N, ...]``) or a batch of ``C`` views (``[C, N, ...]``).

    Attributes:
        means: ``[(C,) N, 3]`` RAS mm.
        covs: ``[(C,) N, 3, 3]`` mm^2 (for a batch usually a broadcast view of one ``[N, 3, 3]`` tensor).
        colors: ``[(C,) N, 3]`` linear RGB, >= 0.
        opacities: ``[(C,) N]`` in [0, 1].
        labels: ``[N]`` int16 segment labels, or ``None``.
    """

    means: torch.Tensor
    covs: torch.Tensor
    colors: torch.Tensor
    opacities: torch.Tensor
    labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        lead = tuple(self.means.shape[:-1])
        if self.means.shape[-1:] != (3,) or len(lead) not in (1, 2):
            raise GaussianError(f"Gaussians3D.means must be [N, 3] or [C, N, 3], got {tuple(self.means.shape)}")
        for name, tail in (("covs", (3, 3)), ("colors", (3,)), ("opacities", ())):
            shape = tuple(getattr(self, name).shape)
            if shape != lead + tail:
                raise GaussianError(f"Gaussians3D.{name} has shape {shape}, expected {lead + tail}")
        if self.labels is not None and tuple(self.labels.shape) != lead[-1:]:
            raise GaussianError(f"Gaussians3D.labels must be [N], got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        """Number of Gaussians ``N``."""
        return int(self.means.shape[-2])

    @property
    def num_views(self) -> int | None:
        """``C`` for a batch of views, ``None`` for a single view."""
        return int(self.means.shape[0]) if self.means.ndim == 3 else None

    def view(self, index: int) -> "Gaussians3D":
        """The single-view Gaussians of view ``index`` of a batch."""
        if self.num_views is None:
            raise GaussianError("Gaussians3D.view() needs a batch of views")
        return Gaussians3D(self.means[index], self.covs[index], self.colors[index], self.opacities[index],
                           self.labels)

    def detach(self) -> "Gaussians3D":
        return replace(self, **{f.name: getattr(self, f.name).detach() for f in fields(self)
                                if getattr(self, f.name) is not None})


@dataclass
class ConditioningFactors:
    """The view-independent part of conditioning ``N`` Gaussians (see module docstring).

    Attributes:
        means: ``[N, 3]`` ``mu_p``.   dir_means: ``[N, 3]`` ``mu_d``.
        chol_dd: ``[N, 3, 3]`` lower Cholesky factor ``C`` of ``Sigma_dd``.
        gain: ``[N, 3, 3]`` ``G = C^-1 Sigma_dp``, so that ``mu = mu_p + G^T C^-1 (d - mu_d)``.
        cov: ``[N, 3, 3]`` conditional covariance.
        opacity: ``[N]`` ``sigmoid(o)``.   sh: ``[N, K, 3]``.   labels: ``[N]`` or ``None``.
    """

    means: torch.Tensor
    dir_means: torch.Tensor
    chol_dd: torch.Tensor
    gain: torch.Tensor
    cov: torch.Tensor
    opacity: torch.Tensor
    sh: torch.Tensor
    labels: torch.Tensor | None


# ---- 3x3 factorisations, element by element -------------------------------------------------------------------
def _entries3(m: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """The entries of ``[..., 3, 3]`` ``m`` as ``entries[row][col]`` ``[...]``. Two unbinds instead of nine
    indexings: the backward of each indexing fills a whole ``[..., 3, 3]`` gradient with zeros."""
    return [row.unbind(-1) for row in m.unbind(-2)]


def _cholesky3(s: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor ``[..., 3, 3]`` of SPD ``s``; pivots are clamped at a tiny positive value."""
    tiny = torch.finfo(s.dtype).tiny
    e = _entries3(s)
    l00 = torch.sqrt(e[0][0].clamp_min(tiny))
    l10 = e[1][0] / l00
    l20 = e[2][0] / l00
    l11 = torch.sqrt((e[1][1] - l10 * l10).clamp_min(tiny))
    l21 = (e[2][1] - l20 * l10) / l11
    l22 = torch.sqrt((e[2][2] - l20 * l20 - l21 * l21).clamp_min(tiny))
    zero = torch.zeros_like(l00)
    return torch.stack([torch.stack([l00, zero, zero], -1), torch.stack([l10, l11, zero], -1),
                        torch.stack([l20, l21, l22], -1)], dim=-2)


def _solve_lower3(lower: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``lower^-1 rhs`` by forward substitution; ``lower`` ``[..., 3, 3]``, ``rhs`` ``[..., 3]`` or ``[..., 3, K]``.

    For a matrix right-hand side, ``lower`` must have the same number of dimensions as ``rhs``.
    """
    vector = rhs.ndim == lower.ndim - 1
    if vector:
        rhs = rhs.unsqueeze(-1)
    low = [[entry.unsqueeze(-1) for entry in row] for row in _entries3(lower)]
    r0, r1, r2 = rhs.unbind(-2)
    x0 = r0 / low[0][0]
    x1 = (r1 - low[1][0] * x0) / low[1][1]
    x2 = (r2 - low[2][0] * x0 - low[2][1] * x1) / low[2][2]
    out = torch.stack([x0, x1, x2], dim=-2)
    return out.squeeze(-1) if vector else out


# ---- conditioning ----------------------------------------------------------------------------------------------
def conditioning_factors(gaussians: Gaussians6D) -> ConditioningFactors:
    """The view-independent factors of ``gaussians`` (differentiable)."""
    return factors_from_cholesky(gaussians.cholesky(), gaussians.means, gaussians.dir_means, gaussians.opacity,
                                 gaussians.sh, gaussians.labels)


def factors_from_cholesky(factor: torch.Tensor, means: torch.Tensor, dir_means: torch.Tensor,
                          opacity: torch.Tensor, sh: torch.Tensor, labels: torch.Tensor | None = None
                          ) -> ConditioningFactors:
    """:class:`ConditioningFactors` from any lower-triangular 6x6 Cholesky factors ``[N, 6, 6]`` with a positive
    diagonal (e.g. ``torch.linalg.cholesky`` of arbitrary SPD covariances), means ``[N, 3]``, direction means
    ``[N, 3]``, base opacities ``[N]`` (after the sigmoid) and SH ``[N, K, 3]``."""
    a, b, d = factor[:, :3, :3], factor[:, 3:, :3], factor[:, 3:, 3:]
    sigma_dd = b @ b.transpose(-1, -2) + d @ d.transpose(-1, -2)
    sigma_dp = b @ a.transpose(-1, -2)
    chol_dd = _cholesky3(sigma_dd)
    gain = _solve_lower3(chol_dd, sigma_dp)
    e = _solve_lower3(d, b)
    m = e.transpose(-1, -2) @ e + torch.eye(3, dtype=e.dtype, device=e.device)
    f_t = _solve_lower3(_cholesky3(m), a.transpose(-1, -2))
    cov = f_t.transpose(-1, -2) @ f_t
    return ConditioningFactors(means, dir_means, chol_dd, gain, cov, opacity, sh, labels)


def view_directions(means: torch.Tensor, camera_centers: torch.Tensor) -> torch.Tensor:
    """Unit directions from each camera centre ``[C, 3]`` to each mean ``[N, 3]``: ``[C, N, 3]``."""
    return torch.nn.functional.normalize(means.unsqueeze(0) - camera_centers.unsqueeze(1), dim=-1, eps=1e-12)


def condition(gaussians: Gaussians6D | ConditioningFactors, camera_centers, lam: float = DEFAULT_LAMBDA
              ) -> Gaussians3D:
    """Slice 6D Gaussians for cameras at ``camera_centers`` (RAS mm): ``[3]`` gives one view (``[N, ...]``
    tensors), ``[C, 3]`` a batch (``[C, N, ...]``; ``covs`` is then a broadcast view, identical for all views).

    ``gaussians`` may be precomputed :class:`ConditioningFactors` to skip the view-independent work.
    Differentiable with respect to every Gaussian parameter.
    """
    factors = gaussians if isinstance(gaussians, ConditioningFactors) else conditioning_factors(gaussians)
    centers = torch.as_tensor(camera_centers, dtype=factors.means.dtype, device=factors.means.device)
    if centers.shape[-1:] != (3,) or centers.ndim > 2:
        raise GaussianError(f"camera centres must be [3] or [C, 3], got {tuple(centers.shape)}")
    conditioned = condition_on_directions(factors, view_directions(factors.means, centers.reshape(-1, 3)), lam)
    return conditioned.view(0) if centers.ndim == 1 else conditioned


def condition_on_directions(gaussians: Gaussians6D | ConditioningFactors, directions, lam: float = DEFAULT_LAMBDA
                            ) -> Gaussians3D:
    """Slice 6D Gaussians for given unit view directions: ``[C, N, 3]`` (one per view and Gaussian) or ``[3]``
    (the same direction for every Gaussian, as seen by a distant camera; gives one view, ``[N, ...]``)."""
    factors = gaussians if isinstance(gaussians, ConditioningFactors) else conditioning_factors(gaussians)
    if lam < 0:
        raise GaussianError(f"lambda must be >= 0, got {lam}")
    dirs = torch.as_tensor(directions, dtype=factors.means.dtype, device=factors.means.device)
    single = dirs.ndim == 1
    if single:
        dirs = dirs.reshape(1, 1, 3).expand(1, len(factors.means), 3)
    if dirs.ndim != 3 or dirs.shape[1:] != factors.means.shape:
        raise GaussianError(f"view directions must be [3] or [C, N, 3] with N = {len(factors.means)}, "
                            f"got {tuple(dirs.shape)}")
    z = _solve_lower3(factors.chol_dd.unsqueeze(0), dirs - factors.dir_means)
    means = factors.means + (factors.gain * z.unsqueeze(-1)).sum(dim=-2)
    opacities = factors.opacity * torch.exp(-lam * (z * z).sum(dim=-1))
    colors = sh_to_color(factors.sh, dirs)
    covs = factors.cov.expand(dirs.shape[0], *factors.cov.shape)
    conditioned = Gaussians3D(means, covs, colors, opacities, factors.labels)
    return conditioned.view(0) if single else conditioned
