"""Rasterizer benchmark: frames per second per backend, image size and Gaussian count, conditioning included.

A scene is a random CT-like cloud (:func:`.synthetic.make_scene`: Gaussians of about 1.5 mm in a 300 mm box,
view-dependent SH of degree 3, correlated 6D covariances). For each (backend, count, size) the view-independent
conditioning factors are computed once (reported as ``prep_s``, as an interactive viewer would keep them), then
every frame conditions the Gaussians for a new camera on an orbit and rasterizes them: ``warmup`` frames, then
``runs`` timed frames; the median gives ``fps``. CUDA work is synchronised before each clock reading.

Registered as the ``raster`` suite of :mod:`RenderFMLib.bench` (``renderfm bench --raster``), with VTK's CPU ray
caster on the benchmark phantom timed in the same run as the baseline.
"""

from __future__ import annotations

import statistics
import time

import torch

from .bench import BenchConfig, BenchRow, bench_volume, suite, time_call
from .camera import orbit_cameras
from .conditioning import conditioning_factors
from .raster import available_backends, render_gaussians
from .synthetic import make_scene, scene_cameras

DEFAULT_SIZES = (256, 512)
DEFAULT_COUNTS = (50_000, 200_000, 1_000_000)


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def run_raster_bench(sizes=DEFAULT_SIZES, counts=DEFAULT_COUNTS, backends=None, runs: int = 5, warmup: int = 1,
                     device=None, progress=None) -> list[dict]:
    """Benchmark rows, one per (backend, count, size): ``{"backend", "device", "gaussians", "width", "height",
    "runs", "median_s", "runs_s", "fps", "prep_s"}``.

    ``backends`` defaults to every backend available for ``device`` (CUDA if present, else CPU); cpu-fast always
    renders on the CPU. ``progress`` is called with a short text before each measurement.
    """
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    backends = list(backends) if backends is not None else available_backends(device)
    rows = []
    for count in counts:
        scene = make_scene(count)
        for backend in backends:
            on = torch.device("cpu") if backend == "cpu-fast" else device
            gaussians = scene.to(on)
            start = _clock(on)
            with torch.no_grad():
                factors = conditioning_factors(gaussians)
            prep = _clock(on) - start
            for size in sizes:
                if progress is not None:
                    progress(f"{backend} {count} Gaussians {size}x{size}")
                cameras = scene_cameras(warmup + runs, size)
                times = []
                with torch.no_grad():
                    for index, camera in enumerate(cameras):
                        start = _clock(on)
                        render_gaussians(factors, camera, backend=backend)
                        elapsed = _clock(on) - start
                        if index >= warmup:
                            times.append(elapsed)
                median = statistics.median(times)
                rows.append({"backend": backend, "device": str(on), "gaussians": count, "width": size,
                             "height": size, "runs": runs, "median_s": median, "runs_s": times, "fps": 1.0 / median,
                             "prep_s": prep})
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table of :func:`run_raster_bench` rows."""
    lines = ["| backend | device | Gaussians | image | median ms | FPS | prep s |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['backend']} | {row['device']} | {row['gaussians']:,} | {row['width']}x{row['height']} | "
                     f"{1000 * row['median_s']:.1f} | {row['fps']:.1f} | {row['prep_s']:.2f} |")
    return "\n".join(lines)


@suite("raster", "Gaussian rasterizer backends: frames per second for 50k, 200k and 1M Gaussians, conditioning "
                 "included")
def raster_suite(config: BenchConfig) -> list[BenchRow]:
    """:func:`run_raster_bench` rows as :class:`~RenderFMLib.bench.BenchRow` (case ``"<backend> <count>
    Gaussians"``), each compared with VTK's CPU ray caster on the ``volume_size``^3 benchmark phantom at the same
    image size."""
    from .presets import get_preset
    from .reference import resolve_device
    from .vtk_raycast import VtkRaycaster

    device = resolve_device(config.device)
    rows = []
    volume = bench_volume(config.volume_size)
    with VtkRaycaster(volume, get_preset(config.preset), "cpu") as raycaster:
        for size in config.sizes:
            camera = orbit_cameras(volume.center_ras(), volume.radius_mm(), 8, size, size, elevation_deg=20)[1]
            times = time_call(lambda camera=camera: raycaster.render(camera), config.runs, config.warmup)
            rows.append(BenchRow("raster", "vtk-cpu", size, statistics.median(times), times, "cpu",
                                 notes=f"vtkFixedPointVolumeRayCastMapper, {config.volume_size}^3 phantom"))
    for row in run_raster_bench(sizes=config.sizes, runs=config.runs, warmup=config.warmup, device=device):
        rows.append(BenchRow("raster", f"{row['backend']} {row['gaussians']:,} Gaussians", row["width"],
                             row["median_s"], row["runs_s"], row["device"], baseline="vtk-cpu",
                             notes=f"{row['fps']:.1f} FPS; conditioning factors once: {row['prep_s']:.2f} s"))
    return rows
