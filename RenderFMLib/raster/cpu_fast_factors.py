"""The view-independent conditioning factors on a CPU in numba, forwards and backwards.

:func:`RenderFMLib.conditioning.conditioning_factors` computes, per Gaussian, from its 6x6 Cholesky factor
``L = [[A, 0], [B, D]]`` (``A``, ``D`` lower triangular 3x3, ``B`` full 3x3; built from ``chol_log_diag [N, 6]``
and ``chol_offdiag [N, 15]``, see :func:`RenderFMLib.gaussians.cholesky_factor`):

1. ``S = B B^T + D D^T`` (``Sigma_dd``) and its Cholesky factor ``C`` (output ``chol_dd``);
2. ``G = C^-1 B A^T`` (output ``gain``);
3. ``E = D^-1 B``, ``K = chol(E^T E + I)``, ``F = K^-1 A^T`` and ``cov = F^T F`` (output ``cov``).

In torch autograd these small 3x3 steps are dozens of operations over ``[N, 3, 3]`` tensors and take about a third
of a CPU optimisation step. Here one parallel loop does the forward pass, and another recomputes it per Gaussian and
runs the reverse pass by hand (the derivatives of each scalar step of the element-wise 3x3 Cholesky factorisation
and forward substitution, in reverse order; pivots clamped at float32's ``tiny`` as the torch code does for float32
inputs, with zero gradient where clamped). float64 inside, the inputs' dtype outside. Checked against torch
autograd of the reference code on random Gaussians (``Testing/Python/test_conditioning.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import get_num_threads, njit, prange

from ..conditioning import ConditioningFactors
from ..gaussians import TRIL_COLS, TRIL_ROWS, Gaussians6D
from .cpu_fast import as_numpy

#: The torch code clamps Cholesky pivots at float32's smallest normal number.
_TINY = float(np.finfo(np.float32).tiny)
_ROWS = np.array(TRIL_ROWS, dtype=np.int64)
_COLS = np.array(TRIL_COLS, dtype=np.int64)


# ---- 3x3 building blocks on scratch arrays ------------------------------------------------------------------------
@njit(inline="always", cache=True)
def _build_factor(diag, ratio, g, rows, cols, lower):  # pragma: no cover - compiled
    """``lower [6, 6]`` <- Gaussian ``g``'s Cholesky factor: ``diag [N, 6]`` on the diagonal, ``ratio [N, 15]``
    times the row's diagonal below it (``rows``/``cols``: the strictly-lower positions), zeros above."""
    for i in range(6):
        for j in range(6):
            lower[i, j] = 0.0
        lower[i, i] = diag[g, i]
    for k in range(rows.shape[0]):
        lower[rows[k], cols[k]] = ratio[g, k] * diag[g, rows[k]]


@njit(inline="always", cache=True)
def _cholesky(s, c):  # pragma: no cover - compiled
    """``c`` <- the lower Cholesky factor of ``s`` (only ``s``'s lower triangle is read)."""
    c[0, 0] = math.sqrt(max(s[0, 0], _TINY))
    c[1, 0] = s[1, 0] / c[0, 0]
    c[2, 0] = s[2, 0] / c[0, 0]
    c[1, 1] = math.sqrt(max(s[1, 1] - c[1, 0] * c[1, 0], _TINY))
    c[2, 1] = (s[2, 1] - c[2, 0] * c[1, 0]) / c[1, 1]
    c[2, 2] = math.sqrt(max(s[2, 2] - c[2, 0] * c[2, 0] - c[2, 1] * c[2, 1], _TINY))
    c[0, 1] = 0.0
    c[0, 2] = 0.0
    c[1, 2] = 0.0


@njit(inline="always", cache=True)
def _cholesky_backward(s, c, gc, gs):  # pragma: no cover - compiled
    """``gs`` <- the gradient with respect to ``s``'s lower triangle (upper set to 0), given ``gc`` for ``c``'s
    lower triangle. ``gc`` is used as scratch."""
    for i in range(3):
        for j in range(3):
            gs[i, j] = 0.0
    # c22 = sqrt(s22 - c20^2 - c21^2)
    if s[2, 2] - c[2, 0] * c[2, 0] - c[2, 1] * c[2, 1] >= _TINY:
        g = gc[2, 2] / (2.0 * c[2, 2])
        gs[2, 2] += g
        gc[2, 0] -= 2.0 * c[2, 0] * g
        gc[2, 1] -= 2.0 * c[2, 1] * g
    # c21 = (s21 - c20 c10) / c11
    g = gc[2, 1] / c[1, 1]
    gs[2, 1] += g
    gc[2, 0] -= c[1, 0] * g
    gc[1, 0] -= c[2, 0] * g
    gc[1, 1] -= c[2, 1] * g
    # c11 = sqrt(s11 - c10^2)
    if s[1, 1] - c[1, 0] * c[1, 0] >= _TINY:
        g = gc[1, 1] / (2.0 * c[1, 1])
        gs[1, 1] += g
        gc[1, 0] -= 2.0 * c[1, 0] * g
    # c20 = s20 / c00, c10 = s10 / c00
    gs[2, 0] += gc[2, 0] / c[0, 0]
    gs[1, 0] += gc[1, 0] / c[0, 0]
    gc[0, 0] -= (c[2, 0] * gc[2, 0] + c[1, 0] * gc[1, 0]) / c[0, 0]
    # c00 = sqrt(s00)
    if s[0, 0] >= _TINY:
        gs[0, 0] += gc[0, 0] / (2.0 * c[0, 0])


@njit(inline="always", cache=True)
def _solve(low, rhs, x):  # pragma: no cover - compiled
    """``x [3, 3]`` <- ``low^-1 rhs`` by forward substitution (only ``low``'s lower triangle is read)."""
    for k in range(3):
        x[0, k] = rhs[0, k] / low[0, 0]
        x[1, k] = (rhs[1, k] - low[1, 0] * x[0, k]) / low[1, 1]
        x[2, k] = (rhs[2, k] - low[2, 0] * x[0, k] - low[2, 1] * x[1, k]) / low[2, 2]


@njit(inline="always", cache=True)
def _solve_backward(low, x, gx, glow, grhs):  # pragma: no cover - compiled
    """For ``x = low^-1 rhs``: ``glow`` (lower triangle) += and ``grhs`` <- the gradients, given ``gx``."""
    for k in range(3):
        g2 = gx[2, k] / low[2, 2]
        grhs[2, k] = g2
        glow[2, 0] -= x[0, k] * g2
        glow[2, 1] -= x[1, k] * g2
        glow[2, 2] -= x[2, k] * g2
        g1 = (gx[1, k] - low[2, 1] * g2) / low[1, 1]
        grhs[1, k] = g1
        glow[1, 0] -= x[0, k] * g1
        glow[1, 1] -= x[1, k] * g1
        g0 = (gx[0, k] - low[2, 0] * g2 - low[1, 0] * g1) / low[0, 0]
        grhs[0, k] = g0
        glow[0, 0] -= x[0, k] * g0


@njit(inline="always", cache=True)
def _forward_one(lower, s, c, p, gain, e, m, k, a_t, f, cov):  # pragma: no cover - compiled
    """The three factors of one Gaussian from its 6x6 factor ``lower`` (intermediates left in the scratch)."""
    for i in range(3):
        for j in range(3):
            total_s = 0.0
            total_p = 0.0
            for q in range(3):
                total_s += lower[3 + i, q] * lower[3 + j, q] + lower[3 + i, 3 + q] * lower[3 + j, 3 + q]
                total_p += lower[3 + i, q] * lower[j, q]
            s[i, j] = total_s
            p[i, j] = total_p
            a_t[i, j] = lower[j, i]
    _cholesky(s, c)
    _solve(c, p, gain)
    _solve(lower[3:, 3:], lower[3:, :3], e)
    for i in range(3):
        for j in range(3):
            total = 1.0 if i == j else 0.0
            for q in range(3):
                total += e[q, i] * e[q, j]
            m[i, j] = total
    _cholesky(m, k)
    _solve(k, a_t, f)
    for i in range(3):
        for j in range(3):
            total = 0.0
            for q in range(3):
                total += f[q, i] * f[q, j]
            cov[i, j] = total


@njit(parallel=True, cache=True)
def _factors_forward(diag, ratio, rows, cols, chunks, chol_dd, gain, cov):  # pragma: no cover - compiled
    """``chol_dd``, ``gain``, ``cov`` ``[N, 3, 3]`` <- the factors of every Gaussian, in ``chunks`` parallel runs
    of consecutive Gaussians (each with its own scratch)."""
    n = diag.shape[0]
    for chunk in prange(chunks):
        lower = np.empty((6, 6))
        work = np.empty((10, 3, 3))
        s, c, p, g, e, m, k, a_t, f, v = work[0], work[1], work[2], work[3], work[4], work[5], work[6], work[7], \
            work[8], work[9]
        for index in range(chunk * n // chunks, (chunk + 1) * n // chunks):
            _build_factor(diag, ratio, index, rows, cols, lower)
            _forward_one(lower, s, c, p, g, e, m, k, a_t, f, v)
            chol_dd[index, :, :] = c
            gain[index, :, :] = g
            cov[index, :, :] = v


@njit(parallel=True, cache=True)
def _factors_backward(diag, ratio, rows, cols, chunks, grad_chol_dd, grad_gain, grad_cov, grad_diag,
                      grad_ratio):  # pragma: no cover - compiled
    """Gradients of the loss with respect to ``diag [N, 6]`` and ``ratio [N, 15]`` (overwritten), given
    those with respect to the three factors ``[N, 3, 3]`` (the upper triangle of ``grad_chol_dd`` is ignored:
    ``chol_dd``'s upper entries are constant zeros)."""
    n = diag.shape[0]
    for chunk in prange(chunks):
        lower = np.empty((6, 6))
        glower = np.empty((6, 6))
        work = np.empty((21, 3, 3))
        s, c, p, g, e, m, k, a_t, f, v = work[0], work[1], work[2], work[3], work[4], work[5], work[6], work[7], \
            work[8], work[9]
        gc, gs, gp, ge, gm, gk, ga_t, gf, gb, gd, gg = work[10], work[11], work[12], work[13], work[14], work[15], \
            work[16], work[17], work[18], work[19], work[20]
        for index in range(chunk * n // chunks, (chunk + 1) * n // chunks):
            _build_factor(diag, ratio, index, rows, cols, lower)
            _forward_one(lower, s, c, p, g, e, m, k, a_t, f, v)
            for i in range(6):
                for j in range(6):
                    glower[i, j] = 0.0
            # cov = F^T F
            for i in range(3):
                for j in range(3):
                    total = 0.0
                    for q in range(3):
                        total += f[i, q] * (grad_cov[index, q, j] + grad_cov[index, j, q])
                    gf[i, j] = total
                    gk[i, j] = 0.0
                    gc[i, j] = grad_chol_dd[index, i, j] if j <= i else 0.0
                    gs[i, j] = 0.0
            # F = K^-1 A^T
            _solve_backward(k, f, gf, gk, ga_t)
            for i in range(3):
                for j in range(i + 1):
                    glower[i, j] += ga_t[j, i]
            # K = chol(M), M = E^T E + I
            _cholesky_backward(m, k, gk, gm)
            for i in range(3):
                for j in range(3):
                    total = 0.0
                    for q in range(3):
                        total += e[i, q] * (gm[q, j] + gm[j, q])
                    ge[i, j] = total
            # E = D^-1 B
            for i in range(3):
                for j in range(3):
                    gd[i, j] = 0.0
                    gg[i, j] = grad_gain[index, i, j]
            _solve_backward(lower[3:, 3:], e, ge, gd, gb)
            # G = C^-1 P
            _solve_backward(c, g, gg, gc, gp)
            # P = B A^T
            for i in range(3):
                for j in range(3):
                    total_b = 0.0
                    total_a = 0.0
                    for q in range(3):
                        total_b += gp[i, q] * lower[q, j]
                        total_a += gp[q, i] * lower[3 + q, j]
                    gb[i, j] += total_b
                    if j <= i:
                        glower[i, j] += total_a
            # C = chol(S), S = B B^T + D D^T
            _cholesky_backward(s, c, gc, gs)
            for i in range(3):
                for j in range(3):
                    total_b = 0.0
                    total_d = 0.0
                    for q in range(3):
                        sym = gs[i, q] + gs[q, i]
                        total_b += sym * lower[3 + q, j]
                        total_d += sym * lower[3 + q, 3 + j]
                    glower[3 + i, j] += gb[i, j] + total_b
                    if j <= i:
                        glower[3 + i, 3 + j] += gd[i, j] + total_d
            # lower[r, r] = diag[r]; lower[r, c] = ratio lower[r, r]
            for q in range(rows.shape[0]):
                r = rows[q]
                grad_ratio[index, q] = glower[r, cols[q]] * lower[r, r]
                glower[r, r] += glower[r, cols[q]] * ratio[index, q]
            for i in range(6):
                grad_diag[index, i] = glower[i, i]


def _chunks(count: int) -> int:
    """Parallel runs for ``count`` Gaussians: a few per numba thread, for load balance."""
    return max(1, min(count, 4 * get_num_threads()))


class _FactorsFunction(torch.autograd.Function):
    """``(diag [N, 6], ratio [N, 15])`` of the Cholesky factors -> ``(chol_dd, gain, cov)`` ``[N, 3, 3]``."""

    @staticmethod
    def forward(ctx, diag, ratio):
        outputs = [np.empty((diag.shape[0], 3, 3)) for _ in range(3)]
        _factors_forward(as_numpy(diag, np.float64), as_numpy(ratio, np.float64), _ROWS, _COLS,
                         _chunks(diag.shape[0]), *outputs)
        ctx.save_for_backward(diag, ratio)
        return tuple(torch.as_tensor(o, dtype=diag.dtype) for o in outputs)

    @staticmethod
    def backward(ctx, grad_chol_dd, grad_gain, grad_cov):
        diag, ratio = ctx.saved_tensors
        count = diag.shape[0]
        upstream = [np.zeros((count, 3, 3)) if g is None else as_numpy(g, np.float64)
                    for g in (grad_chol_dd, grad_gain, grad_cov)]
        grad_diag, grad_ratio = np.empty((count, 6)), np.empty((count, 15))
        _factors_backward(as_numpy(diag, np.float64), as_numpy(ratio, np.float64), _ROWS, _COLS, _chunks(count),
                          *upstream, grad_diag, grad_ratio)
        return torch.as_tensor(grad_diag, dtype=diag.dtype), torch.as_tensor(grad_ratio, dtype=ratio.dtype)


def conditioning_factors_cpu_fast(gaussians: Gaussians6D) -> ConditioningFactors:
    """:func:`RenderFMLib.conditioning.conditioning_factors` for Gaussians on the CPU, differentiable, with the
    Cholesky-derived factors computed in numba (the other fields are the Gaussians' own tensors)."""
    if gaussians.means.device.type != "cpu":
        raise ValueError(f"the cpu-fast conditioning factors need CPU tensors, got {gaussians.means.device}")
    # the element-wise activations stay in torch (vectorised exp/tanh; cheap to differentiate)
    ratio = torch.tanh(0.5 * gaussians.chol_offdiag)
    chol_dd, gain, cov = _FactorsFunction.apply(torch.exp(gaussians.chol_log_diag), ratio)
    return ConditioningFactors(gaussians.means, gaussians.dir_means, chol_dd, gain, cov, gaussians.opacity,
                               gaussians.sh, gaussians.labels)
