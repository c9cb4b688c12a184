"""Slicer's NATIVE volume rendering next to RenderFM, headless, with Slicer's own classes (PyPI ``slicer-core``).

The scene is built as Slicer builds it: application logic, volume-rendering logic (GPU ray cast method, Slicer's
default), a scalar volume node with a volume-rendering display node whose volume property holds a preset, a view
node, the 3D displayable managers (camera, view, volume rendering) on an offscreen render window, and the camera
node they create. RenderFM renders the same volume node for the same camera node through the module's logic. Both
must show the volume in the same place (alpha masks IoU >= 0.9), before and after the camera node is orbited.
The side-by-side picture is written to the test's tmp folder, and to ``docs/slicer_side_by_side.png`` when
``RENDERFM_UPDATE_DOCS=1`` (how the README's picture is made).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkOSOpenGLRenderWindow")
slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
vtk = pytest.importorskip("vtk")
torch = pytest.importorskip("torch")

from RenderFMLib import slicer_bridge as sb  # noqa: E402
from RenderFMLib.camera import orbit_cameras  # noqa: E402
from RenderFMLib.image import save_png  # noqa: E402
from RenderFMLib.phantom import make_phantom  # noqa: E402
from RenderFMLib.presets import get_preset  # noqa: E402
from RenderFMLib.slicer_logic import FOLLOW_VOLUME_RENDERING, RenderFMSceneLogic, RenderSettings  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SIZE = 128
PRESET = "CT-Bone"
#: A pixel belongs to the volume's silhouette when its alpha exceeds this.
MASK_ALPHA = 0.3


class HeadlessThreeDView:
    """A Slicer 3D view without Qt: MRML displayable managers drawing into an offscreen VTK window.

    This is what ``qMRMLThreeDView`` sets up inside Slicer, minus the widget: the managers observe the view node
    and the displayable nodes and keep VTK props in the renderer up to date; the camera manager owns the view's
    camera node, whose ``vtkCamera`` is the renderer's active camera.
    """

    MANAGERS = ("vtkMRMLCameraDisplayableManager", "vtkMRMLViewDisplayableManager",
                "vtkMRMLVolumeRenderingDisplayableManager")

    def __init__(self, scene, application_logic, width: int, height: int):
        self.width, self.height = width, height
        self.renderer = vtk.vtkRenderer()
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetAlphaBitPlanes(1)
        self.window.SetMultiSamples(0)
        self.window.AddRenderer(self.renderer)
        self.window.SetSize(width, height)
        self.interactor = vtk.vtkRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)
        self.interactor.Initialize()
        factory = slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance()
        factory.SetMRMLApplicationLogic(application_logic)
        for name in self.MANAGERS:
            if not factory.IsDisplayableManagerRegistered(name):
                factory.RegisterDisplayableManager(name)
        self.group = slicer.vtkMRMLDisplayableManagerGroup()
        self.group.Initialize(factory, self.renderer)
        view_logic = slicer.vtkMRMLViewLogic()
        view_logic.SetMRMLApplicationLogic(application_logic)
        view_logic.SetMRMLScene(scene)
        self.view_logic = view_logic
        self.view_node = view_logic.AddViewNode("1")
        # A black, transparent background without the bounding box, so alpha is the volume's coverage.
        self.view_node.SetBoxVisible(False)
        self.view_node.SetAxisLabelsVisible(False)
        self.view_node.SetBackgroundColor(0.0, 0.0, 0.0)
        self.view_node.SetBackgroundColor2(0.0, 0.0, 0.0)
        self.group.SetMRMLDisplayableNode(self.view_node)
        self.renderer.SetBackgroundAlpha(0.0)
        self.camera_node = self.group.GetDisplayableManagerByClassName(
            "vtkMRMLCameraDisplayableManager").GetCameraNode()

    def render(self) -> np.ndarray:
        """Render and read back RGBA float32 ``[H, W, 4]`` in [0, 1], row 0 at the top."""
        from vtkmodules.util import numpy_support

        self.renderer.ResetCameraClippingRange()
        self.window.Render()
        pixels = vtk.vtkFloatArray()
        self.window.GetRGBAPixelData(0, 0, self.width - 1, self.height - 1, 0, pixels)
        rgba = numpy_support.vtk_to_numpy(pixels).reshape(self.height, self.width, 4)[::-1]
        return np.clip(rgba, 0.0, 1.0).astype(np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def best_shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """The (rows, columns) shift of ``b`` that best aligns it with ``a`` (peak of their cross-correlation)."""
    fa = np.fft.rfft2(a - a.mean())
    fb = np.fft.rfft2(b - b.mean())
    corr = np.fft.irfft2(fa * np.conj(fb), s=a.shape)
    dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    h, w = a.shape
    return (dy - h if dy > h // 2 else dy), (dx - w if dx > w // 2 else dx)


@pytest.fixture(scope="module")
def slicer_scene():
    """Scene, logics, the phantom's volume node shown with Slicer's native volume rendering, and a 3D view."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    scene = slicer.vtkMRMLScene()
    application_logic = slicer.vtkSlicerApplicationLogic()
    application_logic.SetMRMLScene(scene)
    vr_logic = slicer.vtkSlicerVolumeRenderingLogic()
    vr_logic.SetMRMLScene(scene)
    vr_logic.SetDefaultRenderingMethod("vtkMRMLGPURayCastVolumeRenderingDisplayNode")
    phantom = make_phantom(spacing_mm=4.0)
    volume_node = sb.node_from_volume(phantom.volume, scene, name="phantom")
    logic = RenderFMSceneLogic()
    display = logic.show_native_volume_rendering(volume_node, vr_logic, get_preset(PRESET))
    view = HeadlessThreeDView(scene, application_logic, SIZE, SIZE)
    camera = orbit_cameras(phantom.volume.center_ras(), phantom.volume.radius_mm(), 1, SIZE, SIZE)[0]
    sb.camera_to_node(camera, view.camera_node)
    yield {"scene": scene, "volume_node": volume_node, "display": display, "view": view, "logic": logic,
           "phantom": phantom}
    scene.Clear(1)


def render_both(ctx) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Slicer's native view and RenderFM for the view's camera node: (native_rgb, native_alpha, rgb, alpha, info)."""
    native = ctx["view"].render()
    # The TF is not given: RenderFM follows the volume's volume-property node, as the module does by default.
    settings = RenderSettings(tf_source=FOLLOW_VOLUME_RENDERING, method="analytic", device="cpu", backend="auto",
                              spacing_mm=4.0)
    rgb, alpha, info = ctx["logic"].render(ctx["volume_node"], ctx["view"].camera_node, settings,
                                           width=SIZE, height=SIZE)
    return native[..., :3], native[..., 3:], rgb, alpha, info


def test_native_view_shows_the_preset(slicer_scene):
    display = slicer_scene["display"]
    assert display.IsA("vtkMRMLGPURayCastVolumeRenderingDisplayNode")
    assert display.GetVisibility()
    prop = display.GetVolumePropertyNode()
    tf = sb.tf_from_volume_property(prop)
    np.testing.assert_allclose(tf.opacity_points, get_preset(PRESET).opacity_points)
    # Slicer measures the unit distance in voxels (4 mm here): 1 mm is written as 0.25 and read back as 1 mm.
    assert prop.GetVolumeProperty().GetScalarOpacityUnitDistance() == pytest.approx(0.25)
    volume_node = slicer_scene["volume_node"]
    assert sb.tf_from_volume_property(prop, voxel_size=sb.voxel_size_mm(volume_node)).unit_distance == \
        pytest.approx(get_preset(PRESET).unit_distance)


def test_side_by_side_follows_the_camera_node(slicer_scene, tmp_path):
    view = slicer_scene["view"]
    n_rgb, n_alpha, rgb, alpha, info = render_both(slicer_scene)
    native_mask, ours_mask = n_alpha[..., 0] > MASK_ALPHA, alpha[..., 0] > MASK_ALPHA
    assert 0.05 < native_mask.mean() < 0.9, "the volume should cover part of the view"
    first_iou = iou(native_mask, ours_mask)
    assert first_iou >= 0.9, f"RenderFM and Slicer disagree on where the volume is: IoU {first_iou:.3f}"
    assert max(map(abs, best_shift(n_alpha[..., 0], alpha[..., 0]))) <= 1, "the two views are offset"
    assert info["gaussians"] > 1000 and info["device"] == "cpu"

    sb.rotate_camera_node(view.camera_node, azimuth_deg=60.0)
    n_rgb2, n_alpha2, rgb2, alpha2, info2 = render_both(slicer_scene)
    native_mask2, ours_mask2 = n_alpha2[..., 0] > MASK_ALPHA, alpha2[..., 0] > MASK_ALPHA
    second_iou = iou(native_mask2, ours_mask2)
    assert second_iou >= 0.9, f"after orbiting the camera node: IoU {second_iou:.3f}"
    assert max(map(abs, best_shift(n_alpha2[..., 0], alpha2[..., 0]))) <= 1, "the two views are offset"
    # Both views followed the camera: their silhouettes changed, and RenderFM's new silhouette matches Slicer's
    # new one clearly better than its old one does.
    assert iou(native_mask, native_mask2) < 0.9 and iou(ours_mask, ours_mask2) < 0.9
    assert second_iou > iou(native_mask2, ours_mask) + 0.05
    assert info2["gaussians"] == info["gaussians"], "moving the camera must not re-predict"

    top = np.concatenate([n_rgb, rgb], axis=1)
    bottom = np.concatenate([n_rgb2, rgb2], axis=1)
    picture = np.concatenate([top, bottom], axis=0)
    picture_alpha = np.concatenate([np.concatenate([n_alpha, alpha], 1), np.concatenate([n_alpha2, alpha2], 1)], 0)
    save_png(tmp_path / "slicer_side_by_side.png", picture, picture_alpha)
    if os.environ.get("RENDERFM_UPDATE_DOCS") == "1":
        save_png(REPO / "docs" / "slicer_side_by_side.png", picture, picture_alpha)
    assert (tmp_path / "slicer_side_by_side.png").stat().st_size > 1000
