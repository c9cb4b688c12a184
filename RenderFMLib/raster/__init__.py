"""Gaussian rasterization behind one interface, with automatic backend choice.

Backends (all follow the rules in :mod:`.project` and agree with ``torch``):

* ``torch`` — pure PyTorch, tiled, differentiable, CPU or CUDA: the reference (:mod:`.torch_backend`).
* ``cpu-fast`` — numba, for interactive display on a CPU (:mod:`.cpu_fast`); differentiable through a numba
  backward pass of the blend (:mod:`.cpu_fast_grad`), the fast way to optimise on a CPU.
* ``gsplat`` — gsplat's CUDA kernels, differentiable, optional dependency (:mod:`.gsplat_backend`).

``backend="auto"`` silently picks the best one: gsplat on CUDA when it is installed and already compiled, else
torch on CUDA; on CPU cpu-fast. A backend named explicitly is used or a
:class:`BackendUnavailableError` explains why it cannot be (no fallback behind the user's back).
"""

from __future__ import annotations

import importlib.util

import torch

from ..camera import Camera
from ..conditioning import DEFAULT_LAMBDA, ConditioningFactors, Gaussians3D, condition, conditioning_factors
from ..errors import BackendUnavailableError
from ..gaussians import Gaussians6D
from .project import ANTIALIASED, CameraParams, RasterOutput

#: Backend names, best-first on their own device.
BACKENDS = ("gsplat", "torch", "cpu-fast")


def _numba_status() -> str | None:
    if importlib.util.find_spec("numba") is None:
        return "numba is not installed (pip install numba)"
    return None


def backend_status(name: str, device="cpu", needs_grad: bool = False) -> str | None:
    """``None`` when backend ``name`` can render Gaussians on ``device`` (with gradients if ``needs_grad``), else
    the reason it cannot."""
    device = torch.device(device)
    if name == "torch":
        return None
    if name == "cpu-fast":
        if needs_grad and device.type != "cpu":
            return f"the cpu-fast backend differentiates Gaussians on the CPU only, got {device}"
        return _numba_status()
    if name == "gsplat":
        from .gsplat_backend import gsplat_status

        if device.type != "cuda":
            return f"the gsplat backend needs Gaussians on a CUDA device, got {device}"
        return gsplat_status()
    raise BackendUnavailableError(f"unknown rasterizer backend {name!r}; choose auto, {', '.join(BACKENDS)}")


def available_backends(device="cpu", needs_grad: bool = False) -> list[str]:
    """Backends usable for Gaussians on ``device`` (best first); ``torch`` is always there."""
    return [name for name in BACKENDS if backend_status(name, device, needs_grad) is None]


def resolve_backend(name: str = "auto", device="cpu", needs_grad: bool = False) -> str:
    """The backend to use: ``"auto"`` becomes the best available one for ``device``; an explicit name is returned
    if usable, else :class:`BackendUnavailableError` says why."""
    name = str(name).lower()
    device = torch.device(device)
    if name == "auto":
        preferred = ("gsplat", "torch") if device.type == "cuda" else ("cpu-fast", "torch")
        return next(n for n in preferred if backend_status(n, device, needs_grad) is None)
    reason = backend_status(name, device, needs_grad)
    if reason is not None:
        raise BackendUnavailableError(f"rasterizer backend {name!r} is unavailable: {reason} "
                                      f"(available here: {', '.join(available_backends(device, needs_grad))})")
    return name


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def rasterize(gaussians: Gaussians3D, camera: Camera, backend: str = "auto", background=None,
              return_depth: bool = False, antialiased: bool = ANTIALIASED) -> RasterOutput:
    """Render single-view 3D Gaussians (``means [N, 3]``, ``covs [N, 3, 3]``, ``colors [N, 3]``,
    ``opacities [N]``, as from :func:`condition` with one camera centre) for ``camera``. ``antialiased``: the
    splatting rule (see :mod:`.project`; default :data:`~.project.ANTIALIASED`).

    Returns :class:`RasterOutput`: ``rgb [H, W, 3]`` premultiplied linear RGB (composited over ``background``, 3
    linear values, if given), ``alpha [H, W, 1]``, ``depth [H, W, 1]`` (mm) when ``return_depth``. Tensors are on
    the Gaussians' device (CPU for cpu-fast).
    """
    if gaussians.num_views is not None:
        raise BackendUnavailableError("rasterize() takes one view; use Gaussians3D.view(i) for a batch")
    g = gaussians
    needs_grad = _needs_grad(g.means, g.covs, g.colors, g.opacities)
    name = resolve_backend(backend, g.means.device, needs_grad)
    params = CameraParams.from_camera(camera)
    if name == "cpu-fast" and needs_grad:
        from .cpu_fast_grad import rasterize_cpu_fast_differentiable as function
    elif name == "cpu-fast":
        from .cpu_fast import rasterize_cpu_fast as function
    elif name == "gsplat":
        from .gsplat_backend import rasterize_gsplat as function
    else:
        from .torch_backend import rasterize_torch as function
    return function(g.means, g.covs, g.colors, g.opacities, params, background=background, return_depth=return_depth,
                    antialiased=antialiased)


def render_gaussians(gaussians: Gaussians6D | ConditioningFactors, camera: Camera, backend: str = "auto",
                     lam: float = DEFAULT_LAMBDA, background=None, return_depth: bool = False,
                     antialiased: bool = ANTIALIASED) -> RasterOutput:
    """Condition 6D Gaussians for ``camera`` (see :func:`condition`) and rasterize them (see :func:`rasterize`).

    Pass :class:`ConditioningFactors` (from :func:`conditioning_factors`) instead of the Gaussians to reuse the
    view-independent work across frames; with the cpu-fast backend the per-view conditioning then runs compiled.
    With gradients, the cpu-fast backend computes the view-independent factors in numba
    (:mod:`.cpu_fast_factors`).
    """
    probe = gaussians.means
    needs_grad = _needs_grad(*(gaussians.parameters().values() if isinstance(gaussians, Gaussians6D) else
                               (gaussians.means, gaussians.cov, gaussians.opacity, gaussians.sh, gaussians.gain)))
    name = resolve_backend(backend, probe.device, needs_grad)
    if name == "cpu-fast" and not needs_grad:
        from .cpu_fast import render_factors_cpu_fast

        if isinstance(gaussians, Gaussians6D):
            with torch.no_grad():
                gaussians = conditioning_factors(gaussians)
        return render_factors_cpu_fast(gaussians, camera, lam, background, return_depth, antialiased)
    if name == "cpu-fast" and isinstance(gaussians, Gaussians6D):  # differentiable: factors in numba
        from .cpu_fast_factors import conditioning_factors_cpu_fast

        gaussians = conditioning_factors_cpu_fast(gaussians)
    conditioned = condition(gaussians, camera.center, lam)
    return rasterize(conditioned, camera, name, background, return_depth, antialiased)


__all__ = ["ANTIALIASED", "BACKENDS", "RasterOutput", "CameraParams", "available_backends", "backend_status",
           "rasterize", "render_gaussians", "resolve_backend"]
