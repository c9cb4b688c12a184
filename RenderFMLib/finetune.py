"""Fine-tuning a predicted scene against reference views, and the confidence check after a prediction.

Fine-tuning (Render-FM's optional second stage) optimises the Gaussians a prediction produced — not the network —
against ``views`` cinematic reference renders (20 by default, as in the paper) under a time budget, and reports
PSNR before and after on held-out views that were never trained on.

The confidence check renders one or two low-resolution views with both the reference renderer and the
Gaussians and reports their PSNR; below :data:`CONFIDENCE_THRESHOLD_DB` it warns and suggests fine-tuning, so a
feedforward prediction never fails silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from .camera import Camera, orbit_cameras, sphere_cameras
from .metrics import psnr
from .optimize import OptimizationLog, evaluate_views, optimize_gaussians
from .pipeline import Scene, render_scene, render_scene_references

#: PSNR (dB) of the confidence check below which a prediction is reported as unreliable. Chosen from the
#: validation figures in docs/results/ (see README): typical predictions on CT score above it.
CONFIDENCE_THRESHOLD_DB = 20.0


@dataclass
class FinetuneReport:
    """Held-out PSNR before and after, iterations, seconds (optimisation) and reference-rendering seconds."""

    psnr_before: float
    psnr_after: float
    iterations: int
    seconds: float
    reference_seconds: float
    curve: list

    def to_dict(self) -> dict:
        return {"psnr_before": round(self.psnr_before, 3), "psnr_after": round(self.psnr_after, 3),
                "iterations": self.iterations, "seconds": round(self.seconds, 2),
                "reference_seconds": round(self.reference_seconds, 2), "curve": self.curve}


def _width_height(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def training_views(scene: Scene, count: int, size: int | tuple[int, int], seed: int = 1) -> list[Camera]:
    """``count`` views spread over the sphere around the scene (Fibonacci lattice); ``size`` pixels square or
    ``(width, height)``."""
    return sphere_cameras(scene.working.center_ras(), scene.working.radius_mm(), count, *_width_height(size),
                          seed=seed)


def held_out_views(scene: Scene, count: int, size: int | tuple[int, int]) -> list[Camera]:
    """``count`` orbit views at 20 degrees elevation, offset by half a step so none is a training view; ``size``
    as for :func:`training_views`."""
    return orbit_cameras(scene.working.center_ras(), scene.working.radius_mm(), count, *_width_height(size),
                         elevation_deg=20.0, start_azimuth_deg=180.0 / max(1, count))


def optimize_scene(scene: Scene, method: str, seconds: float | None = None, iterations: int | None = None,
                   views: int = 20, size: int = 128, sh_degree: int = 3,
                   held_out: list[tuple[Camera, np.ndarray]] | None = None,
                   progress: Callable[[float, float], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> tuple[Scene, OptimizationLog, float]:
    """Optimise ``scene``'s Gaussians against reference renders of ``views`` :func:`training_views` for
    ``seconds`` (or ``iterations``); ``held_out`` ``(camera, image)`` pairs give the PSNR-vs-time curve.

    Returns ``(optimized, log, reference_seconds)``: the scene with the new Gaussians, ``method`` and
    ``prep_seconds`` increased by the training references' rendering and the optimisation time (held-out
    evaluation is not counted), the :class:`~RenderFMLib.optimize.OptimizationLog` and the seconds spent rendering
    the training references. ``cancel()`` returning true while rendering references raises
    :class:`InterruptedError`; during optimisation it stops early.
    """
    start = time.perf_counter()
    cameras = training_views(scene, views, size)
    targets = render_scene_references(scene, cameras, cancel=cancel)
    reference_seconds = time.perf_counter() - start
    gaussians, log = optimize_gaussians(scene, cameras, targets, iterations=iterations, seconds=seconds,
                                        sh_degree=sh_degree, held_out=held_out,
                                        eval_every_s=max(5.0, seconds / 8) if seconds else 10.0,
                                        progress=progress, cancel=cancel)
    optimized = replace(scene, gaussians=gaussians, method=method,
                        prep_seconds=scene.prep_seconds + reference_seconds + log.seconds)
    return optimized, log, reference_seconds


def finetune_scene(scene: Scene, seconds: float = 60.0, views: int = 20, size: int = 128, held_out: int = 2,
                   iterations: int | None = None, sh_degree: int = 3,
                   progress: Callable[[float, float], None] | None = None,
                   cancel: Callable[[], bool] | None = None) -> tuple[Scene, FinetuneReport]:
    """Optimise ``scene``'s Gaussians against ``views`` reference renders for ``seconds`` (or ``iterations``),
    measuring PSNR on ``held_out`` :func:`held_out_views` before and after (see :func:`optimize_scene`).

    Returns the fine-tuned scene (``method`` gets a ``+finetune`` suffix; ``prep_seconds`` adds the reference
    rendering and optimisation time) and a :class:`FinetuneReport` (its ``reference_seconds`` covers the training
    and the held-out references).
    """
    start = time.perf_counter()
    checks = held_out_views(scene, held_out, size)
    held = list(zip(checks, render_scene_references(scene, checks, cancel=cancel), strict=True))
    held_seconds = time.perf_counter() - start
    before = evaluate_views(scene, None, held)["psnr"]
    tuned, log, reference_seconds = optimize_scene(scene, f"{scene.method}+finetune", seconds, iterations, views,
                                                   size, sh_degree, held, progress, cancel)
    after = log.curve[-1][1] if log.curve else evaluate_views(scene, tuned.gaussians, held)["psnr"]
    curve = [(round(t, 2), round(p, 3)) for t, p in log.curve]
    return tuned, FinetuneReport(before, after, log.iterations, log.seconds, reference_seconds + held_seconds, curve)


@dataclass
class Confidence:
    """Result of the confidence check: mean PSNR (dB) over the check views, per-view values, and the verdict."""

    psnr: float
    per_view: list[float]
    threshold: float
    seconds: float

    @property
    def ok(self) -> bool:
        return self.psnr >= self.threshold

    @property
    def message(self) -> str:
        if self.ok:
            return (f"confidence check passed: {self.psnr:.1f} dB PSNR against the reference renderer "
                    f"(threshold {self.threshold:.0f} dB)")
        return (f"low confidence: the prediction reaches only {self.psnr:.1f} dB PSNR against the reference "
                f"renderer (threshold {self.threshold:.0f} dB); this scan or transfer function may be unlike the "
                "training data. Fine-tune (renderfm finetune / the Fine-tune button) for a faithful result")

    def to_dict(self) -> dict:
        return {"psnr": round(self.psnr, 3), "per_view": [round(v, 3) for v in self.per_view],
                "threshold": self.threshold, "ok": self.ok, "seconds": round(self.seconds, 2)}


def confidence_check(scene: Scene, views: int = 2, size: int = 64, threshold: float = CONFIDENCE_THRESHOLD_DB,
                     cancel: Callable[[], bool] | None = None) -> Confidence:
    """Compare ``views`` low-resolution renders of the scene with the reference renderer (see module docstring).
    ``cancel()`` returning true raises :class:`InterruptedError`."""
    start = time.perf_counter()
    cameras = held_out_views(scene, views, size)
    references = render_scene_references(scene, cameras, cancel=cancel)
    values = [psnr(render_scene(scene, camera).rgb, reference) for camera, reference in zip(cameras, references,
                                                                                          strict=True)]
    return Confidence(float(np.mean(values)), values, threshold, time.perf_counter() - start)
