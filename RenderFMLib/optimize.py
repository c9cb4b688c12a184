"""Per-scan optimisation of 6D Gaussians against reference views: the 6DGS baseline and the engine of fine-tuning.

The Gaussians themselves (not a network) are optimised with Adam and per-parameter learning rates (6DGS's
defaults, see ``../shared/notes/paper.md``; position in mm scaled by the working spacing) on
``0.8 * L1 + 0.2 * (1 - SSIM)`` between the tone-mapped rasterization and the cinematic reference, one random
training view per step. Stops after ``iterations`` steps or ``seconds`` of wall time, whichever comes first.
Densification and opacity resets are not done: starting from one Gaussian per visible voxel, the set is already
dense.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .camera import Camera
from .gaussians import Gaussians6D
from .metrics import psnr, ssim

#: Learning rates per parameter (position's is multiplied by the working spacing in mm).
LEARNING_RATES = {"means": 1.6e-4 * 100, "dir_means": 2.5e-3, "chol_log_diag": 1e-2, "chol_offdiag": 1e-2,
                  "sh_dc": 2.5e-3, "sh_rest": 2.5e-3 / 20, "opacity_logit": 5e-2}
#: Weight of the SSIM term in the loss (the L1 term has ``1 - SSIM_WEIGHT``).
SSIM_WEIGHT = 0.2


def image_loss(rgb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``0.8 L1 + 0.2 (1 - SSIM)`` of two ``[H, W, 3]`` images (differentiable, SSIM from pytorch-msssim)."""
    from pytorch_msssim import ssim as differentiable_ssim

    l1 = (rgb - target).abs().mean()
    window = 11 if min(rgb.shape[:2]) >= 11 else (min(rgb.shape[:2]) // 2) * 2 - 1
    structural = differentiable_ssim(rgb.permute(2, 0, 1)[None].clamp(0, 1), target.permute(2, 0, 1)[None],
                                     data_range=1.0, win_size=max(3, window))
    return (1.0 - SSIM_WEIGHT) * l1 + SSIM_WEIGHT * (1.0 - structural)


@dataclass
class OptimizationLog:
    """What an optimisation did: per-step losses, held-out PSNR checkpoints ``(seconds, psnr)``, totals."""

    losses: list[float] = field(default_factory=list)
    curve: list[tuple[float, float]] = field(default_factory=list)
    iterations: int = 0
    seconds: float = 0.0


def trainable_leaves(gaussians: Gaussians6D) -> dict[str, torch.Tensor]:
    """Detached leaf tensors to optimise, with SH split into DC ``[N, 1, 3]`` and rest ``[N, K-1, 3]``."""
    leaves = {name: getattr(gaussians, name).detach().clone().requires_grad_(True)
              for name in ("means", "dir_means", "chol_log_diag", "chol_offdiag", "opacity_logit")}
    leaves["sh_dc"] = gaussians.sh[:, :1].detach().clone().requires_grad_(True)
    leaves["sh_rest"] = gaussians.sh[:, 1:].detach().clone().requires_grad_(True)
    return leaves


def assemble(leaves: dict[str, torch.Tensor], labels: torch.Tensor | None) -> Gaussians6D:
    """Gaussians from :func:`trainable_leaves` (differentiable in every leaf)."""
    return Gaussians6D(leaves["means"], leaves["dir_means"], leaves["chol_log_diag"], leaves["chol_offdiag"],
                       torch.cat([leaves["sh_dc"], leaves["sh_rest"]], dim=1), leaves["opacity_logit"], labels)


def optimizer_for(leaves: dict[str, torch.Tensor], spacing_mm: float, scale: float = 1.0) -> torch.optim.Optimizer:
    """Adam over the leaves with the per-parameter learning rates (position's scaled by the spacing in mm)."""
    groups = []
    for name, tensor in leaves.items():
        if tensor.numel() == 0:
            continue
        rate = LEARNING_RATES[name] * (spacing_mm / 100.0 if name == "means" else 1.0)
        groups.append({"params": [tensor], "lr": rate * scale})
    return torch.optim.Adam(groups, eps=1e-15)


def optimize_gaussians(scene, views: list[Camera], targets: list[np.ndarray], iterations: int | None = 500,
                       seconds: float | None = None, sh_degree: int | None = None,
                       held_out: list[tuple[Camera, np.ndarray]] | None = None, eval_every_s: float = 10.0,
                       seed: int = 0, progress: Callable[[float, float], None] | None = None,
                       cancel: Callable[[], bool] | None = None, lr_scale: float = 1.0
                       ) -> tuple[Gaussians6D, OptimizationLog]:
    """Optimise a copy of ``scene.gaussians`` so their renders match ``targets`` (tone-mapped RGB ``[H, W, 3]``)
    from ``views``. Returns the new Gaussians (detached) and a log.

    ``sh_degree``: raise the SH degree first (view-dependent colour); default keeps it. ``held_out``: views and
    images never trained on, evaluated every ``eval_every_s`` seconds of optimisation for the PSNR-vs-time curve
    (evaluation time is not counted). ``progress(fraction, loss)``; ``cancel()`` returning true stops early and
    returns the current state. ``lr_scale`` multiplies every learning rate.
    """
    from .pipeline import render_scene

    if len(views) != len(targets) or not views:
        raise ValueError("need the same, non-zero number of views and target images")
    if iterations is None and seconds is None:
        raise ValueError("give iterations or seconds (or both)")
    initial = scene.gaussians
    if sh_degree is not None and sh_degree != initial.sh_degree:
        initial = initial.with_sh_degree(sh_degree)
    leaves = trainable_leaves(initial)
    labels = initial.labels
    optimizer = optimizer_for(leaves, float(np.mean(scene.working.spacing)), lr_scale)
    device = initial.device
    target_tensors = [torch.as_tensor(t, dtype=torch.float32, device=device) for t in targets]
    rng = np.random.default_rng(seed)
    log = OptimizationLog()
    start = time.perf_counter()
    eval_seconds = 0.0
    next_eval = 0.0
    step = 0
    while True:
        elapsed = time.perf_counter() - start - eval_seconds
        if held_out and elapsed >= next_eval:
            tic = time.perf_counter()
            log.curve.append((elapsed, evaluate_views(scene, assemble(leaves, labels), held_out)["psnr"]))
            eval_seconds += time.perf_counter() - tic
            next_eval = elapsed + eval_every_s
        if (iterations is not None and step >= iterations) or (seconds is not None and elapsed >= seconds):
            break
        if cancel is not None and cancel():
            break
        index = int(rng.integers(len(views)))
        rgb, _ = render_scene(scene, views[index], backend="auto", gaussians=assemble(leaves, labels),
                              differentiable=True)
        loss = image_loss(rgb, target_tensors[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            leaves["chol_log_diag"].clamp_(max=math.log(50.0))
        log.losses.append(float(loss.detach()))
        step += 1
        if progress is not None:
            elapsed = time.perf_counter() - start - eval_seconds
            fraction = max(step / iterations if iterations else 0.0, elapsed / seconds if seconds else 0.0)
            progress(min(1.0, fraction), log.losses[-1])
    log.iterations = step
    log.seconds = time.perf_counter() - start - eval_seconds
    result = assemble({name: tensor.detach() for name, tensor in leaves.items()}, labels)
    if held_out and (not log.curve or log.curve[-1][0] < log.seconds):
        log.curve.append((log.seconds, evaluate_views(scene, result, held_out)["psnr"]))
    return result, log


def random_gaussians(volume, count: int, seed: int = 0, opacity: float = 0.1, device="cpu") -> Gaussians6D:
    """``count`` Gaussians at uniformly random positions in the box of ``volume``'s voxel centres (a random start
    for per-scan optimisation): random colours in [0, 1], base opacity ``opacity``, isotropic spatial standard
    deviation of one voxel, broad direction covariance, SH degree 0."""
    generator = torch.Generator().manual_seed(seed)
    ijk = torch.rand(count, 3, generator=generator, dtype=torch.float64) * (
        torch.tensor(volume.shape[::-1], dtype=torch.float64) - 1.0)
    matrix = torch.as_tensor(volume.ijk_to_ras, dtype=torch.float64)
    means = (ijk @ matrix[:3, :3].T + matrix[:3, 3]).to(torch.float32)
    colors = torch.rand(count, 3, generator=generator)
    return Gaussians6D.from_isotropic(means, colors, torch.full((count,), float(opacity)),
                                      float(np.mean(volume.spacing))).to(device)


def evaluate_views(scene, gaussians: Gaussians6D | None, views: list[tuple[Camera, np.ndarray]],
                   backend: str = "auto") -> dict:
    """Mean PSNR/SSIM of ``gaussians`` (default the scene's) against reference images over ``(camera, image)``."""
    from .pipeline import render_scene

    scores = []
    for camera, reference in views:
        image = render_scene(scene, camera, backend=backend, gaussians=None if gaussians is None else
                             gaussians.detach())
        scores.append((psnr(image.rgb, reference), ssim(image.rgb, reference)))
    values = np.array(scores)
    return {"psnr": float(values[:, 0].mean()), "ssim": float(values[:, 1].mean()),
            "per_view_psnr": values[:, 0].round(3).tolist()}
