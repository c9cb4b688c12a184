"""Optimisation-step benchmark: one fine-tuning step (conditioning, rasterization, loss, backward) per backend.

The scene is the raster benchmark's random CT-like cloud (:func:`.synthetic.make_scene`) with every 6D
parameter requiring gradients. A step renders one view on an orbit with the differentiable backend, takes the
fine-tuning loss (``0.8 L1 + 0.2 (1 - SSIM)`` against a fixed target) and back-propagates to all parameters — the
work of :func:`RenderFMLib.optimize.optimize_gaussians` per iteration, without Adam's update. The torch
reference backend is the baseline, timed in the same run.

Registered as the ``optimize`` suite of :mod:`RenderFMLib.bench` (``renderfm bench --optimize``).
"""

from __future__ import annotations

import statistics

import torch

from .bench import BenchConfig, BenchRow, suite, time_call
from .optimize import image_loss
from .raster import available_backends, render_gaussians
from .synthetic import make_scene, scene_cameras

#: Gaussian counts timed (a predicted CT scene at 3 mm holds about 70k-400k).
DEFAULT_COUNTS = (50_000, 200_000)


def step_seconds(backend: str, count: int, size: int, runs: int, warmup: int, device) -> list[float]:
    """Seconds per optimisation step (forward + loss + backward) of ``count`` Gaussians at ``size``^2."""
    gaussians = make_scene(count, device=device)
    gaussians.requires_grad_()
    cameras = scene_cameras(8, size)
    target = torch.full((size, size, 3), 0.25, device=device)
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else None
    state = {"view": 0}

    def step():
        camera = cameras[state["view"] % len(cameras)]
        state["view"] += 1
        for tensor in gaussians.parameters().values():
            tensor.grad = None
        loss = image_loss(render_gaussians(gaussians, camera, backend=backend).rgb.clamp(0, 1), target)
        loss.backward()

    return time_call(step, runs, warmup, synchronize)


@suite("optimize", "optimisation step (forward + loss + backward) per differentiable backend, vs torch")
def optimize_suite(config: BenchConfig) -> list[BenchRow]:
    """One row per (backend, count, size); case ``"<backend> <count> Gaussians"``, baseline the torch row."""
    from .reference import resolve_device

    device = resolve_device(config.device)
    others = [name for name in available_backends(device, needs_grad=True) if name != "torch"]
    rows = []
    for count in DEFAULT_COUNTS:
        for backend in ["torch"] + others:
            for size in config.sizes:
                times = step_seconds(backend, count, size, config.runs, config.warmup, device)
                case = f"{backend} {count:,} Gaussians"
                rows.append(BenchRow("optimize", case, size, statistics.median(times), times, str(device),
                                     baseline=None if backend == "torch" else f"torch {count:,} Gaussians",
                                     notes=f"{1.0 / statistics.median(times):.2f} steps/s"))
    return rows
