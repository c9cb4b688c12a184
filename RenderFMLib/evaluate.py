"""Evaluation of every method against the cinematic reference on held-out views (``renderfm eval``).

Methods (keys of the result's ``methods``):

* ``vtk`` — classic VTK ray casting of the same working grid (what Slicer shows); ``prep_s`` is the first frame
  (volume upload and setup), ``fps`` from later frames.
* ``analytic`` — the analytic initialisation (no learning).
* ``feedforward`` — Render-FM: analytic + network residuals from the shipped (or given) weights.
* ``finetune`` — feedforward, then fine-tuned on ``train_views`` reference views for ``finetune_s`` seconds.
* ``per_scan`` — per-scan 6DGS optimisation from the analytic initialisation on the same views for
  ``per_scan_s`` seconds (the baseline the paper compares with).

``prep_s`` is the wall time from the volume to a renderable result, including the reference renders that
fine-tuning and per-scan optimisation train on. ``fps`` is the median over the held-out views of the display
render (cpu-fast on CPU, gsplat/torch on CUDA). PSNR/SSIM are averaged over the held-out views, which no method
trains on.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .camera import Camera
from .finetune import held_out_views, optimize_scene
from .metrics import psnr, ssim
from .pipeline import Scene, prepare_scene, render_scene, render_scene_references
from .transfer import TransferFunction
from .volume import Volume

ALL_METHODS = ("vtk", "analytic", "feedforward", "finetune", "per_scan")


@dataclass
class EvalSettings:
    """Budgets and sizes of an evaluation (defaults finish in minutes on a 2-core CPU at 128^2)."""

    views: int = 4
    size: int = 128
    train_views: int = 20
    finetune_s: float = 60.0
    per_scan_s: float = 120.0
    spacing_mm: float | None = None
    device: str = "auto"
    weights: str | None = None
    methods: tuple[str, ...] = ALL_METHODS


def _scores(images: list[np.ndarray], references: list[np.ndarray]) -> dict:
    values = [(psnr(a, b), ssim(a, b)) for a, b in zip(images, references, strict=True)]
    return {"psnr": float(np.mean([v[0] for v in values])), "ssim": float(np.mean([v[1] for v in values])),
            "per_view_psnr": [round(v[0], 3) for v in values]}


def _gaussian_method(scene: Scene, cameras: list[Camera], references: list[np.ndarray]) -> tuple[dict, list]:
    render_scene(scene, cameras[0])  # the first frame compiles/warms up (and caches conditioning); not timed
    rendered = [render_scene(scene, camera) for camera in cameras]
    result = _scores([r.rgb for r in rendered], references)
    result.update(prep_s=scene.prep_seconds, fps=1.0 / statistics.median(r.seconds for r in rendered),
                  gaussians=scene.num_gaussians, backend=rendered[0].backend)
    return result, [r.rgb for r in rendered]


def shared_spacing_mm(settings: EvalSettings) -> float | None:
    """The working spacing (mm) of every method in one evaluation, so that all share one grid and its references:
    ``settings.spacing_mm`` if given; else the network's spacing when a Render-FM method is evaluated (it was
    trained for that grid); else ``None`` (the device's default)."""
    if settings.spacing_mm is not None or not {"feedforward", "finetune"} & set(settings.methods):
        return settings.spacing_mm
    from .model.weights import read_header
    from .resources import default_weights_path

    return read_header(settings.weights or default_weights_path()).working_spacing_mm


def evaluate_volume(volume: Volume, tf: TransferFunction, settings: EvalSettings | None = None,
                    progress: Callable[[str], None] | None = None) -> tuple[dict, dict]:
    """Evaluate the methods of ``settings`` on ``volume`` with ``tf``.

    Returns ``(result, images)``: ``result`` is JSON-ready ``{"views", "size", "reference": "cinematic",
    "methods": {name: {"psnr", "ssim", "prep_s", "fps", ...}}}``; ``images`` maps ``"reference"`` and each method
    to its list of held-out images ``[H, W, 3]`` (tone-mapped linear RGB).
    """
    settings = settings or EvalSettings()
    say = progress or (lambda message: None)
    spacing_mm = shared_spacing_mm(settings)
    say("analytic initialisation")
    analytic = prepare_scene(volume, tf, method="analytic", spacing_mm=spacing_mm, device=settings.device)
    cameras = held_out_views(analytic, settings.views, settings.size)
    say("reference renders of the held-out views")
    references = render_scene_references(analytic, cameras)
    methods: dict[str, dict] = {}
    images: dict[str, list] = {"reference": references}
    if "vtk" in settings.methods:
        say("VTK ray casting")
        from .vtk_raycast import VtkRaycaster

        start = time.perf_counter()
        with VtkRaycaster(analytic.working, tf, mapper="auto") as caster:
            first = caster.render(cameras[0])
            prep = time.perf_counter() - start
            frames, times = [first[0]], []
            for camera in cameras[1:] + cameras[:1]:
                tic = time.perf_counter()
                frames.append(caster.render(camera)[0])
                times.append(time.perf_counter() - tic)
        vtk_images = frames[: len(cameras)]
        methods["vtk"] = {**_scores(vtk_images, references), "prep_s": prep, "fps": 1.0 / statistics.median(times)}
        images["vtk"] = vtk_images
    if "analytic" in settings.methods:
        methods["analytic"], images["analytic"] = _gaussian_method(analytic, cameras, references)
    feedforward = None
    if {"feedforward", "finetune"} & set(settings.methods):
        say("Render-FM feedforward prediction")
        feedforward = prepare_scene(volume, tf, method="model", spacing_mm=spacing_mm,
                                    device=settings.device, weights=settings.weights)
        if "feedforward" in settings.methods:
            methods["feedforward"], images["feedforward"] = _gaussian_method(feedforward, cameras, references)
    optimizations = (("finetune", feedforward, settings.finetune_s, "fine-tuning"),
                     ("per_scan", analytic, settings.per_scan_s, "per-scan optimisation"))
    for name, scene, seconds, activity in optimizations:
        if name in settings.methods:
            say(f"{activity} for {seconds:.0f} s")
            optimized, log, _ = optimize_scene(scene, name, seconds=seconds, views=settings.train_views,
                                               size=settings.size)
            methods[name], images[name] = _gaussian_method(optimized, cameras, references)
            methods[name]["iterations"] = log.iterations
    result = {"views": settings.views, "size": [settings.size, settings.size], "reference": "cinematic",
              "volume": volume.name, "tf": tf.name, "spacing_mm": analytic.info.get("spacing_mm"),
              "device": str(analytic.device), "methods": methods}
    return result, images


def markdown_table(results: list[dict]) -> str:
    """One markdown table row per (volume, TF, method): PSNR, SSIM, preparation seconds, FPS."""
    lines = ["| volume | TF | method | PSNR dB | SSIM | prep s | FPS |", "|---|---|---|---|---|---|---|"]
    for result in results:
        for name, values in result["methods"].items():
            lines.append(f"| {result['volume']} | {result['tf']} | {name} | {values['psnr']:.2f} | "
                         f"{values['ssim']:.3f} | {values['prep_s']:.1f} | {values['fps']:.1f} |")
    return "\n".join(lines) + "\n"
