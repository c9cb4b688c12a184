"""Speed benchmarks: warm-up, several timed runs, median, with VTK ray casting timed in the same run as baseline.

Benchmarks are grouped in *suites*, registered by name with :func:`suite`; ``renderfm bench --NAME`` runs the suite
``NAME``. A suite is a function ``(BenchConfig) -> list[BenchRow]``; add one by decorating it::

    @suite("raster", "Gaussian rasterizer backends vs the reference renderer")
    def raster_suite(config: BenchConfig) -> list[BenchRow]:
        ...

and time each case with :func:`time_call`. :func:`run_suites` adds the environment (device, threads, versions,
date) and :func:`to_markdown` formats a report for ``docs/results/``.
"""

from __future__ import annotations

import datetime
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from .volume import Volume


@dataclass
class BenchConfig:
    """What to measure: image sizes (square, pixels), the benchmark volume's edge (voxels), timed runs after
    ``warmup`` untimed ones, the torch device and the number of CPU threads (``None``: torch's default)."""

    sizes: tuple[int, ...] = (256, 512)
    volume_size: int = 256
    runs: int = 5
    warmup: int = 1
    device: str = "cpu"
    threads: int | None = None
    preset: str = "CT-Bone"


@dataclass
class BenchRow:
    """One measured case: ``seconds`` is the median of ``runs_s``; ``baseline`` names the row it is compared with
    (same suite and size) and ``speedup`` is ``baseline seconds / seconds`` (filled by :func:`run_suites`)."""

    suite: str
    case: str
    size: int
    seconds: float
    runs_s: list[float]
    device: str
    baseline: str | None = None
    speedup: float | None = None
    notes: str = ""


@dataclass
class BenchReport:
    rows: list[BenchRow]
    environment: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"environment": self.environment, "rows": [asdict(row) for row in self.rows]}


#: Registered suites: name -> (function, one-line description).
SUITES: dict[str, tuple[Callable[[BenchConfig], list[BenchRow]], str]] = {}


def suite(name: str, description: str):
    """Register a benchmark suite under ``name`` (see the module docstring)."""

    def register(function):
        SUITES[name] = (function, description)
        return function

    return register


def time_call(function: Callable[[], object], runs: int, warmup: int = 1, synchronize=None) -> list[float]:
    """Wall-clock seconds of ``runs`` calls of ``function`` after ``warmup`` untimed calls; ``synchronize`` (e.g.
    ``torch.cuda.synchronize``) is called before each clock reading."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(runs):
        if synchronize:
            synchronize()
        start = time.perf_counter()
        function()
        if synchronize:
            synchronize()
        times.append(time.perf_counter() - start)
    return times


def bench_volume(size: int) -> Volume:
    """The built-in phantom resampled to exactly ``size``^3 voxels over its body (a cube of anisotropic voxels)."""
    import torch
    import torch.nn.functional as F

    from .phantom import make_phantom
    from .volume import crop_to_body

    volume = crop_to_body(make_phantom().volume)
    data = torch.from_numpy(volume.array)[None, None]
    array = F.interpolate(data, size=(size, size, size), mode="trilinear", align_corners=True)[0, 0].numpy()
    ijk_to_ras = volume.ijk_to_ras.copy()
    scale = (np.array(volume.shape[::-1], dtype=np.float64) - 1.0) / (size - 1.0)
    ijk_to_ras[:3, :3] = volume.ijk_to_ras[:3, :3] * scale[None, :]
    return Volume(array, ijk_to_ras, name=f"phantom-{size}^3")


def _synchronize(device: str):
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return None


@suite("reference", "photoreal reference renderer (cinematic, shaded, emission-absorption) vs VTK ray casting")
def reference_suite(config: BenchConfig) -> list[BenchRow]:
    """Seconds per frame of :func:`~RenderFMLib.reference.render_reference` in each mode (cinematic with its
    illumination precomputed, timed once separately) and of VTK's CPU ray caster at the same sample distance,
    for a ``volume_size``^3 phantom at each image size, from an oblique view."""
    from .camera import orbit_cameras
    from .illumination import compute_illumination
    from .presets import get_preset
    from .reference import default_step_mm, render_reference, resolve_device
    from .vtk_raycast import VtkRaycaster

    device = resolve_device(config.device)
    sync = _synchronize(str(device))
    volume = bench_volume(config.volume_size)
    tf = get_preset(config.preset)
    step = default_step_mm(volume)
    rows = []
    illumination = compute_illumination(volume, tf, device=device)
    rows.append(BenchRow("reference", "cinematic illumination (once per volume and TF)", 0,
                         round(illumination.seconds, 4), [round(illumination.seconds, 4)], str(device),
                         notes=f"{config.volume_size}^3 voxels"))
    for size in config.sizes:
        camera = orbit_cameras(volume.center_ras(), volume.radius_mm(), 8, size, size, elevation_deg=20)[1]
        with VtkRaycaster(volume, tf, "cpu", step) as raycaster:
            times = time_call(lambda camera=camera: raycaster.render(camera), config.runs, config.warmup)
        rows.append(BenchRow("reference", "vtk-cpu", size, statistics.median(times), times, "cpu",
                             notes="vtkFixedPointVolumeRayCastMapper, shaded"))
        for mode in ("emission-absorption", "shaded", "cinematic"):
            def frame(mode=mode, camera=camera):
                return render_reference(volume, tf, camera, mode=mode, step_mm=step, device=device,
                                        illumination=illumination if mode == "cinematic" else None)

            times = time_call(frame, config.runs, config.warmup, sync)
            rows.append(BenchRow("reference", f"reference {mode}", size, statistics.median(times), times,
                                 str(device), baseline="vtk-cpu"))
    return rows


def environment(config: BenchConfig) -> dict:
    """Date, machine, CPU threads, torch/VTK versions and the configuration, for the report header."""
    import os

    import torch

    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "config": asdict(config)}
    if hasattr(os, "getloadavg"):  # other work on the machine makes timings meaningless: record it
        info["load_average_1min"] = round(os.getloadavg()[0], 2)
    try:
        import vtk

        info["vtk"] = vtk.vtkVersion.GetVTKVersion()
    except ImportError:  # pragma: no cover - vtk is a dependency
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_suites(names: list[str], config: BenchConfig) -> BenchReport:
    """Run the named suites (see :data:`SUITES`) and fill each row's speed-up over its baseline."""
    import torch

    from .errors import RenderFMError

    unknown = [name for name in names if name not in SUITES]
    if unknown:
        raise RenderFMError(f"unknown benchmark suite(s) {', '.join(unknown)}; available: {', '.join(SUITES)}")
    if config.threads:
        torch.set_num_threads(config.threads)
    rows = []
    for name in names:
        rows.extend(SUITES[name][0](config))
    by_key = {(row.suite, row.case, row.size): row for row in rows}
    for row in rows:
        base = by_key.get((row.suite, row.baseline, row.size)) if row.baseline else None
        if base is not None and row.seconds > 0:
            row.speedup = round(base.seconds / row.seconds, 3)
    for row in rows:
        row.seconds = round(row.seconds, 4)
        row.runs_s = [round(t, 4) for t in row.runs_s]
    return BenchReport(rows, environment(config))


def to_markdown(report: BenchReport, command: str = "") -> str:
    """A Markdown section: environment, the command, and a table of median seconds per frame."""
    env = report.environment
    lines = [f"## Benchmark {env.get('date', '')}", ""]
    device_line = f"- machine: {env.get('platform')}, {env.get('processor')}, {env.get('cpu_count')} CPUs " \
                  f"(torch threads {env.get('torch_threads')}; load average at the end {env.get('load_average_1min')})"
    if env.get("gpu"):
        device_line += f", GPU {env['gpu']}"
    lines += [device_line, f"- torch {env.get('torch')}, VTK {env.get('vtk', '?')}"]
    if command:
        lines.append(f"- command: `{command}`")
    config = env.get("config", {})
    lines += [f"- {config.get('runs')} timed runs after {config.get('warmup')} warm-up; median shown", "",
              "| suite | case | image | device | median s/frame | speed-up vs baseline | runs (s) | notes |",
              "|---|---|---|---|---|---|---|---|"]
    for row in report.rows:
        size = f"{row.size}²" if row.size else "-"
        speedup = f"{row.speedup}x vs {row.baseline}" if row.speedup is not None else "-"
        runs = ", ".join(f"{t:g}" for t in row.runs_s)
        lines.append(f"| {row.suite} | {row.case} | {size} | {row.device} | {row.seconds:g} | {speedup} | {runs} "
                     f"| {row.notes} |")
    return "\n".join(lines) + "\n"


from . import bench_optimize, bench_raster  # noqa: E402,F401  (register the "optimize" and "raster" suites)
