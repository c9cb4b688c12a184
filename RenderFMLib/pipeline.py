"""The high-level API: volume + TF (+ segmentation) -> a prepared Gaussian scene -> images of any view.

This is what the command line and the Slicer module call::

    scene = prepare_scene(volume, tf, method="model")        # working grid, illumination, Gaussians
    image = render_scene(scene, camera)                      # tone-mapped linear RGB + alpha, any view
    truth = render_scene_reference(scene, camera)            # the cinematic reference for the same view

A scene's Gaussians carry scene-linear radiance; :func:`render_scene` rasterizes them and applies the same filmic
tone mapping (with the lighting rig's exposure) as the cinematic reference renderer, so both images compare
directly. Segmentation masks hide voxels by giving them a HU value the TF makes transparent, for the reference and
the Gaussians alike (hidden organs neither show nor cast shadows).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .analytic import analytic_gaussians
from .camera import Camera
from .conditioning import ConditioningFactors, conditioning_factors
from .errors import BackendUnavailableError, RenderFMError
from .gaussians import Gaussians6D
from .illumination import Illumination, LightingRig, compute_illumination
from .transfer import TransferFunction
from .volume import Volume, body_bounding_box, crop, resample, resample_labels

#: Default working spacing (mm) per device type: the paper's 1.5 mm on a GPU, coarser on CPU.
DEFAULT_SPACING_MM = {"cuda": 1.5, "cpu": 3.0}

Progress = Callable[[str, float], None]


@dataclass
class Scene:
    """A prepared scene: the working grid, its illumination and the Gaussians.

    ``method`` is ``"analytic"``, ``"model"`` or ``"optimized"``; ``prep_seconds`` the wall time from volume to
    Gaussians; ``info`` counts and settings for reports.

    The view-independent part of conditioning (:class:`~RenderFMLib.conditioning.ConditioningFactors`) is computed
    on the first render and kept for later ones (see :meth:`conditioning`): give a scene new Gaussians by assigning
    a new object to ``gaussians`` (or with ``dataclasses.replace``), never by changing their tensors in place.
    """

    gaussians: Gaussians6D
    working: Volume
    tf: TransferFunction
    lighting: LightingRig
    illumination: Illumination
    method: str
    device: torch.device
    prep_seconds: float
    lam: float = 0.35
    info: dict = field(default_factory=dict)
    _factors: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def num_gaussians(self) -> int:
        return len(self.gaussians)

    def conditioning(self) -> ConditioningFactors:
        """The conditioning factors of ``gaussians`` (no gradients), cached while ``gaussians`` is the same object."""
        if self._factors is None or self._factors[0] is not self.gaussians:
            with torch.no_grad():
                self._factors = (self.gaussians, conditioning_factors(self.gaussians))
        return self._factors[1]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; ``"cuda"`` without CUDA raises a clear error."""
    if isinstance(name, torch.device):
        return name
    name = str(name).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError("CUDA was requested but this machine has no usable CUDA GPU (torch reports "
                                      "none); use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise RenderFMError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def invisible_hu(tf: TransferFunction) -> float:
    """A HU value the TF renders fully transparent (used to hide masked-out voxels)."""
    points = tf.opacity_points
    zero = points[points[:, 1] <= 0.0]
    if len(zero) and zero[0, 0] == points[0, 0]:
        return float(points[0, 0] - 1.0)
    if len(zero):
        return float(zero[0, 0])
    raise RenderFMError(f"transfer function {tf.name!r} has no transparent HU value, so segments cannot be hidden")


def working_grid(volume: Volume, spacing_mm: float, mask=None, labels=None, crop_body: bool = True):
    """Crop to the body (CT only) and resample to ``spacing_mm``; masks and labels follow (nearest neighbour).

    Returns ``(working, mask, labels)`` with the arrays on the working grid (or ``None``).
    """
    if crop_body and volume.modality_note is None:
        try:
            box = body_bounding_box(volume.array)
        except RenderFMError:
            box = None
        if box is not None:
            volume = crop(volume, box)
            mask = None if mask is None else np.asarray(mask)[box]
            labels = None if labels is None else np.asarray(labels)[box]
    working = resample(volume, spacing_mm)

    def follow(array):
        return None if array is None else resample_labels(array, volume, spacing_mm)

    return working, follow(mask), follow(labels)


def apply_mask(working: Volume, mask, tf: TransferFunction) -> Volume:
    """``working`` with voxels where ``mask == 0`` set to a HU value ``tf`` makes transparent."""
    if mask is None:
        return working
    array = working.array.copy()
    array[np.asarray(mask) == 0] = invisible_hu(tf)
    return working.with_array(array)


def prepare_scene(volume: Volume, tf: TransferFunction, mask=None, labels=None, method: str = "analytic",
                  spacing_mm: float | None = None, device: str | torch.device = "auto", weights=None,
                  lighting: LightingRig | None = None, progress: Progress | None = None,
                  cancel: Callable[[], bool] | None = None) -> Scene:
    """Turn a volume and TF into Gaussians: ``method`` ``"analytic"`` (no learning) or ``"model"`` (Render-FM).

    ``mask``/``labels``: optional ``[K, J, I]`` arrays on ``volume``'s grid (non-zero mask = shown).
    ``spacing_mm``: working spacing (default per device, or the model's). ``weights``: a weights file for
    ``"model"`` (default: the shipped ones). ``progress(stage, fraction)`` is called along the way; ``cancel()``
    returning true raises :class:`InterruptedError`.
    """
    start = time.perf_counter()
    device = resolve_device(device)
    report = progress or (lambda stage, fraction: None)
    model = header = None
    if method == "model":
        from .model.weights import load_model
        from .resources import default_weights_path

        model, header = load_model(weights or default_weights_path(), device)
        spacing_mm = spacing_mm or header.working_spacing_mm
    elif method != "analytic":
        raise RenderFMError(f"method must be 'analytic' or 'model', got {method!r}")
    spacing_mm = float(spacing_mm or DEFAULT_SPACING_MM[device.type])
    report("working grid", 0.0)
    working, mask_w, labels_w = working_grid(volume, spacing_mm, mask, labels)
    if mask_w is not None and not mask_w.any():
        raise RenderFMError(f"{volume.name}: the segmentation mask shows no voxel; nothing to render")
    shown = apply_mask(working, mask_w, tf)
    _check_cancel(cancel)
    report("illumination", 0.1)
    lighting = lighting or LightingRig()
    illumination = compute_illumination(shown, tf, lighting, device)
    _check_cancel(cancel)
    report("analytic Gaussians", 0.5)
    analytic = analytic_gaussians(shown, tf, illumination=illumination, device=device, labels=labels_w)
    gaussians = analytic.gaussians
    info = {"counts": analytic.counts, "spacing_mm": spacing_mm, "grid": list(working.shape)}
    if model is not None:
        from .model.features import make_features
        from .model.predict import apply_residuals, predict_residuals

        report("network", 0.6)
        with torch.no_grad():
            features = make_features(torch.from_numpy(working.array).to(device), tf,
                                     None if mask_w is None else torch.from_numpy(mask_w).to(device))
            residuals = predict_residuals(model, features, analytic.voxel_index,
                                          progress=lambda f: report("network", 0.6 + 0.4 * f), cancel=cancel)
            gaussians = apply_residuals(gaussians, residuals, spacing_mm, header.architecture.sh_degree)
        info["weights"] = str(weights or "shipped")
    report("done", 1.0)
    return Scene(gaussians=gaussians, working=shown, tf=tf, lighting=lighting, illumination=illumination,
                 method=method, device=device, prep_seconds=time.perf_counter() - start,
                 lam=header.lam if header is not None else 0.35, info=info)


def _check_cancel(cancel) -> None:
    if cancel is not None and cancel():
        raise InterruptedError("cancelled")


@dataclass
class Rendered:
    """One rendered view: tone-mapped linear RGB ``[H, W, 3]`` (premultiplied) and alpha ``[H, W, 1]`` (numpy
    float32), the backend used and the wall time in seconds."""

    rgb: np.ndarray
    alpha: np.ndarray
    backend: str
    seconds: float


def render_scene(scene: Scene, camera: Camera, backend: str = "auto", gaussians: Gaussians6D | None = None,
                 differentiable: bool = False):
    """Render ``scene`` (or other ``gaussians`` on its lighting) for ``camera``.

    With ``differentiable`` it returns torch tensors ``(rgb [H, W, 3], alpha [H, W, 1])`` keeping the graph (all
    backends differentiate; on a CPU the default cpu-fast one); otherwise a :class:`Rendered` with numpy
    arrays. Renders of the scene's own Gaussians reuse its cached conditioning factors (:meth:`Scene.conditioning`).
    """
    from .raster import render_gaussians, resolve_backend
    from .tonemap import tone_map

    gaussians = scene.gaussians if gaussians is None else gaussians
    start = time.perf_counter()
    name = resolve_backend(backend, gaussians.device, needs_grad=differentiable)
    source = scene.conditioning() if gaussians is scene.gaussians and not differentiable else gaussians
    with torch.set_grad_enabled(differentiable):
        out = render_gaussians(source, camera, backend=name, lam=scene.lam)
        rgb = tone_map(out.rgb, out.alpha, scene.lighting.exposure)
    if differentiable:
        return rgb, out.alpha
    return Rendered(rgb.detach().cpu().numpy().astype(np.float32), out.alpha.detach().cpu().numpy().astype(np.float32),
                    name, time.perf_counter() - start)


def render_scene_reference(scene: Scene, camera: Camera, mode: str = "cinematic") -> tuple[np.ndarray, np.ndarray]:
    """The reference renderer's image of the scene's (masked) working grid for ``camera``: ``(rgb, alpha)``."""
    from .reference import render_reference

    return render_reference(scene.working, scene.tf, camera, mode=mode, lighting=scene.lighting,
                            device=scene.device, illumination=scene.illumination)


def render_scene_references(scene: Scene, cameras: list[Camera], mode: str = "cinematic",
                            cancel: Callable[[], bool] | None = None) -> list[np.ndarray]:
    """The reference renderer's RGB images (alpha dropped) of the scene for each of ``cameras``, in order.
    ``cancel()`` returning true (checked before each view) raises :class:`InterruptedError`."""
    images = []
    for camera in cameras:
        _check_cancel(cancel)
        images.append(render_scene_reference(scene, camera, mode)[0])
    return images
