"""The reference rasterizer: tiled, pure PyTorch, differentiable, on CPU or CUDA, with bounded memory.

Visible Gaussians are sorted by depth and listed per tile (``TILE`` x ``TILE`` pixels; 8 by default: dense
evaluation pays for every pixel of every tile a Gaussian touches, and small tiles waste less of it — the image does
not depend on the tile size). Tiles are then processed in depth blocks of ``BLOCK`` Gaussians, a chunk of tiles at a
time, carrying each pixel's transmittance from block to block; a tile leaves the loop once all its pixels are done.
Each (chunk, block) unit evaluates ``tiles x BLOCK x TILE^2`` Gaussian-pixel pairs, and chunks are sized so that
this stays under ``max_pairs``. With gradients enabled every unit runs under activation checkpointing, so the
backward pass recomputes it instead of storing it: memory stays bounded by one unit plus per-tile state, whatever
the number of Gaussians.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from .project import (
    ALPHA_MAX,
    ALPHA_MIN,
    ANTIALIASED,
    T_MIN,
    CameraParams,
    RasterOutput,
    finish,
    pixel_bounds,
    project_gaussians,
)

#: Tile side in pixels (any size gives the same image: extents are exact, see .project).
TILE = 8
#: Gaussians per depth block.
BLOCK = 128
#: Default largest number of Gaussian-pixel pairs evaluated at once (about 16 MB per float32 intermediate).
MAX_PAIRS = 1 << 22



def _blend_unit(means2d, conics, opacities, colors, depths, valid, pixels, transmittance):
    """Blend one depth block into a chunk of tiles.

    Args: per-slot Gaussian data ``[n, B, ...]``, ``valid`` ``[n, B]``, pixel centres ``[n, P, 2]``, incoming
    transmittance ``[n, P]``. Returns ``(rgb [n, P, 3], alpha [n, P], depth [n, P], transmittance [n, P])``.
    """
    dx = pixels[:, None, :, 0] - means2d[:, :, None, 0]
    dy = pixels[:, None, :, 1] - means2d[:, :, None, 1]
    a, b, c = (conics[:, :, i, None] for i in range(3))
    power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
    alpha = torch.clamp_max(opacities[:, :, None] * torch.exp(power), ALPHA_MAX)
    alpha = alpha * (valid[:, :, None] & (power <= 0) & (alpha >= ALPHA_MIN))
    # transmittance after each Gaussian, through a log-space cumulative sum (cheaper to differentiate than cumprod)
    t_incl = transmittance[:, None, :] * torch.exp(torch.cumsum(torch.log1p(-alpha), dim=1))
    # w_i = alpha_i T_before_i = alpha_i / (1 - alpha_i) T_after_i, for pixels not yet done
    weights = alpha / (1.0 - alpha) * t_incl * (t_incl >= T_MIN)
    rgb = torch.einsum("nbp,nbc->npc", weights, colors)
    return rgb, weights.sum(dim=1), torch.einsum("nbp,nb->np", weights, depths), t_incl[:, -1]


def rasterize_torch(means, covs, colors, opacities, camera: CameraParams, background=None,
                    return_depth: bool = False, max_pairs: int = MAX_PAIRS, tile: int = TILE,
                    antialiased: bool = ANTIALIASED) -> RasterOutput:
    """Render single-view 3D Gaussians (``means [N, 3]``, ``covs [N, 3, 3]``, ``colors [N, 3]``,
    ``opacities [N]``) with the rules of :mod:`.project`. Differentiable with respect to all four."""
    device, dtype = means.device, means.dtype
    width, height = camera.width, camera.height
    tiles_x, tiles_y = -(-width // tile), -(-height // tile)
    num_tiles = tiles_x * tiles_y
    pixels_per_tile = tile * tile
    proj = project_gaussians(means, covs, opacities, camera, antialiased)

    with torch.no_grad():
        ids = torch.nonzero(proj.visible).squeeze(1)
        ids = ids[torch.sort(proj.depths[ids], stable=True).indices]
        x0, x1, y0, y1 = pixel_bounds(proj.means2d[ids], proj.radii[ids], width, height)
        tx0, tx1 = (x0 // tile).long(), (x1 // tile).long()
        ty0, ty1 = (y0 // tile).long(), (y1 // tile).long()
        spans_x = (tx1 - tx0 + 1).clamp_min(0)
        counts = spans_x * (ty1 - ty0 + 1).clamp_min(0) * ((x1 >= x0) & (y1 >= y0))
        owner = torch.repeat_interleave(torch.arange(len(ids), device=device), counts)
        first = torch.cumsum(counts, 0) - counts
        local = torch.arange(len(owner), device=device) - first[owner]
        tile_of_pair = (ty0[owner] + local // spans_x[owner]) * tiles_x + tx0[owner] + local % spans_x[owner]
        order = torch.sort(tile_of_pair, stable=True).indices
        pair_gaussian = ids[owner[order]]  # depth order within each tile
        tile_count = torch.bincount(tile_of_pair, minlength=num_tiles)
        tile_start = torch.cumsum(tile_count, 0) - tile_count
        offsets = torch.arange(pixels_per_tile, device=device)
        tile_x = torch.arange(num_tiles, device=device) % tiles_x
        tile_y = torch.arange(num_tiles, device=device) // tiles_x
        px = tile_x[:, None] * tile + offsets % tile
        py = tile_y[:, None] * tile + offsets // tile
        pixels = torch.stack([px, py], dim=-1).to(dtype) + 0.5  # [T, P, 2]
        inside = (px < width) & (py < height)

    # transmittance starts at 1 inside the image and 0 on the padding of edge tiles (so they finish early)
    transmittance = inside.to(dtype)
    outputs = []  # (tiles, rgb, alpha, depth) per unit, summed at the end
    slots = torch.arange(BLOCK, device=device)
    chunk = max(1, max_pairs // (BLOCK * pixels_per_tile))
    use_checkpoint = torch.is_grad_enabled() and any(
        t.requires_grad for t in (means, covs, colors, opacities))
    block = 0
    while True:
        with torch.no_grad():
            active = torch.nonzero((tile_count > block * BLOCK) & (transmittance.amax(dim=1) >= T_MIN)).squeeze(1)
        if len(active) == 0:
            break
        for start in range(0, len(active), chunk):
            tiles = active[start:start + chunk]
            with torch.no_grad():
                index = block * BLOCK + slots
                valid = index[None, :] < tile_count[tiles, None]
                pair = (tile_start[tiles, None] + index[None, :]).clamp_max(max(len(pair_gaussian) - 1, 0))
                gid = pair_gaussian[pair]
            args = (proj.means2d[gid], proj.conics[gid], proj.opacities[gid], colors[gid], proj.depths[gid], valid,
                    pixels[tiles], transmittance[tiles])
            if use_checkpoint:
                out = checkpoint(_blend_unit, *args, use_reentrant=False)
            else:
                out = _blend_unit(*args)
            outputs.append((tiles,) + out[:3])
            transmittance = transmittance.index_copy(0, tiles, out[3])
        block += 1

    def assemble(part: int, channels: int) -> torch.Tensor:
        flat = torch.zeros(num_tiles, pixels_per_tile, channels, dtype=dtype, device=device)
        if outputs:
            values = torch.cat([o[part].reshape(len(o[0]), pixels_per_tile, channels) for o in outputs])
            flat = flat.index_add(0, torch.cat([o[0] for o in outputs]), values)
        image = flat.reshape(tiles_y, tiles_x, tile, tile, channels).permute(0, 2, 1, 3, 4)
        return image.reshape(tiles_y * tile, tiles_x * tile, channels)[:height, :width]

    return finish(assemble(1, 3), assemble(2, 1), assemble(3, 1) if return_depth else None, background)
