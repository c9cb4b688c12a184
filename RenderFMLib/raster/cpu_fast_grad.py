"""Gradients for the cpu-fast rasterizer: the tile blend of :mod:`.cpu_fast` as a torch autograd function.

The EWA projection stays in PyTorch (:func:`.project.project_gaussians`, per-Gaussian work that autograd handles
well); only the blend — the per-pixel part that makes the torch reference slow on a CPU — runs in numba, forwards
and backwards:

* forward: :func:`.cpu_fast.blend_projected`, which also records per pixel where blending stopped;
* backward: one parallel loop over tiles that replays each tile's Gaussians back to front. With ``T`` the
  transmittance after Gaussian ``i`` (recovered as ``T_i = T_{i+1} / (1 - alpha_i)`` from the final value) and
  ``R`` the colour blended behind it (``R <- alpha_i c_i + (1 - alpha_i) R``), the 3DGS derivatives are
  ``dC/dc_i = alpha_i T_i``, ``dC/dalpha_i = T_i (c_i - R)`` and, for the accumulated alpha ``A = 1 - prod(1 -
  alpha)``, ``dA/dalpha_i = T_final / (1 - alpha_i)``; then ``alpha_i = o_i exp(p)`` with ``p = -1/2 (a dx^2 + c dy^2)
  - b dx dy`` (zero where ``alpha_i`` was clamped at ``ALPHA_MAX``). Every (tile, Gaussian) pair writes its own
  gradient row, and the rows are summed per Gaussian afterwards: deterministic, no atomics.

Gradients flow to the 2D means, conics, splatted opacities, colours and depths (through the depth image).
Checked against the torch reference on random scenes (``Testing/Python/test_raster_grad.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from .cpu_fast import _FASTMATH, _LOCK, TileBlend, as_numpy, blend_projected, span_in_tile, splat_alpha, tile_rect
from .project import (
    ALPHA_MAX,
    ALPHA_MIN,
    ANTIALIASED,
    TILE_SIZE,
    CameraParams,
    RasterOutput,
    finish,
    pixel_bounds,
    project_gaussians,
)

#: Columns of a gradient row: d/du, d/dv, d/da, d/db, d/dc (conic), d/dopacity, d/dr, d/dg, d/db (colour), d/ddepth.
_GRAD_COLUMNS = 10


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _blend_backward(tile_start, tile_list, records, bounds, end, alpha_image, width, height, tiles_x,
                    grad_rgb, grad_alpha, grad_depth, pair_grads):  # pragma: no cover - compiled
    """Replay each tile back to front and write ``pair_grads [pairs, 10]`` (row ``k`` belongs to the Gaussian
    ``tile_list[k]`` in that tile). Inputs as left by :func:`.cpu_fast.blend_projected`; ``grad_*`` are the
    gradients of the loss with respect to its rgb ``[H, W, 3]``, alpha and depth ``[H, W]`` images."""
    num_tiles = tile_start.shape[0] - 1
    pixels = TILE_SIZE * TILE_SIZE
    for t in prange(num_tiles):
        px0, py0, pw, ph = tile_rect(t, tiles_x, width, height)
        trans = np.zeros(pixels)  # transmittance after the Gaussian being replayed
        final = np.zeros(pixels)
        behind = np.zeros((pixels, 4))  # colour and depth blended behind it
        stop = np.zeros(pixels, dtype=np.int64)
        gradient = np.zeros((pixels, 5))  # dL/d(r, g, b, depth, alpha image)
        for ly in range(ph):
            for lx in range(pw):
                i = ly * TILE_SIZE + lx
                y = py0 + ly
                x = px0 + lx
                final[i] = 1.0 - alpha_image[y, x]
                trans[i] = final[i]
                stop[i] = end[y, x]
                gradient[i, 0] = grad_rgb[y, x, 0]
                gradient[i, 1] = grad_rgb[y, x, 1]
                gradient[i, 2] = grad_rgb[y, x, 2]
                gradient[i, 3] = grad_depth[y, x]
                gradient[i, 4] = grad_alpha[y, x]
        for k in range(tile_start[t + 1] - 1, tile_start[t] - 1, -1):
            g = tile_list[k]
            xa, xb, ya, yb = span_in_tile(bounds, g, px0, py0, pw, ph)
            a = records[g, 2]
            b = records[g, 3]
            c = records[g, 4]
            for y in range(ya, yb + 1):
                for x in range(xa, xb + 1):
                    i = (y - py0) * TILE_SIZE + (x - px0)
                    if k >= stop[i]:
                        continue
                    alpha, raw, falloff, dx, dy = splat_alpha(records, g, x, y)
                    if alpha < ALPHA_MIN:
                        continue
                    before = trans[i] / (1.0 - alpha)
                    weight = alpha * before
                    d_alpha = gradient[i, 4] * final[i] / (1.0 - alpha)
                    for ch in range(4):
                        value = records[g, 7 + ch]
                        pair_grads[k, 6 + ch] += weight * gradient[i, ch]
                        d_alpha += before * (value - behind[i, ch]) * gradient[i, ch]
                        behind[i, ch] = alpha * value + (1.0 - alpha) * behind[i, ch]
                    trans[i] = before
                    if raw > ALPHA_MAX:
                        continue
                    pair_grads[k, 5] += d_alpha * falloff
                    d_power = d_alpha * alpha
                    pair_grads[k, 0] += d_power * (a * dx + b * dy)
                    pair_grads[k, 1] += d_power * (c * dy + b * dx)
                    pair_grads[k, 2] += -0.5 * d_power * dx * dx
                    pair_grads[k, 3] += -d_power * dx * dy
                    pair_grads[k, 4] += -0.5 * d_power * dy * dy


@njit(cache=True)
def _sum_pairs(tile_list, order, pair_grads, out):  # pragma: no cover - compiled
    """``out[order[g]] += pair_grads[k]`` for every pair ``k`` of sorted Gaussian ``g = tile_list[k]``."""
    for k in range(tile_list.shape[0]):
        target = order[tile_list[k]]
        for j in range(pair_grads.shape[1]):
            out[target, j] += pair_grads[k, j]


class _TileBlendFunction(torch.autograd.Function):
    """``(means2d, conics, opacities, colors, depths)`` -> ``(rgb [H, W, 3], alpha [H, W], depth [H, W])``."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, depths, bounds: np.ndarray, visible: np.ndarray,
                camera: CameraParams):
        f64 = np.float64
        with _LOCK:
            rgb, alpha, depth, blend = blend_projected(
                as_numpy(means2d, f64), as_numpy(conics, f64), as_numpy(opacities, f64), as_numpy(colors, f64),
                as_numpy(depths), bounds, visible, camera, f64)
        ctx.blend, ctx.alpha, ctx.camera, ctx.count = blend, alpha, camera, means2d.shape[0]
        options = {"dtype": means2d.dtype, "device": means2d.device}
        return (torch.as_tensor(rgb, **options), torch.as_tensor(alpha, **options),
                torch.as_tensor(depth, **options))

    @staticmethod
    def backward(ctx, grad_rgb, grad_alpha, grad_depth):
        blend: TileBlend = ctx.blend
        camera: CameraParams = ctx.camera
        pair_grads = np.zeros((blend.tile_list.shape[0], _GRAD_COLUMNS))
        grads = np.zeros((ctx.count, _GRAD_COLUMNS))
        with _LOCK:
            _blend_backward(blend.tile_start, blend.tile_list, blend.records, blend.bounds, blend.end, ctx.alpha,
                            camera.width, camera.height, camera.tiles[0], as_numpy(grad_rgb, np.float64),
                            as_numpy(grad_alpha, np.float64), as_numpy(grad_depth, np.float64), pair_grads)
            _sum_pairs(blend.tile_list, blend.order, pair_grads, grads)
        dtype, device = grad_rgb.dtype, grad_rgb.device
        result = torch.as_tensor(grads, dtype=dtype, device=device)
        return result[:, 0:2], result[:, 2:5], result[:, 5], result[:, 6:9], result[:, 9], None, None, None


def rasterize_cpu_fast_differentiable(means, covs, colors, opacities, camera: CameraParams, background=None,
                                      return_depth: bool = False, antialiased: bool = ANTIALIASED) -> RasterOutput:
    """Like :func:`.cpu_fast.rasterize_cpu_fast` (``means [N, 3]``, ``covs [N, 3, 3]``, ``colors [N, 3]``,
    ``opacities [N]`` CPU tensors), differentiable with respect to all four: the projection runs in PyTorch, the
    blend in numba with the hand-written backward pass of this module. Thread-safe (blends are serialised)."""
    proj = project_gaussians(means, covs, opacities, camera, antialiased)
    with torch.no_grad():
        x0, x1, y0, y1 = pixel_bounds(proj.means2d, proj.radii, camera.width, camera.height)
        bounds = as_numpy(torch.stack([x0, x1, y0, y1], dim=-1), np.int32)
        visible = as_numpy(proj.visible, np.bool_)
    # culled Gaussians carry placeholder conics; they are never blended, so their gradients stay zero
    rgb, alpha, depth = _TileBlendFunction.apply(proj.means2d, proj.conics, proj.opacities, colors, proj.depths,
                                                 bounds, visible, camera)
    return finish(rgb, alpha[..., None], depth[..., None] if return_depth else None, background)
