"""6D Gaussians (6DGS): a position-direction Gaussian per splat, with SH colour, opacity and an optional label.

Each of the ``N`` Gaussians has a 6D mean ``(mu_p, mu_d)`` — spatial mean in RAS mm and direction mean — and a
6x6 covariance over ``(p_x, p_y, p_z, d_x, d_y, d_z)`` stored through its Cholesky factor ``Sigma = L L^T``:

* ``L_ii = exp(a_i)`` from 6 log-diagonal parameters ``a``;
* ``L_ij = (2 sigmoid(b_ij) - 1) * L_ii`` for ``i > j`` from 15 off-diagonal parameters ``b``, listed row by row
  over the strictly-lower triangle: ``(1,0), (2,0), (2,1), (3,0), (3,1), (3,2), ...`` (see :data:`TRIL_ROWS`).

Every ``b`` maps to a valid factor, so any parameter values give a symmetric positive-definite covariance: the
form the optimiser and the network work in. :func:`params_from_covariance` goes back from a matrix.
Slicing for a view (the conditional 3D Gaussian) is in :mod:`RenderFMLib.conditioning`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from .errors import GaussianError
from .sh import C0, MAX_DEGREE, degree_from_coefficients, num_coefficients

#: Row and column indices of the strictly-lower triangle of a 6x6 matrix, row-major (15 entries).
TRIL_ROWS, TRIL_COLS = (tuple(int(v) for v in idx) for idx in np.tril_indices(6, k=-1))

#: Names of the floating-point tensors a :class:`Gaussians6D` holds (the optimisable parameters), in order.
PARAMETER_NAMES = ("means", "dir_means", "chol_log_diag", "chol_offdiag", "sh", "opacity_logit")

#: Largest |L_ij / L_ii| that :func:`params_from_covariance` produces when asked to clamp.
MAX_RATIO = 1.0 - 1e-6


# ---- Cholesky parameterisation ----------------------------------------------------------------------------------
def cholesky_factor(log_diag: torch.Tensor, offdiag: torch.Tensor) -> torch.Tensor:
    """Lower-triangular factor ``L`` ``[..., 6, 6]`` from ``log_diag`` ``[..., 6]`` and ``offdiag`` ``[..., 15]``.

    ``2 sigmoid(b) - 1`` is computed as the equal ``tanh(b / 2)``, which is more accurate near 0.
    """
    diag = torch.exp(log_diag)
    rows = torch.tensor(TRIL_ROWS, device=log_diag.device)
    factor = torch.diag_embed(diag)
    factor[..., rows, torch.tensor(TRIL_COLS, device=log_diag.device)] = torch.tanh(0.5 * offdiag) * diag[..., rows]
    return factor


def covariance_from_params(log_diag: torch.Tensor, offdiag: torch.Tensor) -> torch.Tensor:
    """The 6x6 covariance ``L L^T`` ``[..., 6, 6]`` (dims ``p_x, p_y, p_z, d_x, d_y, d_z``)."""
    factor = cholesky_factor(log_diag, offdiag)
    return factor @ factor.transpose(-1, -2)


def params_from_covariance(cov: torch.Tensor, clamp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`covariance_from_params`: ``(log_diag [..., 6], offdiag [..., 15])`` for SPD ``cov``.

    The parameterisation needs ``|L_ij| < L_ii`` in every row of the Cholesky factor. A covariance outside that
    set raises :class:`GaussianError`, unless ``clamp`` is true: then the ratios are clamped to
    ``+-MAX_RATIO`` and the result is the nearest representable factor (its covariance differs from ``cov``).
    Computed in float64, returned in ``cov``'s dtype; not differentiable.
    """
    with torch.no_grad():
        matrix = cov.detach().to(torch.float64)
        matrix = 0.5 * (matrix + matrix.transpose(-1, -2))
        factor, info = torch.linalg.cholesky_ex(matrix)
        if bool((info != 0).any()):
            raise GaussianError("covariance is not symmetric positive definite")
        diag = torch.diagonal(factor, dim1=-2, dim2=-1)
        ratios = factor[..., list(TRIL_ROWS), list(TRIL_COLS)] / diag[..., list(TRIL_ROWS)]
        if not clamp and bool((ratios.abs() >= MAX_RATIO).any()):
            worst = float(ratios.abs().max())
            raise GaussianError(f"covariance not representable: |L_ij / L_ii| reaches {worst:.6f} (must be < 1); "
                                "pass clamp=True to use the nearest representable factor")
        ratios = ratios.clamp(-MAX_RATIO, MAX_RATIO)
        return torch.log(diag).to(cov.dtype), (2.0 * torch.atanh(ratios)).to(cov.dtype)


def isotropic_params(count: int, spatial_std_mm, direction_std=10.0, device=None,
                     dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Cholesky parameters ``(log_diag [N, 6], offdiag [N, 15])`` of uncorrelated position and direction.

    ``spatial_std_mm`` (mm) and ``direction_std`` (unit-vector units) are scalars, ``[N]`` or ``[N, 3]``
    (per-axis); the off-diagonal parameters are zero (no correlation). A broad direction covariance (the default,
    10) makes the Gaussian nearly view-independent: see :mod:`RenderFMLib.conditioning`.
    """
    def per_axis(value, name):
        tensor = torch.as_tensor(value, dtype=torch.float64)
        if tensor.ndim == 1:
            tensor = tensor[:, None]
        tensor = torch.broadcast_to(tensor, (count, 3)) if tensor.ndim <= 2 else tensor
        if tensor.shape != (count, 3) or not bool((tensor > 0).all()) or not bool(torch.isfinite(tensor).all()):
            raise GaussianError(f"{name} must be positive and finite, a scalar, [N] or [N, 3] with N = {count}")
        return torch.log(tensor)

    try:
        log_diag = torch.cat([per_axis(spatial_std_mm, "spatial_std_mm"), per_axis(direction_std, "direction_std")],
                             dim=1)
    except RuntimeError as exc:  # broadcast failure
        raise GaussianError(f"standard deviations do not match {count} Gaussians: {exc}") from None
    return log_diag.to(device=device, dtype=dtype), torch.zeros(count, 15, device=device, dtype=dtype)


# ---- the container ----------------------------------------------------------------------------------------------
@dataclass
class Gaussians6D:
    """``N`` 6D Gaussians as torch tensors (one device, one float dtype).

    Attributes:
        means: ``[N, 3]`` spatial means ``mu_p`` (RAS mm).
        dir_means: ``[N, 3]`` direction means ``mu_d`` (not normalised; ``0`` makes opacity view-independent).
        chol_log_diag: ``[N, 6]`` log of the Cholesky factor's diagonal.
        chol_offdiag: ``[N, 15]`` strictly-lower entries (pre-activation), row-major; see module docstring.
        sh: ``[N, K, 3]`` SH coefficients, ``K = (degree + 1) ** 2`` (3DGS convention, linear RGB).
        opacity_logit: ``[N]`` opacity before the sigmoid.
        labels: ``[N]`` int16 segment labels, or ``None``.
    """

    means: torch.Tensor
    dir_means: torch.Tensor
    chol_log_diag: torch.Tensor
    chol_offdiag: torch.Tensor
    sh: torch.Tensor
    opacity_logit: torch.Tensor
    labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.validate(check_finite=False)

    # ---- construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_isotropic(cls, means, colors, opacities, spatial_std_mm, direction_std=10.0, dir_means=None,
                       sh_degree: int = 0, labels=None, dtype=torch.float32) -> "Gaussians6D":
        """Gaussians with given linear RGB ``colors`` ``[N, 3]`` (view-independent: higher SH bands zero),
        ``opacities`` ``[N]`` in (0, 1), and uncorrelated spatial / direction standard deviations
        (see :func:`isotropic_params`). ``dir_means`` defaults to zero, so the view-dependent opacity factor is the
        constant ``exp(-lam / direction_std**2)``. Tensors go to ``means``' device (numpy arrays to CPU)."""
        means = torch.as_tensor(means, dtype=dtype)
        device = means.device
        count = means.shape[0] if means.ndim == 2 else -1
        colors = torch.as_tensor(colors, dtype=dtype, device=device)
        opacities = torch.as_tensor(opacities, dtype=dtype, device=device)
        if count < 0 or colors.shape != (count, 3) or opacities.shape != (count,):
            raise GaussianError(f"expected means [N, 3], colors [N, 3], opacities [N]; got {tuple(means.shape)}, "
                                f"{tuple(colors.shape)}, {tuple(opacities.shape)}")
        if not bool(((opacities > 0) & (opacities < 1)).all()):
            raise GaussianError("opacities must lie strictly between 0 and 1")
        log_diag, offdiag = isotropic_params(count, spatial_std_mm, direction_std, device, dtype)
        sh = torch.zeros(count, num_coefficients(sh_degree), 3, dtype=dtype, device=device)
        sh[:, 0] = (colors - 0.5) / C0
        dir_means = (torch.zeros(count, 3, dtype=dtype, device=device) if dir_means is None
                     else torch.as_tensor(dir_means, dtype=dtype, device=device))
        if labels is not None:
            labels = torch.as_tensor(labels, device=device).to(torch.int16)
        gaussians = cls(means, dir_means, log_diag, offdiag, sh, torch.logit(opacities), labels)
        gaussians.validate()
        return gaussians

    # ---- checks ---------------------------------------------------------------------------------------------
    def validate(self, check_finite: bool = True) -> "Gaussians6D":
        """Check shapes, dtypes, devices (and finiteness); raises :class:`GaussianError`. Returns ``self``."""
        tensors = {name: getattr(self, name) for name in PARAMETER_NAMES}
        for name, tensor in tensors.items():
            if not isinstance(tensor, torch.Tensor):
                raise GaussianError(f"Gaussians6D.{name} must be a torch.Tensor, got {type(tensor).__name__}")
            if not tensor.is_floating_point():
                raise GaussianError(f"Gaussians6D.{name} must be floating point, got {tensor.dtype}")
        count = self.means.shape[0] if self.means.ndim == 2 else -1
        expected = {"means": (count, 3), "dir_means": (count, 3), "chol_log_diag": (count, 6),
                    "chol_offdiag": (count, 15), "opacity_logit": (count,)}
        for name, shape in expected.items():
            if count < 0 or tuple(tensors[name].shape) != shape:
                raise GaussianError(f"Gaussians6D.{name} has shape {tuple(tensors[name].shape)}, expected "
                                    f"{tuple('N' if s == count else s for s in shape)}")
        sh = self.sh
        if sh.ndim != 3 or sh.shape[0] != count or sh.shape[2] != 3:
            raise GaussianError(f"Gaussians6D.sh has shape {tuple(sh.shape)}, expected [N, K, 3]")
        try:
            degree_from_coefficients(sh.shape[1])
        except ValueError as exc:
            raise GaussianError(f"Gaussians6D.sh: {exc} (degree 0..{MAX_DEGREE})") from None
        dtypes = {t.dtype for t in tensors.values()}
        devices = {t.device for t in tensors.values()}
        if len(dtypes) > 1 or len(devices) > 1:
            raise GaussianError(f"Gaussians6D tensors must share one dtype and device, got {dtypes} on {devices}")
        if self.labels is not None:
            if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int16 \
                    or tuple(self.labels.shape) != (count,) or self.labels.device != self.means.device:
                raise GaussianError("Gaussians6D.labels must be an int16 tensor [N] on the same device, or None")
        if check_finite:
            for name, tensor in tensors.items():
                if not bool(torch.isfinite(tensor).all()):
                    bad = int((~torch.isfinite(tensor)).reshape(count, -1).any(dim=1).sum()) if count else 0
                    raise GaussianError(f"Gaussians6D.{name} has non-finite values in {bad} of {count} Gaussians")
        return self

    # ---- basic protocol -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.means.shape[0])

    def __getitem__(self, index) -> "Gaussians6D":
        """The Gaussians selected by an int, slice, index list/array/tensor or boolean mask (always 2D tensors)."""
        if isinstance(index, (int, np.integer)):
            position = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= position < len(self):
                raise IndexError(f"Gaussian index {index} out of range for {len(self)} Gaussians")
            index = slice(position, position + 1)
        elif isinstance(index, (list, np.ndarray)):
            index = torch.as_tensor(np.asarray(index))
        if isinstance(index, torch.Tensor):
            index = index.to(self.means.device)
            if index.dtype == torch.bool and tuple(index.shape) != (len(self),):
                raise IndexError(f"boolean mask of shape {tuple(index.shape)} for {len(self)} Gaussians")
        return self._map(lambda t: t[index])

    def _map(self, function) -> "Gaussians6D":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return Gaussians6D(**{name: None if value is None else function(value) for name, value in values.items()})

    @staticmethod
    def cat(items: list["Gaussians6D"]) -> "Gaussians6D":
        """Concatenate Gaussians; all must have the same SH degree, and labels on all or none."""
        items = list(items)
        if not items:
            raise GaussianError("cannot concatenate an empty list of Gaussians")
        if len({g.sh.shape[1] for g in items}) > 1:
            raise GaussianError("cannot concatenate Gaussians with different SH degrees (use with_sh_degree)")
        with_labels = {g.labels is not None for g in items}
        if len(with_labels) > 1:
            raise GaussianError("cannot concatenate labelled and unlabelled Gaussians")
        values = {name: torch.cat([getattr(g, name) for g in items]) for name in PARAMETER_NAMES}
        values["labels"] = torch.cat([g.labels for g in items]) if with_labels == {True} else None
        return Gaussians6D(**values)

    # ---- devices, grads -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    @property
    def sh_degree(self) -> int:
        """SH degree (0-3) from the number of coefficients."""
        return degree_from_coefficients(self.sh.shape[1])

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Gaussians6D":
        """Copy to ``device`` and/or float ``dtype`` (labels keep int16)."""
        def move(tensor):
            return tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)
        return self._map(move)

    def detach(self) -> "Gaussians6D":
        return self._map(lambda t: t.detach())

    def clone(self) -> "Gaussians6D":
        return self._map(lambda t: t.clone())

    def requires_grad_(self, requires_grad: bool = True) -> "Gaussians6D":
        """Set ``requires_grad`` on the parameter tensors in place (they must be leaves); returns ``self``."""
        for tensor in self.parameters().values():
            tensor.requires_grad_(requires_grad)
        return self

    def parameters(self) -> dict[str, torch.Tensor]:
        """The optimisable tensors by name (:data:`PARAMETER_NAMES`), e.g. for per-parameter learning rates."""
        return {name: getattr(self, name) for name in PARAMETER_NAMES}

    def with_sh_degree(self, degree: int) -> "Gaussians6D":
        """A copy with SH truncated to, or zero-padded up to, ``degree``."""
        count = num_coefficients(degree)
        current = self.sh.shape[1]
        if count <= current:
            sh = self.sh[:, :count]
        else:
            sh = torch.cat([self.sh, self.sh.new_zeros(len(self), count - current, 3)], dim=1)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["sh"] = sh
        return Gaussians6D(**values)

    # ---- derived quantities ---------------------------------------------------------------------------------
    @property
    def opacity(self) -> torch.Tensor:
        """Base opacity ``sigmoid(opacity_logit)`` ``[N]``."""
        return torch.sigmoid(self.opacity_logit)

    def cholesky(self) -> torch.Tensor:
        """Cholesky factors ``[N, 6, 6]``."""
        return cholesky_factor(self.chol_log_diag, self.chol_offdiag)

    def covariance(self) -> torch.Tensor:
        """6x6 covariances ``[N, 6, 6]``."""
        return covariance_from_params(self.chol_log_diag, self.chol_offdiag)

    def __repr__(self) -> str:
        labels = "" if self.labels is None else ", labelled"
        return f"Gaussians6D(N={len(self)}, sh_degree={self.sh_degree}, {self.dtype}, {self.device}{labels})"
