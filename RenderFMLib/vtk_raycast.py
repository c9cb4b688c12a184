"""Classic VTK ray casting, offscreen: the baseline renderer that 3D Slicer's volume rendering uses.

:func:`render_vtk` draws a :class:`~RenderFMLib.volume.Volume` with a :class:`~RenderFMLib.transfer.TransferFunction`
seen by a :class:`~RenderFMLib.camera.Camera` and returns float32 linear RGB ``[H, W, 3]`` premultiplied by alpha
plus alpha ``[H, W, 1]`` (row 0 at the top, as every image in RenderFM); :class:`VtkRaycaster` keeps a volume
loaded for many views. VTK composites the transfer function's colours as given, without any colour management, and
our transfer-function colours are linear, so the frame-buffer values are taken as linear RGB; they are quantised to
8 bits per channel by the frame buffer. Checked against closed forms (see the tests): a uniform slab gives
``alpha = 1 - (1 - opacity) ** (thickness / unit_distance)`` and ``rgb = colour * alpha`` for any sample distance,
and shading follows the model stated in :func:`vtk_light_setup`.

Mappers: ``"cpu"`` is ``vtkFixedPointVolumeRayCastMapper`` (software ray casting, fast on a CPU), ``"gpu"`` is
``vtkGPUVolumeRayCastMapper`` (OpenGL shaders) and ``"auto"`` picks the GPU mapper only when the OpenGL
renderer is real hardware (not llvmpipe/softpipe/swrast/OSMesa), since VTK's GPU mapper on software OpenGL is
several times slower than the CPU mapper.

Placement: the voxel array goes into a ``vtkImageData`` with origin 0, the voxel spacing and identity direction,
and the volume's rotation and origin go into the ``vtkVolume``'s user matrix (rigid, so sample distances in mm
are unchanged). This is exact for oblique volumes with both mappers, whereas ``vtkFixedPointVolumeRayCastMapper``
ignores ``vtkImageData``'s direction matrix (the GPU mapper honours it). Left-handed voxel axes are re-indexed
(slices reversed) first so the user matrix is a proper rotation. Both mappers put a volume where
:meth:`Camera.project` says; the GPU mapper's coverage is exact to the pixel centre, the CPU mapper softens
outlines by about one pixel.

Headless use: without a ``DISPLAY`` and without ``VTK_DEFAULT_OPENGL_WINDOW`` in the environment, importing this
module sets ``VTK_DEFAULT_OPENGL_WINDOW=vtkOSOpenGLRenderWindow`` (Mesa OSMesa, libosmesa6), which VTK 9.6's pip
wheel honours when it creates a window; otherwise VTK first tries X and prints a warning. On a headless machine
with an NVIDIA driver, set ``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow`` yourself to render on the GPU
(VTK falls back to OSMesa if EGL fails).
"""

from __future__ import annotations

import os
import threading

import numpy as np

from .camera import Camera
from .errors import BackendUnavailableError, RenderFMError
from .transfer import TransferFunction
from .volume import Volume

if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkOSOpenGLRenderWindow")

MAPPERS = ("auto", "cpu", "gpu")

#: Words in the OpenGL renderer string that mean software rendering.
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "osmesa", "software rasterizer", "svga3d")

#: The lighting every render uses (see :func:`vtk_light_setup`), for renderers that must match VTK's ``shaded``
#: look: one white headlight of intensity 1 at the camera, shining along the view direction, with a white ambient
#: colour, and two-sided lighting.
HEADLIGHT = {"type": "headlight", "intensity": 1.0, "color": (1.0, 1.0, 1.0), "ambient_color": (1.0, 1.0, 1.0),
             "two_sided": True}


def vtk_light_setup(renderer) -> None:
    """Give ``renderer`` one fixed light, :data:`HEADLIGHT`, instead of VTK's automatic one.

    VTK's renderer creates a light itself when it has none (``AutomaticLightCreation``): a ``vtkLight`` of type
    headlight (at the camera position, pointing at the focal point, following the camera), white, intensity 1, with
    ``TwoSidedLighting`` on. Its ambient colour is black, so VTK's CPU mapper ignores the volume property's ambient
    coefficient while the GPU mapper applies it. Here automatic creation is off and the same headlight is added with
    a white ambient colour, so both mappers shade alike. Measured with VTK 9.6 (unit gradient ``n`` of the scalar
    field, view direction ``v``, transfer-function colour ``c``, angle ``t`` between ``n`` and ``v``)::

        colour = c * (ambient + diffuse * |cos t|) + specular_term
        specular_term = specular * |cos t| ** specular_power          (CPU mapper: Blinn-Phong, half vector = v)
        specular_term = specular * max(0, cos 2t) ** specular_power   (GPU mapper: Phong reflection vector)

    Two-sided lighting flips normals towards the viewer (hence ``|cos t|``); samples with zero gradient (uniform
    regions) get the ambient term only. The specular term is white and is not multiplied by ``c``.
    """
    import vtk

    renderer.AutomaticLightCreationOff()
    renderer.RemoveAllLights()
    light = vtk.vtkLight()
    light.SetLightTypeToHeadlight()
    light.SetColor(*HEADLIGHT["color"])
    light.SetAmbientColor(*HEADLIGHT["ambient_color"])
    light.SetIntensity(HEADLIGHT["intensity"])
    renderer.AddLight(light)
    renderer.SetTwoSidedLighting(HEADLIGHT["two_sided"])


def volume_to_vtk(volume: Volume):
    """``(vtkImageData, vtkMatrix4x4)``: voxels (origin 0, voxel spacing, identity direction) and the rigid
    user matrix that places them in RAS mm, so that ``user_matrix @ (i*sx, j*sy, k*sz, 1) = ijk_to_ras @ (i, j, k,
    1)``. Left-handed axes are made right-handed by reversing the slice order (same RAS geometry)."""
    import vtk
    from vtk.util import numpy_support

    array = volume.array
    ijk_to_ras = volume.ijk_to_ras.copy()
    if np.linalg.det(ijk_to_ras[:3, :3]) < 0:
        array = array[::-1]
        ijk_to_ras[:3, 3] = (volume.ijk_to_ras @ np.array([0.0, 0.0, volume.shape[0] - 1, 1.0]))[:3]
        ijk_to_ras[:3, 2] = -ijk_to_ras[:3, 2]
    spacing = np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    image = vtk.vtkImageData()
    image.SetDimensions(int(array.shape[2]), int(array.shape[1]), int(array.shape[0]))
    image.SetSpacing(*(float(s) for s in spacing))
    image.SetOrigin(0.0, 0.0, 0.0)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(array, dtype=np.float32).ravel(), deep=True,
                                         array_type=vtk.VTK_FLOAT)
    scalars.SetName("HU")
    image.GetPointData().SetScalars(scalars)
    placement = np.eye(4)
    placement[:3, :3] = ijk_to_ras[:3, :3] / spacing[None, :]
    placement[:3, 3] = ijk_to_ras[:3, 3]
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            matrix.SetElement(row, col, float(placement[row, col]))
    return image, matrix


def volume_property(tf: TransferFunction):
    """A ``vtkVolumeProperty`` equivalent to ``tf``: RGB colour and scalar-opacity functions, gradient opacity
    (only when non-trivial), shading coefficients, ``ScalarOpacityUnitDistance`` and trilinear interpolation.

    VTK replaces a point when another is added at the same HU, so steps (repeated HU values) are kept by moving
    the later point up by a negligible 1e-3 HU. Note that VTK's CPU mapper evaluates gradient opacity on its own
    gradient scale (central differences in HU per mean voxel spacing, clamped at a quarter of the scalar range),
    which equals HU/mm only for 1 mm voxels.
    """
    import vtk

    color = vtk.vtkColorTransferFunction()
    color.SetColorSpaceToRGB()
    for hu, r, g, b in _strictly_increasing(tf.color_points):
        color.AddRGBPoint(hu, r, g, b)
    opacity = vtk.vtkPiecewiseFunction()
    for hu, a in _strictly_increasing(tf.opacity_points):
        opacity.AddPoint(hu, a)
    prop = vtk.vtkVolumeProperty()
    prop.SetColor(color)
    prop.SetScalarOpacity(opacity)
    prop.SetScalarOpacityUnitDistance(tf.unit_distance)
    prop.SetInterpolationTypeToLinear()
    if tf.has_gradient_opacity:
        gradient = vtk.vtkPiecewiseFunction()
        for g, a in _strictly_increasing(tf.gradient_opacity_points):
            gradient.AddPoint(g, a)
        prop.SetGradientOpacity(gradient)
        prop.DisableGradientOpacityOff()
    else:
        prop.DisableGradientOpacityOn()
    prop.SetShade(bool(tf.shade))
    prop.SetAmbient(tf.ambient)
    prop.SetDiffuse(tf.diffuse)
    prop.SetSpecular(tf.specular)
    prop.SetSpecularPower(tf.specular_power)
    return prop


def _strictly_increasing(points: np.ndarray) -> np.ndarray:
    points = np.array(points, dtype=np.float64)
    for row in range(1, len(points)):
        if points[row, 0] <= points[row - 1, 0]:
            points[row, 0] = points[row - 1, 0] + 1e-3
    return points


class _Context:
    """One offscreen render window + renderer per process, reused across calls (guarded by a lock)."""

    def __init__(self) -> None:
        import vtk

        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetAlphaBitPlanes(1)
        self.window.SetMultiSamples(0)
        self.window.SetSize(16, 16)
        self.renderer = vtk.vtkRenderer()
        self.renderer.SetBackground(0.0, 0.0, 0.0)
        self.renderer.SetBackgroundAlpha(0.0)
        self.window.AddRenderer(self.renderer)
        vtk_light_setup(self.renderer)
        self.window.Render()
        self.renderer_string = _opengl_renderer_string(self.window)

    @property
    def hardware(self) -> bool:
        text = self.renderer_string.lower()
        return bool(text) and not any(word in text for word in SOFTWARE_RENDERERS)


_LOCK = threading.Lock()
_CONTEXT: _Context | None = None


def _context() -> _Context:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = _Context()
    return _CONTEXT


def _opengl_renderer_string(window) -> str:
    for line in (window.ReportCapabilities() or "").splitlines():
        if line.lower().startswith("opengl renderer string"):
            return line.split(":", 1)[1].strip()
    return ""


def opengl_renderer() -> str:
    """The OpenGL renderer string of the offscreen window (e.g. ``"llvmpipe (LLVM 15.0.6, 256 bits)"``)."""
    with _LOCK:
        return _context().renderer_string


def choose_mapper(mapper: str = "auto") -> str:
    """Resolve ``"auto"`` to ``"gpu"`` on hardware OpenGL and ``"cpu"`` otherwise; validate the name."""
    if mapper not in MAPPERS:
        raise BackendUnavailableError(f"unknown VTK mapper {mapper!r}; choose one of {', '.join(MAPPERS)}")
    if mapper != "auto":
        return mapper
    with _LOCK:
        return "gpu" if _context().hardware else "cpu"


def default_sample_distance(volume: Volume) -> float:
    """Half the smallest voxel spacing (mm), as Slicer's 'Normal' quality (oversampling factor 2)."""
    return 0.5 * float(volume.spacing.min())


class VtkRaycaster:
    """A volume and transfer function loaded into VTK once, rendered from any number of cameras.

    VTK builds its per-volume data (the CPU mapper's gradient tables, the GPU mapper's 3D textures) on the first
    render and reuses it for later cameras, as Slicer does while the user rotates the view; use this class for
    several views or for timings. ``mapper``, ``sample_distance_mm``: as in :func:`render_vtk`.
    """

    def __init__(self, volume: Volume, tf: TransferFunction, mapper: str = "auto",
                 sample_distance_mm: float | None = None) -> None:
        import vtk

        self.mapper = choose_mapper(mapper)
        step = default_sample_distance(volume) if sample_distance_mm is None else float(sample_distance_mm)
        if not (np.isfinite(step) and step > 0):
            raise RenderFMError(f"sample distance must be a positive number of mm, got {sample_distance_mm}")
        self.sample_distance_mm = step
        image, placement = volume_to_vtk(volume)
        if self.mapper == "cpu":
            self._mapper = vtk.vtkFixedPointVolumeRayCastMapper()
            self._mapper.SetImageSampleDistance(1.0)
        else:
            self._mapper = vtk.vtkGPUVolumeRayCastMapper()
        self._mapper.LockSampleDistanceToInputSpacingOff()
        self._mapper.AutoAdjustSampleDistancesOff()
        self._mapper.SetSampleDistance(step)
        self._mapper.SetBlendModeToComposite()
        self._mapper.SetInputData(image)
        self._actor = vtk.vtkVolume()
        self._actor.SetMapper(self._mapper)
        self._actor.SetUserMatrix(placement)
        self.set_transfer_function(tf)

    def set_transfer_function(self, tf: TransferFunction) -> None:
        """Use another transfer function for the next renders (the volume data stay loaded)."""
        self._actor.SetProperty(volume_property(tf))

    def render(self, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
        """``(rgb [H, W, 3], alpha [H, W, 1])`` float32 for ``camera``, as :func:`render_vtk`."""
        import vtk
        from vtk.util import numpy_support

        width, height = camera.width, camera.height
        with _LOCK:
            context = _context()
            window, renderer = context.window, context.renderer
            window.SetSize(width, height)
            renderer.AddVolume(self._actor)
            try:
                camera.to_vtk(renderer.GetActiveCamera())
                renderer.ResetCameraClippingRange()
                window.Render()
                pixels = vtk.vtkFloatArray()
                window.GetRGBAPixelData(0, 0, width - 1, height - 1, 0, pixels)
            finally:
                renderer.RemoveVolume(self._actor)
        rgba = numpy_support.vtk_to_numpy(pixels).reshape(height, width, 4)[::-1]
        rgba = np.clip(rgba, 0.0, 1.0).astype(np.float32)
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3:4])

    def close(self) -> None:
        """Free the graphics resources (textures) this volume holds in the shared window."""
        with _LOCK:
            if _CONTEXT is not None:
                self._mapper.ReleaseGraphicsResources(_CONTEXT.window)

    def __enter__(self) -> "VtkRaycaster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def render_vtk(volume: Volume, tf: TransferFunction, camera: Camera, mapper: str = "auto",
               sample_distance_mm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ray cast ``volume`` with ``tf`` from ``camera`` in VTK, offscreen (one view; see :class:`VtkRaycaster`).

    ``mapper``: ``"cpu"``, ``"gpu"`` or ``"auto"`` (see :func:`choose_mapper`). ``sample_distance_mm`` is the
    distance between samples along a ray (default :func:`default_sample_distance`); opacity is corrected for it
    with the TF's unit distance, as in Slicer. Shading (when ``tf.shade``) uses :data:`HEADLIGHT`.
    Returns ``(rgb, alpha)``: float32 ``[H, W, 3]`` linear RGB premultiplied by alpha (i.e. over black) and
    ``[H, W, 1]``, ``H, W = camera.height, camera.width``, row 0 at the top.
    """
    with VtkRaycaster(volume, tf, mapper, sample_distance_mm) as raycaster:
        return raycaster.render(camera)
