"""Running the network on a whole working volume and turning its output into Gaussians.

Large volumes run in overlapping patches (cubes of ``patch`` voxels, ``overlap`` voxels shared between
neighbours); each patch's output is read only at the voxels that carry a Gaussian and blended with a weight that
falls off towards the patch border, so the result has no seams and memory stays bounded by one patch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..gaussians import Gaussians6D
from .features import pad_to_multiple
from .unet import RenderFMUNet, residual_layout


def _starts(size: int, patch: int, step: int) -> list[int]:
    if size <= patch:
        return [0]
    starts = list(range(0, size - patch, step)) + [size - patch]
    return sorted(set(starts))


def _border_weight(patch: tuple[int, int, int], overlap: int, device) -> torch.Tensor:
    """Separable ramp weight ``[pk, pj, pi]``: 1 inside, falling linearly to ~0 over ``overlap`` at the borders."""
    axes = []
    for size in patch:
        index = torch.arange(size, device=device, dtype=torch.float32)
        distance = torch.minimum(index + 1, size - index)
        axes.append(torch.clamp(distance / max(1, overlap), max=1.0))
    return axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]


@torch.no_grad()
def predict_residuals(model: RenderFMUNet, features: torch.Tensor, voxel_index: torch.Tensor, patch: int = 96,
                      overlap: int = 16, progress: Callable[[float], None] | None = None,
                      cancel: Callable[[], bool] | None = None) -> torch.Tensor:
    """Network residuals ``[N, C]`` at the voxels ``voxel_index`` ``[N]`` (flat indices into ``[K, J, I]``).

    ``features`` ``[6, K, J, I]`` on the model's device. Patches are ``patch`` voxels per side (rounded to the
    network's divisor), stepping ``patch - overlap``. Mixed precision (bfloat16) is used on CUDA. ``progress`` is
    called with the finished fraction; ``cancel`` returning true stops with :class:`InterruptedError`.
    """
    divisor = model.config.divisor
    padded, sizes = pad_to_multiple(features, divisor)
    full = tuple(int(s) for s in padded.shape[1:])
    patch = max(divisor, int(math.ceil(patch / divisor)) * divisor)
    shape = tuple(min(patch, s) for s in full)
    step = max(divisor, patch - overlap)
    device = features.device
    channels = model.head.out_channels
    total = torch.zeros(voxel_index.numel(), channels, device=device)
    weights = torch.zeros(voxel_index.numel(), device=device)
    k_idx = voxel_index // (sizes[1] * sizes[2])
    j_idx = (voxel_index // sizes[2]) % sizes[1]
    i_idx = voxel_index % sizes[2]
    ramp = _border_weight(shape, overlap, device)
    grid = [(a, b, c) for a in _starts(full[0], shape[0], step) for b in _starts(full[1], shape[1], step)
            for c in _starts(full[2], shape[2], step)]
    use_amp = device.type == "cuda"
    for number, (a, b, c) in enumerate(grid):
        if cancel is not None and cancel():
            raise InterruptedError("prediction cancelled")
        inside = ((k_idx >= a) & (k_idx < a + shape[0]) & (j_idx >= b) & (j_idx < b + shape[1])
                  & (i_idx >= c) & (i_idx < c + shape[2]))
        if bool(inside.any()):
            block = padded[None, :, a:a + shape[0], b:b + shape[1], c:c + shape[2]]
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = model(block)[0].float()
            which = torch.nonzero(inside).squeeze(1)
            lk, lj, li = k_idx[which] - a, j_idx[which] - b, i_idx[which] - c
            w = ramp[lk, lj, li]
            total[which] += out[:, lk, lj, li].T * w[:, None]
            weights[which] += w
        if progress is not None:
            progress((number + 1) / len(grid))
    return total / weights.clamp(min=1e-6)[:, None]


def apply_residuals(base: Gaussians6D, residuals: torch.Tensor, spacing_mm: float, sh_degree: int) -> Gaussians6D:
    """Gaussians = analytic ``base`` + network ``residuals`` ``[N, C]`` (layout of :func:`residual_layout`).

    Position offsets are in units of the working spacing ``spacing_mm``; the others add to the parameters
    directly. ``base`` is raised to ``sh_degree`` first (new SH bands start at zero). Differentiable.
    """
    layout = residual_layout(sh_degree)
    base = base.with_sh_degree(sh_degree)

    def part(name):
        start, stop = layout[name]
        return residuals[:, start:stop].to(base.dtype)

    return Gaussians6D(
        means=base.means + part("position") * spacing_mm,
        dir_means=base.dir_means + part("dir_mean"),
        chol_log_diag=base.chol_log_diag + part("chol_log_diag"),
        chol_offdiag=base.chol_offdiag + part("chol_offdiag"),
        sh=base.sh + part("sh").reshape(-1, base.sh.shape[1], 3),
        opacity_logit=base.opacity_logit + part("opacity")[:, 0],
        labels=base.labels)
