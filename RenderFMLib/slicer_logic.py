"""The RenderFM Slicer module's logic, without any GUI: MRML nodes in, Gaussians and images out.

The module's ``RenderFMLogic`` (``RenderFM/RenderFM.py``) is a thin subclass of :class:`RenderFMSceneLogic`, so
everything the module computes can be driven from a plain Python with the PyPI package ``slicer-core`` (real MRML
classes, no Qt) and is tested that way. Typical use::

    logic = RenderFMSceneLogic()
    rgb, alpha, info = logic.render(volumeNode, cameraNode, RenderSettings(tf_source="preset:CT-Bone"))

Threading: :meth:`RenderFMSceneLogic.gather` reads MRML nodes and must run on the main thread;
:meth:`RenderFMSceneLogic.prepare` (the slow part: working grid, illumination, Gaussians) touches no MRML and may
run in a worker thread; rendering a prepared scene is fast and thread-safe with respect to MRML as well.
Images are float32 linear RGB ``[H, W, 3]`` (premultiplied by alpha) and alpha ``[H, W, 1]``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import slicer_bridge as bridge
from .camera import Camera
from .errors import RenderFMError
from .transfer import TransferFunction
from .volume import Volume

#: ``tf_source`` value meaning "use the volume's current volume rendering" (its volume-property node).
FOLLOW_VOLUME_RENDERING = "follow"
#: ``tf_source`` values ``"preset:NAME"`` name one of Slicer's presets (:mod:`RenderFMLib.presets`).
PRESET_PREFIX = "preset:"
METHODS = ("model", "analytic")
DEVICES = ("auto", "cuda", "cpu")
BACKENDS = ("auto", "gsplat", "torch", "cpu-fast")
#: Working spacing is multiplied by this after running out of memory, before trying again.
OOM_COARSEN = 1.5
#: Attempts at preparing a scene (first try plus retries after running out of memory).
OOM_ATTEMPTS = 3
#: Confidence check: views, their size in pixels, and the PSNR (dB) below which a warning is given.
CONFIDENCE_VIEWS = 2
CONFIDENCE_SIZE = 64
#: Fine-tuning: training views and held-out views (for the before/after PSNR).
FINE_TUNE_VIEWS = 20
FINE_TUNE_HELD_OUT = 2
#: Slicer's native ray caster used when the module sets up volume rendering (Slicer's own default method).
NATIVE_RENDERING_METHOD = "vtkMRMLGPURayCastVolumeRenderingDisplayNode"

Progress = Callable[[str, float], None]
Cancel = Callable[[], bool]


@dataclass(frozen=True)
class RenderSettings:
    """What to render and how.

    ``tf_source``: :data:`FOLLOW_VOLUME_RENDERING` or ``"preset:NAME"``. ``method``: ``"model"`` (Render-FM
    network) or ``"analytic"``. ``device``: ``"auto"``, ``"cuda"`` or ``"cpu"``. ``backend``: rasterizer,
    ``"auto"``, ``"gsplat"``, ``"torch"`` or ``"cpu-fast"``. ``spacing_mm``: working grid spacing, 0 = automatic
    (1.5 mm on a GPU, 3 mm on a CPU, or the model's own).
    """

    tf_source: str = FOLLOW_VOLUME_RENDERING
    method: str = "model"
    device: str = "auto"
    backend: str = "auto"
    spacing_mm: float = 0.0

    def __post_init__(self) -> None:
        if self.tf_source != FOLLOW_VOLUME_RENDERING and not self.tf_source.startswith(PRESET_PREFIX):
            raise RenderFMError(f"transfer function source must be '{FOLLOW_VOLUME_RENDERING}' or "
                                f"'{PRESET_PREFIX}NAME', got {self.tf_source!r}")
        for name, allowed in (("method", METHODS), ("device", DEVICES), ("backend", BACKENDS)):
            if getattr(self, name) not in allowed:
                raise RenderFMError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not (math.isfinite(self.spacing_mm) and self.spacing_mm >= 0):
            raise RenderFMError(f"working resolution must be >= 0 mm (0 = automatic), got {self.spacing_mm}")


@dataclass
class SceneInputs:
    """Library-side copies of the MRML inputs: world-space volume, TF and optional mask ``[K, J, I]`` uint8."""

    volume: Volume
    tf: TransferFunction
    mask: np.ndarray | None
    key: str


@dataclass
class PreparedScene:
    """A prepared Gaussian scene (:class:`RenderFMLib.pipeline.Scene`), the settings that made it, the notes a
    user must see (fallbacks taken), and the confidence check once run."""

    scene: object
    key: str
    settings: RenderSettings
    notes: list[str] = field(default_factory=list)
    confidence: dict | None = None

    @property
    def num_gaussians(self) -> int:
        return self.scene.num_gaussians


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/CPU allocation failures raised by torch or numpy."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _digest(*parts) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(str(part.shape).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()


def tf_digest(tf: TransferFunction) -> str:
    """Content hash of a transfer function (points and shading), to detect edits."""
    return _digest(tf.color_points, tf.opacity_points, tf.gradient_opacity_points, tf.unit_distance, tf.shade,
                   tf.ambient, tf.diffuse, tf.specular, tf.specular_power)


class RenderFMSceneLogic:
    """GUI-free logic: reads MRML nodes through :mod:`RenderFMLib.slicer_bridge`, prepares and renders scenes.

    Keeps the last prepared scene (:attr:`prepared`) and reuses it while volume, TF, mask and settings are unchanged.
    """

    def __init__(self) -> None:
        self.prepared: PreparedScene | None = None

    # ---- inputs (main thread: reads MRML) ----------------------------------------------------------------------
    @staticmethod
    def transfer_function(volume_node, tf_source: str) -> TransferFunction:
        """The TF for ``tf_source``: a preset, or the volume-property node of the volume's volume rendering (its
        unit distance converted from Slicer's voxel units to mm, so RenderFM accumulates opacity as Slicer shows)."""
        if tf_source.startswith(PRESET_PREFIX):
            from .presets import get_preset

            return get_preset(tf_source[len(PRESET_PREFIX):])
        node = bridge.volume_property_node_of(volume_node)
        if node is None:
            raise bridge.SceneError(f"'{volume_node.GetName()}' has no volume rendering yet, so there is no transfer "
                                    "function to follow: show it in the Volume Rendering module or choose a preset")
        return bridge.tf_from_volume_property(node, voxel_size=bridge.voxel_size_mm(volume_node))

    def gather(self, volume_node, settings: RenderSettings, segmentation_node=None, segment_ids=None) -> SceneInputs:
        """Read the volume (world geometry), its TF and the visible segments' mask from the scene."""
        volume = bridge.volume_from_node(volume_node)
        tf = self.transfer_function(volume_node, settings.tf_source)
        mask = None
        if segmentation_node is not None:
            mask = bridge.mask_from_segmentation(segmentation_node, volume_node, segment_ids)
            if not mask.any():
                raise bridge.SceneError(f"no segment of '{segmentation_node.GetName()}' is visible: show at least one "
                                        "segment, or clear the segmentation to render the whole volume")
            if mask.all():
                mask = None
        image = volume_node.GetImageData()
        key = _digest(volume_node.GetID(), image.GetMTime(), volume.ijk_to_ras, tf_digest(tf),
                      None if mask is None else _digest(mask))
        return SceneInputs(volume=volume, tf=tf, mask=mask, key=key)

    # ---- preparation (any thread: no MRML) ---------------------------------------------------------------------
    def prepare(self, inputs: SceneInputs, settings: RenderSettings, progress: Progress | None = None,
                cancel: Cancel | None = None) -> PreparedScene:
        """Gaussians for ``inputs`` (reused when nothing changed), with fallbacks instead of failures.

        Without CUDA a ``"cuda"`` request runs on the CPU; running out of memory retries on the CPU and then on a
        grid :data:`OOM_COARSEN` times coarser, up to :data:`OOM_ATTEMPTS` times. Each fallback adds a sentence to
        :attr:`PreparedScene.notes`. ``cancel()`` returning true stops with :class:`InterruptedError`, leaving the
        previous scene in place.
        """
        import torch

        from .pipeline import DEFAULT_SPACING_MM, prepare_scene

        key = _digest(inputs.key, settings.method, settings.device, settings.spacing_mm)
        if self.prepared is not None and self.prepared.key == key:
            return self.prepared
        notes = []
        device = settings.device
        if device == "cuda" and not torch.cuda.is_available():
            notes.append("CUDA was requested but this machine has no usable CUDA GPU: running on the CPU with a "
                         f"{DEFAULT_SPACING_MM['cpu']:g} mm working grid (slower than on a GPU).")
            device = "cpu"
        spacing = settings.spacing_mm or None
        for attempt in range(OOM_ATTEMPTS):
            try:
                scene = prepare_scene(inputs.volume, inputs.tf, mask=inputs.mask, method=settings.method,
                                      spacing_mm=spacing, device=device, progress=progress, cancel=cancel)
                break
            except (RuntimeError, MemoryError) as exc:
                if not is_out_of_memory(exc) or attempt == OOM_ATTEMPTS - 1:
                    if is_out_of_memory(exc):
                        raise RenderFMError("out of memory even on a coarse grid: crop the volume (Crop Volume "
                                            "module) or choose a coarser working resolution") from None
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                used = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
                current = spacing or DEFAULT_SPACING_MM[used]
                spacing = round(current * OOM_COARSEN, 2)
                if used == "cuda":
                    device = "cpu"
                    notes.append(f"The GPU ran out of memory at {current:g} mm: continued on the CPU with a "
                                 f"{spacing:g} mm working grid.")
                else:
                    notes.append(f"Ran out of memory at {current:g} mm: continued with a coarser {spacing:g} mm "
                                 "working grid.")
        self.prepared = PreparedScene(scene=scene, key=key, settings=settings, notes=notes)
        return self.prepared

    # ---- rendering ------------------------------------------------------------------------------------------------
    @staticmethod
    def render_prepared(prepared: PreparedScene, camera: Camera, backend: str = "auto"):
        """Render a prepared scene for ``camera``: ``(rgb, alpha, info)``.

        ``info``: ``backend``, ``seconds``, ``fps``, ``gaussians``, ``device``, ``method``, ``spacing_mm``,
        ``prep_seconds``, ``notes`` (fallbacks) and ``confidence`` (when checked).
        """
        from .pipeline import render_scene

        scene = prepared.scene
        out = render_scene(scene, camera, backend=backend)
        info = {"backend": out.backend, "seconds": out.seconds, "fps": 1.0 / max(out.seconds, 1e-9),
                "gaussians": scene.num_gaussians, "device": str(scene.device), "method": scene.method,
                "spacing_mm": scene.info.get("spacing_mm"), "prep_seconds": scene.prep_seconds,
                "notes": list(prepared.notes), "confidence": prepared.confidence}
        return out.rgb, out.alpha, info

    @staticmethod
    def camera_for(camera, width: int, height: int) -> Camera:
        """A :class:`Camera` from a camera node (at ``width`` x ``height``) or from a :class:`Camera` (resized)."""
        if isinstance(camera, Camera):
            return camera if (camera.width, camera.height) == (width, height) else camera.resized(width, height)
        return bridge.camera_from_node(camera, width, height)

    def render(self, volume_node, camera, settings: RenderSettings | None = None, segmentation_node=None,
               segment_ids=None, width: int = 256, height: int = 256, progress: Progress | None = None):
        """End to end on the calling thread: gather, prepare (or reuse), render ``camera`` (node or
        :class:`Camera`). Returns ``(rgb, alpha, info)`` as :meth:`render_prepared`."""
        settings = settings or RenderSettings()
        inputs = self.gather(volume_node, settings, segmentation_node, segment_ids)
        prepared = self.prepare(inputs, settings, progress=progress)
        return self.render_prepared(prepared, self.camera_for(camera, width, height), settings.backend)

    # ---- quality ---------------------------------------------------------------------------------------------------
    @staticmethod
    def reference(prepared: PreparedScene, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
        """The cinematic reference image of the prepared scene for ``camera``: ``(rgb, alpha)``."""
        from .pipeline import render_scene_reference

        return render_scene_reference(prepared.scene, camera)

    def check_confidence(self, prepared: PreparedScene, views: int = CONFIDENCE_VIEWS, size: int = CONFIDENCE_SIZE,
                         cancel: Cancel | None = None) -> dict:
        """The confidence check of :func:`RenderFMLib.finetune.confidence_check` on the prepared scene.

        Returns (and stores in :attr:`PreparedScene.confidence`) ``{"psnr", "per_view", "threshold", "ok",
        "seconds", "message"}``; ``ok`` is false below the threshold and the message then suggests fine-tuning.
        """
        from .finetune import confidence_check

        result = confidence_check(prepared.scene, views, size, cancel=cancel)
        prepared.confidence = {**result.to_dict(), "message": result.message}
        return prepared.confidence

    def compare(self, prepared: PreparedScene, camera: Camera, native_rgb: np.ndarray | None = None,
                backend: str = "auto") -> dict:
        """RenderFM (and optionally Slicer's native view, linear RGB ``[H, W, 3]``) against the reference.

        Returns ``{"renderfm": {"rgb", "psnr", "ssim"}, "reference": {"rgb"}, "native": {...} or None,
        "seconds": {...}}`` with images over black, at ``camera``'s size.
        """
        from .image import composite
        from .metrics import psnr, ssim

        start = time.perf_counter()
        ref_rgb, ref_alpha = self.reference(prepared, camera)
        ref_seconds = time.perf_counter() - start
        rgb, alpha, info = self.render_prepared(prepared, camera, backend)
        reference = composite(ref_rgb, ref_alpha)
        ours = composite(rgb, alpha)
        result = {"reference": {"rgb": reference, "seconds": ref_seconds},
                  "renderfm": {"rgb": ours, "psnr": psnr(ours, reference), "ssim": ssim(ours, reference),
                               "seconds": info["seconds"]},
                  "native": None}
        if native_rgb is not None:
            native = np.asarray(native_rgb, dtype=np.float32)
            result["native"] = {"rgb": native, "psnr": psnr(native, reference), "ssim": ssim(native, reference)}
        return result

    # ---- Slicer's own volume rendering ---------------------------------------------------------------------------
    @staticmethod
    def show_native_volume_rendering(volume_node, volume_rendering_logic, tf: TransferFunction | None = None):
        """Show ``volume_node`` with Slicer's volume rendering (created with :data:`NATIVE_RENDERING_METHOD` if
        absent) and, when ``tf`` is given, set its volume property to ``tf`` (unit distance converted to Slicer's
        voxel units, see :func:`RenderFMLib.slicer_bridge.voxel_size_mm`). Returns the display node."""
        display = bridge.volume_rendering_display_node(volume_node)
        if display is None:
            previous = volume_rendering_logic.GetDefaultRenderingMethod()
            if not previous:
                volume_rendering_logic.SetDefaultRenderingMethod(NATIVE_RENDERING_METHOD)
            display = volume_rendering_logic.CreateDefaultVolumeRenderingNodes(volume_node)
        if tf is not None:
            bridge.tf_to_volume_property(tf, display.GetVolumePropertyNode(), bridge.voxel_size_mm(volume_node))
        display.SetVisibility(True)
        return display

    # ---- fine-tuning and export -----------------------------------------------------------------------------------
    def fine_tune(self, prepared: PreparedScene, seconds: float, views: int = FINE_TUNE_VIEWS, size: int | None = None,
                  progress: Progress | None = None, cancel: Cancel | None = None) -> dict:
        """Fine-tune the prepared Gaussians (:func:`RenderFMLib.finetune.finetune_scene`) within ``seconds``.

        Two held-out views measure PSNR before and after; the result replaces the scene's Gaussians only if it is
        not worse. ``size``: view size in pixels (default 256 on CUDA, 96 on CPU). Cancelling stops early and keeps
        the scene unchanged (:class:`InterruptedError`). Returns ``{"psnr_before", "psnr_after", "applied",
        "iterations", "seconds"}``.
        """
        from .finetune import finetune_scene

        report = progress or (lambda stage, fraction: None)
        scene = prepared.scene
        size = size or (256 if scene.device.type == "cuda" else 96)
        tuned, result = finetune_scene(scene, seconds=seconds, views=views, size=size, held_out=FINE_TUNE_HELD_OUT,
                                       progress=lambda fraction, loss: report("optimising", fraction), cancel=cancel)
        if cancel is not None and cancel():
            raise InterruptedError("cancelled")
        applied = result.psnr_after >= result.psnr_before
        if applied:
            info = dict(scene.info, fine_tuned_seconds=result.seconds, fine_tuned_iterations=result.iterations)
            prepared.scene = replace(tuned, info=info)
            prepared.confidence = None
        return {"psnr_before": result.psnr_before, "psnr_after": result.psnr_after, "applied": applied,
                "iterations": result.iterations, "seconds": result.seconds}

    @staticmethod
    def export_ply(prepared: PreparedScene, path) -> Path:
        """Write the prepared Gaussians as a 6DGS PLY file (:func:`RenderFMLib.ply.write_6dgs_ply`)."""
        from .ply import write_6dgs_ply

        return write_6dgs_ply(prepared.scene.gaussians, path, lam=prepared.scene.lam)
