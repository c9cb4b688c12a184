"""gsplat backend (CUDA only, optional): conditioned Gaussians are passed to ``gsplat.rasterization`` as ``covars``.

gsplat is imported lazily. It compiles its CUDA code on first import when no prebuilt extension exists (needs
``nvcc``; minutes), so :func:`gsplat_status` reports "ready" only for an already built extension, and automatic
backend choice never starts a compile; asking for ``gsplat`` explicitly may.

Differences from the torch reference, by design of gsplat: per-pixel alpha is capped at 0.999 instead of 0.99,
and its screen extents differ slightly (only where alpha < 1/255). Images agree to well under 1e-3 mean absolute
error on scenes without nearly opaque Gaussians.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from ..errors import BackendUnavailableError
from .project import ANTIALIASED, EPS2D, NEAR_PLANE, TILE_SIZE, CameraParams, RasterOutput, finish

INSTALL_HINT = ("install it with `pip install gsplat` on a machine with CUDA and nvcc, then build its extension "
                "once with `python -c \"import gsplat.cuda._backend\"` (takes minutes)")


def _jit_build_exists() -> bool:
    """Whether gsplat's JIT-compiled extension (``gsplat_cuda``) is already in torch's extension folder."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        folder = _get_build_directory("gsplat_cuda", verbose=False)
    except Exception:  # private torch helper; any failure means "not known to be built"
        return False
    return any(os.path.exists(os.path.join(folder, f"gsplat_cuda{ext}")) for ext in (".so", ".pyd", ".lib"))


def gsplat_status(allow_compile: bool = False) -> str | None:
    """``None`` when gsplat can render here, else the reason it cannot (a sentence for the user).

    Without ``allow_compile`` an installed gsplat counts as ready only if its CUDA extension is prebuilt or was
    compiled before.
    """
    if not torch.cuda.is_available():
        return "CUDA is not available (no NVIDIA GPU, or a CPU-only PyTorch build)"
    try:
        if importlib.util.find_spec("gsplat") is None:
            return f"gsplat is not installed; {INSTALL_HINT}"
        prebuilt = importlib.util.find_spec("gsplat.csrc") is not None
    except (ImportError, ValueError) as exc:
        return f"gsplat cannot be imported ({exc}); {INSTALL_HINT}"
    if prebuilt or allow_compile or _jit_build_exists():
        return None
    return f"gsplat is installed but its CUDA extension is not compiled yet; {INSTALL_HINT}"


def _load():
    """Import gsplat (possibly compiling it); raises :class:`BackendUnavailableError` when that fails."""
    try:
        from gsplat import rasterization
        from gsplat.cuda._backend import _C
    except Exception as exc:  # any import/compile failure of an optional dependency
        raise BackendUnavailableError(f"gsplat backend unavailable: {exc}; {INSTALL_HINT}") from exc
    if _C is None:
        raise BackendUnavailableError(f"gsplat backend unavailable: its CUDA extension could not be built (no CUDA "
                                      f"toolkit found); {INSTALL_HINT}")
    return rasterization


def rasterize_gsplat(means, covs, colors, opacities, camera: CameraParams, background=None,
                     return_depth: bool = False, antialiased: bool = ANTIALIASED) -> RasterOutput:
    """Render single-view 3D Gaussians (CUDA tensors ``[N, 3]``, ``[N, 3, 3]``, ``[N, 3]``, ``[N]``) with gsplat
    (``antialiased``: gsplat's ``rasterize_mode="antialiased"``, else ``"classic"``). Differentiable (gsplat's CUDA
    backward)."""
    reason = gsplat_status(allow_compile=True)
    if reason is None and means.device.type != "cuda":
        reason = f"the gsplat backend needs CUDA tensors, got Gaussians on {means.device}"
    if reason is not None:
        raise BackendUnavailableError(f"gsplat backend unavailable: {reason}")
    rasterization = _load()
    device = means.device
    viewmat = torch.as_tensor(camera.viewmat, dtype=torch.float32, device=device)[None]
    intrinsics = torch.as_tensor(camera.K, dtype=torch.float32, device=device)[None]
    image, alpha, _ = rasterization(
        means.float().contiguous(), None, None, opacities.float().contiguous(), colors.float().contiguous(),
        viewmat, intrinsics, camera.width, camera.height, near_plane=NEAR_PLANE, eps2d=EPS2D, packed=False,
        tile_size=TILE_SIZE, render_mode="RGB+D" if return_depth else "RGB",
        rasterize_mode="antialiased" if antialiased else "classic",
        camera_model="ortho" if camera.ortho else "pinhole", covars=covs.float().contiguous())
    image, alpha = image[0], alpha[0]
    depth = image[..., 3:4] if return_depth else None
    return finish(image[..., :3], alpha, depth, background)
