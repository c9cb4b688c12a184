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
from .optimize import evaluate_views, optimize_gaussians
from .pipeline import Scene, render_scene, render_scene_reference

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


def training_views(scene: Scene, count: int, size: int, seed: int = 1) -> list[Camera]:
    """``count`` views spread over the sphere around the scene (Fibonacci lattice), ``size`` pixels square."""
    return sphere_cameras(scene.working.center_ras(), scene.working.radius_mm(), count, size, size, seed=seed)


def held_out_views(scene: Scene, count: int, size: int) -> list[Camera]:
    """``count`` orbit views at 20 degrees elevation, offset by half a step so none is a training view."""
    return orbit_cameras(scene.working.center_ras(), scene.working.radius_mm(), count, size, size,
                         elevation_deg=20.0, start_azimuth_deg=180.0 / max(1, count))


def finetune_scene(scene: Scene, seconds: float = 60.0, views: int = 20, size: int = 128, held_out: int = 2,
                   iterations: int | None = None, sh_degree: int = 3,
                   progress: Callable[[float, float], None] | None = None,
                   cancel: Callable[[], bool] | None = None,
                   held_out_cameras: list[Camera] | None = None) -> tuple[Scene, FinetuneReport]:
    """Optimise ``scene``'s Gaussians against ``views`` reference renders for ``seconds`` (or ``iterations``).

    Returns the fine-tuned scene (``method`` gets a ``+finetune`` suffix; ``prep_seconds`` adds the reference
    rendering and optimisation time) and a :class:`FinetuneReport`.
    """
    start = time.perf_counter()
    cameras = training_views(scene, views, size)
    targets = [render_scene_reference(scene, camera)[0] for camera in cameras]
    checks = held_out_cameras or held_out_views(scene, held_out, size)
    held = [(camera, render_scene_reference(scene, camera)[0]) for camera in checks]
    reference_seconds = time.perf_counter() - start
    before = evaluate_views(scene, None, held)["psnr"]
    gaussians, log = optimize_gaussians(scene, cameras, targets, iterations=iterations, seconds=seconds,
                                        sh_degree=sh_degree, held_out=held, eval_every_s=max(5.0, seconds / 8),
                                        progress=progress, cancel=cancel)
    after = log.curve[-1][1] if log.curve else evaluate_views(scene, gaussians, held)["psnr"]
    tuned = replace(scene, gaussians=gaussians, method=f"{scene.method}+finetune",
                    prep_seconds=scene.prep_seconds + time.perf_counter() - start)
    curve = [(round(t, 2), round(p, 3)) for t, p in log.curve]
    return tuned, FinetuneReport(before, after, log.iterations, log.seconds, reference_seconds, curve)


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
    values = []
    for camera in held_out_views(scene, views, size):
        if cancel is not None and cancel():
            raise InterruptedError("cancelled")
        reference = render_scene_reference(scene, camera)[0]
        values.append(psnr(render_scene(scene, camera).rgb, reference))
    return Confidence(float(np.mean(values)), values, threshold, time.perf_counter() - start)
