"""Fast CPU rasterizer with numba: interactive display, and the forward pass of CPU optimisation.

Same rules as the torch reference (:mod:`.project`), organised for a CPU (gradients: :mod:`.cpu_fast_grad`):

1. the per-view conditioning of 6D Gaussians (optional, from precomputed factors) and the EWA projection of
   :mod:`.project`, one Gaussian per thread iteration;
2. a stable LSD radix sort of the visible Gaussians by depth (positive float32 depths sort as their bit patterns);
3. the visible Gaussians are copied in depth order into one record each, then binned into 16x16 tiles by
   counting sort (each tile's list comes out sorted, and the tile loop reads memory forwards);
4. one parallel loop over tiles: each Gaussian touches only the pixels of its extent inside the tile, the
   exponential is skipped where ``alpha`` would fall below ``ALPHA_MIN``, and a tile stops as soon as all its
   pixels are done.

Kernels compile on first use and are cached on disk (``cache=True``: numba writes next to this file, or to its
user-wide cache folder when that is read-only, or to ``$NUMBA_CACHE_DIR``). ``fastmath`` is limited to flags that
keep NaN/inf semantics. Threads: numba's default (all cores; ``NUMBA_NUM_THREADS`` to change).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange

from ..camera import Camera
from ..conditioning import DEFAULT_LAMBDA, ConditioningFactors
from ..sh import C0, C1, C2, C3
from .project import (
    ALPHA_MAX,
    ALPHA_MIN,
    ANTIALIASED,
    EPS2D,
    NEAR_PLANE,
    T_MIN,
    TILE_SIZE,
    CameraParams,
    RasterOutput,
    finish,
)

#: fastmath flags that keep NaN and infinity semantics.
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
_RADIX_BITS = 11
#: numba's fallback "workqueue" threading layer aborts on concurrent parallel calls: renders are serialised.
_LOCK = threading.Lock()


@njit(cache=True)
def _radix_argsort(keys: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Stable argsort of uint32 ``keys`` (three 11-bit passes)."""
    n = keys.shape[0]
    order = np.arange(n).astype(np.int32)
    scratch = np.empty(n, dtype=np.int32)
    buckets = 1 << _RADIX_BITS
    mask = np.uint32(buckets - 1)
    for shift in range(0, 32, _RADIX_BITS):
        counts = np.zeros(buckets + 1, dtype=np.int64)
        for i in range(n):
            counts[((keys[i] >> np.uint32(shift)) & mask) + 1] += 1
        for b in range(buckets):
            counts[b + 1] += counts[b]
        for i in range(n):
            index = order[i]
            bucket = (keys[index] >> np.uint32(shift)) & mask
            scratch[counts[bucket]] = index
            counts[bucket] += 1
        order, scratch = scratch, order
    return order


@njit(parallel=True, cache=True)
def _gather_sorted(order, means2d, conics, opacities, colors, depths, bounds):  # pragma: no cover - compiled
    """Copy the Gaussians listed in ``order`` (depth order) into one contiguous record per Gaussian:
    ``(u, v, a, b, c, opacity, log(ALPHA_MIN / opacity), r, g, b, depth)`` float64 ``[M, 11]`` plus bounds
    ``[M, 4]``, so that the tile loop reads memory forwards."""
    count = order.shape[0]
    records = np.empty((count, 11))
    sorted_bounds = np.empty((count, 4), dtype=np.int32)
    for k in prange(count):
        g = order[k]
        records[k, 0] = means2d[g, 0]
        records[k, 1] = means2d[g, 1]
        records[k, 2] = conics[g, 0]
        records[k, 3] = conics[g, 1]
        records[k, 4] = conics[g, 2]
        records[k, 5] = opacities[g]
        records[k, 6] = math.log(ALPHA_MIN / opacities[g])  # power below this gives alpha < ALPHA_MIN
        records[k, 7] = colors[g, 0]
        records[k, 8] = colors[g, 1]
        records[k, 9] = colors[g, 2]
        records[k, 10] = depths[g]
        for j in range(4):
            sorted_bounds[k, j] = bounds[g, j]
    return records, sorted_bounds


@njit(cache=True)
def _bin_tiles(bounds, tiles_x, num_tiles):  # pragma: no cover - compiled
    """Counting sort of (tile, Gaussian) pairs for Gaussians ``0..M-1`` already in depth order (kept inside each
    tile). ``bounds`` ``[M, 4]`` are inclusive pixel ranges ``(x0, x1, y0, y1)``.

    Returns ``(tile_start [T + 1], tile_list [pairs])``.
    """
    start = np.zeros(num_tiles + 1, dtype=np.int64)
    for g in range(bounds.shape[0]):
        for ty in range(bounds[g, 2] // TILE_SIZE, bounds[g, 3] // TILE_SIZE + 1):
            for tx in range(bounds[g, 0] // TILE_SIZE, bounds[g, 1] // TILE_SIZE + 1):
                start[ty * tiles_x + tx + 1] += 1
    for t in range(num_tiles):
        start[t + 1] += start[t]
    cursor = start[:-1].copy()
    tile_list = np.empty(start[num_tiles], dtype=np.int32)
    for g in range(bounds.shape[0]):
        for ty in range(bounds[g, 2] // TILE_SIZE, bounds[g, 3] // TILE_SIZE + 1):
            for tx in range(bounds[g, 0] // TILE_SIZE, bounds[g, 1] // TILE_SIZE + 1):
                t = ty * tiles_x + tx
                tile_list[cursor[t]] = g
                cursor[t] += 1
    return start, tile_list


@njit(inline="always", fastmath=_FASTMATH)
def _sh_channel(sh, i, c, count, x, y, z):  # pragma: no cover - compiled
    """``0.5 + sum_k sh[i, k, c] Y_k(x, y, z)`` (3DGS basis, see :mod:`RenderFMLib.sh`)."""
    total = 0.5 + C0 * sh[i, 0, c]
    if count > 1:
        total += -C1 * y * sh[i, 1, c] + C1 * z * sh[i, 2, c] - C1 * x * sh[i, 3, c]
    if count > 4:
        xx = x * x
        yy = y * y
        zz = z * z
        total += (C2[0] * x * y * sh[i, 4, c] + C2[1] * y * z * sh[i, 5, c]
                  + C2[2] * (2.0 * zz - xx - yy) * sh[i, 6, c] + C2[3] * x * z * sh[i, 7, c]
                  + C2[4] * (xx - yy) * sh[i, 8, c])
        if count > 9:
            total += (C3[0] * y * (3.0 * xx - yy) * sh[i, 9, c] + C3[1] * x * y * z * sh[i, 10, c]
                      + C3[2] * y * (4.0 * zz - xx - yy) * sh[i, 11, c]
                      + C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy) * sh[i, 12, c]
                      + C3[4] * x * (4.0 * zz - xx - yy) * sh[i, 13, c] + C3[5] * z * (xx - yy) * sh[i, 14, c]
                      + C3[6] * x * (xx - 3.0 * yy) * sh[i, 15, c])
    return total


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _condition_kernel(means, dir_means, chol_dd, gain, opacity, sh, center, lam,
                      out_means, out_colors, out_opacities):  # pragma: no cover - compiled
    """Per-view part of 6DGS conditioning (see :mod:`RenderFMLib.conditioning`) plus SH colour, per Gaussian."""
    count = sh.shape[1]
    for i in prange(means.shape[0]):
        dx = means[i, 0] - center[0]
        dy = means[i, 1] - center[1]
        dz = means[i, 2] - center[2]
        norm = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
        x = dx / norm
        y = dy / norm
        z = dz / norm
        r0 = x - dir_means[i, 0]
        r1 = y - dir_means[i, 1]
        r2 = z - dir_means[i, 2]
        z0 = r0 / chol_dd[i, 0, 0]
        z1 = (r1 - chol_dd[i, 1, 0] * z0) / chol_dd[i, 1, 1]
        z2 = (r2 - chol_dd[i, 2, 0] * z0 - chol_dd[i, 2, 1] * z1) / chol_dd[i, 2, 2]
        for j in range(3):
            out_means[i, j] = means[i, j] + gain[i, 0, j] * z0 + gain[i, 1, j] * z1 + gain[i, 2, j] * z2
        out_opacities[i] = opacity[i] * math.exp(-lam * (z0 * z0 + z1 * z1 + z2 * z2))
        for c in range(3):
            out_colors[i, c] = max(_sh_channel(sh, i, c, count, x, y, z), 0.0)


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _project_kernel(means, covs, opacities, viewmat, intrinsics, ortho, limits, width, height, antialiased,
                    out_means2d, out_conics, out_depths, out_opacities, out_bounds, out_visible
                    ):  # pragma: no cover - compiled
    """The EWA projection of :func:`.project.project_gaussians`, per Gaussian, plus inclusive pixel bounds and
    the (anti-aliasing compensated) opacities."""
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    w = viewmat
    for i in prange(means.shape[0]):
        out_visible[i] = False
        px = w[0, 0] * means[i, 0] + w[0, 1] * means[i, 1] + w[0, 2] * means[i, 2] + w[0, 3]
        py = w[1, 0] * means[i, 0] + w[1, 1] * means[i, 1] + w[1, 2] * means[i, 2] + w[1, 3]
        depth = w[2, 0] * means[i, 0] + w[2, 1] * means[i, 1] + w[2, 2] * means[i, 2] + w[2, 3]
        out_depths[i] = depth
        if depth < NEAR_PLANE:
            continue
        # Jacobian J = [[j00, 0, j02], [0, j11, j12]]; single assignments (numba parfors mishandled tuple
        # assignments to variables defined in branches)
        if ortho:
            u = fx * px + cx
            v = fy * py + cy
            j00 = fx
            j11 = fy
            j02 = 0.0
            j12 = 0.0
        else:
            u = fx * px / depth + cx
            v = fy * py / depth + cy
            tx = depth * min(max(px / depth, -limits[0]), limits[1])
            ty = depth * min(max(py / depth, -limits[2]), limits[3])
            j00 = fx / depth
            j11 = fy / depth
            j02 = -fx * tx / (depth * depth)
            j12 = -fy * ty / (depth * depth)
        # T = J W (2x3); 2D covariance T Sigma T^T
        t00 = j00 * w[0, 0] + j02 * w[2, 0]
        t01 = j00 * w[0, 1] + j02 * w[2, 1]
        t02 = j00 * w[0, 2] + j02 * w[2, 2]
        t10 = j11 * w[1, 0] + j12 * w[2, 0]
        t11 = j11 * w[1, 1] + j12 * w[2, 1]
        t12 = j11 * w[1, 2] + j12 * w[2, 2]
        s0a = covs[i, 0, 0] * t00 + covs[i, 0, 1] * t01 + covs[i, 0, 2] * t02  # Sigma T0^T
        s1a = covs[i, 1, 0] * t00 + covs[i, 1, 1] * t01 + covs[i, 1, 2] * t02
        s2a = covs[i, 2, 0] * t00 + covs[i, 2, 1] * t01 + covs[i, 2, 2] * t02
        s0b = covs[i, 0, 0] * t10 + covs[i, 0, 1] * t11 + covs[i, 0, 2] * t12  # Sigma T1^T
        s1b = covs[i, 1, 0] * t10 + covs[i, 1, 1] * t11 + covs[i, 1, 2] * t12
        s2b = covs[i, 2, 0] * t10 + covs[i, 2, 1] * t11 + covs[i, 2, 2] * t12
        a = t00 * s0a + t01 * s1a + t02 * s2a + EPS2D
        b = 0.5 * ((t00 * s0b + t01 * s1b + t02 * s2b) + (t10 * s0a + t11 * s1a + t12 * s2a))
        c = t10 * s0b + t11 * s1b + t12 * s2b + EPS2D
        det = a * c - b * b
        if not det > 0.0 or not math.isfinite(det):
            continue
        opacity = opacities[i]
        if antialiased:
            ratio = ((a - EPS2D) * (c - EPS2D) - b * b) / det
            opacity = opacity * math.sqrt(max(ratio, 1e-12)) if ratio > 0.0 else 0.0
        if opacity < ALPHA_MIN:
            continue
        extent = math.sqrt(2.0 * math.log(max(255.0 * opacity, 1.0)))
        rx = math.ceil(extent * math.sqrt(max(a, 0.0)))
        ry = math.ceil(extent * math.sqrt(max(c, 0.0)))
        if rx <= 0 or ry <= 0 or u + rx <= 0 or u - rx >= width or v + ry <= 0 or v - ry >= height:
            continue
        out_visible[i] = True
        out_means2d[i, 0] = u
        out_means2d[i, 1] = v
        out_conics[i, 0] = c / det
        out_conics[i, 1] = -b / det
        out_conics[i, 2] = a / det
        out_opacities[i] = opacity
        out_bounds[i, 0] = min(max(math.ceil(u - rx - 0.5), 0), width - 1)
        out_bounds[i, 1] = min(max(math.floor(u + rx - 0.5), 0), width - 1)
        out_bounds[i, 2] = min(max(math.ceil(v - ry - 0.5), 0), height - 1)
        out_bounds[i, 3] = min(max(math.floor(v + ry - 0.5), 0), height - 1)


@njit(inline="always")
def tile_rect(t, tiles_x, width, height):  # pragma: no cover - compiled
    """Tile ``t``'s first pixel ``(px0, py0)`` and size ``(pw, ph)`` (edge tiles are cut at the image border)."""
    px0 = (t % tiles_x) * TILE_SIZE
    py0 = (t // tiles_x) * TILE_SIZE
    return px0, py0, min(TILE_SIZE, width - px0), min(TILE_SIZE, height - py0)


@njit(inline="always")
def span_in_tile(bounds, g, px0, py0, pw, ph):  # pragma: no cover - compiled
    """The pixels of Gaussian ``g``'s inclusive ``bounds`` inside the tile: ``(xa, xb, ya, yb)``, inclusive."""
    return (max(bounds[g, 0], px0), min(bounds[g, 1], px0 + pw - 1),
            max(bounds[g, 2], py0), min(bounds[g, 3], py0 + ph - 1))


@njit(inline="always", fastmath=_FASTMATH)
def splat_alpha(records, g, x, y):  # pragma: no cover - compiled
    """Gaussian ``g``'s (a row of :func:`_gather_sorted`'s records) alpha at pixel ``(x, y)``: ``(alpha, raw,
    falloff, dx, dy)`` with ``falloff = exp(-1/2 (a dx^2 + c dy^2) - b dx dy)`` at the offset ``(dx, dy)`` of the
    pixel centre from the Gaussian's, ``raw = opacity * falloff`` and ``alpha = min(ALPHA_MAX, raw)``; all three are
    0 outside the footprint (exponent > 0, or below the record's floor where ``alpha < ALPHA_MIN``). One rule for
    the forward and backward passes, so both blend exactly the same pixels."""
    dx = x + 0.5 - records[g, 0]
    dy = y + 0.5 - records[g, 1]
    power = -0.5 * records[g, 4] * dy * dy - (0.5 * records[g, 2] * dx + records[g, 3] * dy) * dx
    if power > 0.0 or power < records[g, 6]:
        return 0.0, 0.0, 0.0, dx, dy
    falloff = math.exp(power)
    raw = records[g, 5] * falloff
    return min(ALPHA_MAX, raw), raw, falloff, dx, dy


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _raster_tiles(tile_start, tile_list, records, bounds, width, height, tiles_x,
                  out_rgb, out_alpha, out_depth, out_end):  # pragma: no cover - compiled
    """Blend each tile's depth-sorted Gaussians (records of :func:`_gather_sorted`) into ``out_rgb [H, W, 3]``,
    ``out_alpha`` and ``out_depth [H, W]``. ``out_end [H, W]`` receives, per pixel, the position in ``tile_list``
    where blending stopped (exclusive): what the backward pass of :mod:`.cpu_fast_grad` replays."""
    num_tiles = tile_start.shape[0] - 1
    for t in prange(num_tiles):
        px0, py0, pw, ph = tile_rect(t, tiles_x, width, height)
        trans = np.ones(TILE_SIZE * TILE_SIZE)
        acc = np.zeros((TILE_SIZE * TILE_SIZE, 4))
        done = np.zeros(TILE_SIZE * TILE_SIZE, dtype=np.bool_)
        end = np.full(TILE_SIZE * TILE_SIZE, tile_start[t + 1])
        remaining = pw * ph
        for k in range(tile_start[t], tile_start[t + 1]):
            g = tile_list[k]
            xa, xb, ya, yb = span_in_tile(bounds, g, px0, py0, pw, ph)
            for y in range(ya, yb + 1):
                for x in range(xa, xb + 1):
                    i = (y - py0) * TILE_SIZE + (x - px0)
                    if done[i]:
                        continue
                    alpha = splat_alpha(records, g, x, y)[0]
                    if alpha < ALPHA_MIN:
                        continue
                    next_t = trans[i] * (1.0 - alpha)
                    if next_t < T_MIN:
                        done[i] = True
                        end[i] = k
                        remaining -= 1
                        continue
                    w = alpha * trans[i]
                    acc[i, 0] += w * records[g, 7]
                    acc[i, 1] += w * records[g, 8]
                    acc[i, 2] += w * records[g, 9]
                    acc[i, 3] += w * records[g, 10]
                    trans[i] = next_t
            if remaining == 0:
                break
        for ly in range(ph):
            for lx in range(pw):
                i = ly * TILE_SIZE + lx
                out_rgb[py0 + ly, px0 + lx, 0] = acc[i, 0]
                out_rgb[py0 + ly, px0 + lx, 1] = acc[i, 1]
                out_rgb[py0 + ly, px0 + lx, 2] = acc[i, 2]
                out_alpha[py0 + ly, px0 + lx] = 1.0 - trans[i]
                out_depth[py0 + ly, px0 + lx] = acc[i, 3]
                out_end[py0 + ly, px0 + lx] = end[i]


def as_numpy(tensor: torch.Tensor, dtype=np.float32) -> np.ndarray:
    """A contiguous CPU numpy copy (or view) of ``tensor`` in ``dtype``, detached."""
    return np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=dtype)


@dataclass
class TileBlend:
    """What one blend left behind for its backward pass (:mod:`.cpu_fast_grad`): ``order`` ``[M]`` int32 input
    index of each depth-sorted visible Gaussian, their ``records`` ``[M, 11]`` and pixel ``bounds`` ``[M, 4]``
    (see :func:`_gather_sorted`), the tile lists ``tile_start`` ``[T + 1]`` / ``tile_list`` ``[pairs]`` and per
    pixel the list position where blending stopped, ``end`` ``[H, W]``."""

    order: np.ndarray
    records: np.ndarray
    bounds: np.ndarray
    tile_start: np.ndarray
    tile_list: np.ndarray
    end: np.ndarray


def blend_projected(means2d, conics, opacities, colors, depths, bounds, visible, camera: CameraParams,
                    dtype=np.float32):
    """Blend projected Gaussians (numpy: ``means2d [N, 2]`` px, ``conics [N, 3]``, splatted ``opacities [N]``,
    ``colors [N, 3]``, ``depths [N]`` mm, inclusive pixel ``bounds [N, 4]``, ``visible [N]``) front to back.

    Returns ``(rgb [H, W, 3], alpha [H, W], depth [H, W] (weighted sum, not normalised), TileBlend)`` in
    ``dtype`` (the blend itself runs in float64; a backward pass wants float64 alpha, since it recovers the
    transmittance ``1 - alpha`` of nearly opaque pixels from it).
    """
    width, height = camera.width, camera.height
    tiles_x, tiles_y = camera.tiles
    ids = np.flatnonzero(visible).astype(np.int32)
    keys = np.ascontiguousarray(depths[ids], dtype=np.float32)
    order = ids[_radix_argsort(keys.view(np.uint32))]
    records, sorted_bounds = _gather_sorted(order, means2d, conics, opacities, colors, depths, bounds)
    tile_start, tile_list = _bin_tiles(sorted_bounds, tiles_x, tiles_x * tiles_y)
    rgb = np.zeros((height, width, 3), dtype=dtype)
    alpha = np.zeros((height, width), dtype=dtype)
    depth = np.zeros((height, width), dtype=dtype)
    end = np.zeros((height, width), dtype=np.int64)
    _raster_tiles(tile_start, tile_list, records, sorted_bounds, width, height, tiles_x, rgb, alpha, depth, end)
    return rgb, alpha, depth, TileBlend(order, records, sorted_bounds, tile_start, tile_list, end)


def _render_arrays(means, covs, colors, opacities, camera: CameraParams, background, return_depth,
                   antialiased: bool) -> RasterOutput:
    width, height = camera.width, camera.height
    count = means.shape[0]
    means2d = np.zeros((count, 2), dtype=np.float32)
    conics = np.zeros((count, 3), dtype=np.float32)
    depths = np.zeros(count, dtype=np.float32)
    splatted = np.zeros(count, dtype=np.float32)
    bounds = np.zeros((count, 4), dtype=np.int32)
    visible = np.zeros(count, dtype=np.bool_)
    _project_kernel(means, covs, opacities, camera.viewmat, camera.K, camera.ortho,
                    np.array(camera.jacobian_limits()), width, height, bool(antialiased), means2d, conics, depths,
                    splatted, bounds, visible)
    rgb, alpha, depth, _ = blend_projected(means2d, conics, splatted, colors, depths, bounds, visible, camera)
    return finish(torch.from_numpy(rgb), torch.from_numpy(alpha)[..., None],
                  torch.from_numpy(depth)[..., None] if return_depth else None, background)


def rasterize_cpu_fast(means, covs, colors, opacities, camera: CameraParams, background=None,
                       return_depth: bool = False, antialiased: bool = ANTIALIASED) -> RasterOutput:
    """Render single-view 3D Gaussians (``[N, 3]``, ``[N, 3, 3]``, ``[N, 3]``, ``[N]`` tensors) on the CPU.
    No gradients; returns float32 CPU tensors. Thread-safe (calls are serialised)."""
    with _LOCK:
        return _render_arrays(as_numpy(means), as_numpy(covs), as_numpy(colors), as_numpy(opacities), camera,
                              background, return_depth, antialiased)


def render_factors_cpu_fast(factors: ConditioningFactors, camera: Camera, lam: float = DEFAULT_LAMBDA,
                            background=None, return_depth: bool = False, antialiased: bool = ANTIALIASED
                            ) -> RasterOutput:
    """Condition (per-view part, from precomputed :class:`ConditioningFactors`) and render in compiled code.
    Thread-safe (calls are serialised)."""
    means = as_numpy(factors.means)
    count = means.shape[0]
    cond_means = np.empty((count, 3), dtype=np.float32)
    colors = np.empty((count, 3), dtype=np.float32)
    opacities = np.empty(count, dtype=np.float32)
    with _LOCK:
        _condition_kernel(means, as_numpy(factors.dir_means), as_numpy(factors.chol_dd), as_numpy(factors.gain),
                          as_numpy(factors.opacity), as_numpy(factors.sh),
                          np.asarray(camera.center, dtype=np.float64), float(lam), cond_means, colors, opacities)
        return _render_arrays(cond_means, as_numpy(factors.cov), colors, opacities,
                              CameraParams.from_camera(camera), background, return_depth, antialiased)
