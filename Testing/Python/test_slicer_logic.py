"""The RenderFM module's logic driven without any GUI, on real MRML scenes from the PyPI package ``slicer-core``.

Acceptance: given a volume node (here under an oblique parent transform) and a camera node, the logic produces the
image the library renders for the same volume and camera. Also: scenes are reused until an input changes, the
volume-rendering TF is followed, segments hide organs, and missing CUDA or memory lead to a fallback with a message.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
vtk = pytest.importorskip("vtk")
torch = pytest.importorskip("torch")

from RenderFMLib import pipeline  # noqa: E402
from RenderFMLib import slicer_bridge as sb  # noqa: E402
from RenderFMLib.camera import Camera, orbit_cameras  # noqa: E402
from RenderFMLib.errors import RenderFMError  # noqa: E402
from RenderFMLib.metrics import psnr  # noqa: E402
from RenderFMLib.phantom import make_phantom  # noqa: E402
from RenderFMLib.presets import get_preset  # noqa: E402
from RenderFMLib.slicer_logic import FOLLOW_VOLUME_RENDERING, RenderFMSceneLogic, RenderSettings  # noqa: E402
from RenderFMLib.volume import Volume  # noqa: E402

SPACING = 6.0
SIZE = 64
PRESET = "CT-Bone"


def rigid(angle_deg: float, axis, translation) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = math.radians(angle_deg)
    m = np.eye(4)
    m[:3, :3] = np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k
    m[:3, 3] = translation
    return m


@pytest.fixture(scope="module")
def phantom():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return make_phantom(spacing_mm=SPACING)


@pytest.fixture()
def ctx(phantom):
    """A scene with the phantom's volume node under an oblique linear transform, a camera node looking at it."""
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    vr_logic = slicer.vtkSlicerVolumeRenderingLogic()
    vr_logic.SetMRMLScene(scene)
    volume_node = sb.node_from_volume(phantom.volume, scene, name="phantom")
    transform = rigid(25.0, [1, 1, 0], [10.0, -20.0, 5.0])
    transform_node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "oblique")
    transform_node.SetMatrixTransformToParent(sb._numpy_to_matrix(transform))
    volume_node.SetAndObserveTransformNodeID(transform_node.GetID())
    world = Volume(phantom.volume.array, transform @ phantom.volume.ijk_to_ras, name="world")
    camera = orbit_cameras(world.center_ras(), world.radius_mm(), 1, SIZE, SIZE, elevation_deg=15.0,
                           start_azimuth_deg=40.0)[0]
    camera_node = scene.AddNewNodeByClass("vtkMRMLCameraNode", "camera")
    sb.camera_to_node(camera, camera_node)
    yield {"scene": scene, "vr_logic": vr_logic, "volume_node": volume_node, "camera_node": camera_node,
           "world": world, "camera": camera, "logic": RenderFMSceneLogic()}
    scene.Clear(1)


def analytic(tf_source=f"preset:{PRESET}", **changes) -> RenderSettings:
    return RenderSettings(tf_source=tf_source, method="analytic", device="cpu", spacing_mm=SPACING, **changes)


def test_logic_render_matches_the_library(ctx):
    rgb, alpha, info = ctx["logic"].render(ctx["volume_node"], ctx["camera_node"], analytic(), width=SIZE,
                                           height=SIZE)
    assert rgb.shape == (SIZE, SIZE, 3) and alpha.shape == (SIZE, SIZE, 1)
    assert 0.05 < float((alpha > 0.3).mean()) < 0.95
    scene = pipeline.prepare_scene(ctx["world"], get_preset(PRESET), method="analytic", spacing_mm=SPACING,
                                   device="cpu")
    library = pipeline.render_scene(scene, ctx["camera"], backend=info["backend"])
    np.testing.assert_allclose(alpha, library.alpha, atol=2e-3)
    assert psnr(rgb, library.rgb) > 45.0
    assert info["gaussians"] == scene.num_gaussians and info["device"] == "cpu" and info["method"] == "analytic"
    assert info["fps"] > 0 and info["notes"] == []


def test_scene_is_reused_until_the_followed_tf_changes(ctx):
    logic, volume_node = ctx["logic"], ctx["volume_node"]
    with pytest.raises(sb.SceneError, match="no volume rendering yet"):
        logic.render(volume_node, ctx["camera_node"], analytic(FOLLOW_VOLUME_RENDERING), width=SIZE, height=SIZE)
    display = logic.show_native_volume_rendering(volume_node, ctx["vr_logic"], get_preset(PRESET))
    settings = analytic(FOLLOW_VOLUME_RENDERING)
    logic.render(volume_node, ctx["camera_node"], settings, width=SIZE, height=SIZE)
    first = logic.prepared
    assert first.scene.tf.unit_distance == pytest.approx(get_preset(PRESET).unit_distance)
    sb.rotate_camera_node(ctx["camera_node"], azimuth_deg=30.0)
    logic.render(volume_node, ctx["camera_node"], settings, width=SIZE, height=SIZE)
    assert logic.prepared is first, "a camera move must not re-predict"
    # The user edits the TF in the Volume Rendering module: opacity of soft tissue drops to zero.
    opacity = display.GetVolumePropertyNode().GetVolumeProperty().GetScalarOpacity()
    opacity.RemoveAllPoints()
    opacity.AddPoint(-1000.0, 0.0)
    opacity.AddPoint(300.0, 0.0)
    opacity.AddPoint(700.0, 0.8)
    _, alpha, _ = logic.render(volume_node, ctx["camera_node"], settings, width=SIZE, height=SIZE)
    assert logic.prepared is not first
    assert logic.prepared.num_gaussians < first.num_gaussians
    np.testing.assert_allclose(logic.prepared.scene.tf.opacity_points[-1], [700.0, 0.8])


def test_visible_segments_restrict_the_render(ctx, phantom):
    scene, volume_node = ctx["scene"], ctx["volume_node"]
    from vtkmodules.util import numpy_support

    labels = np.where(np.isin(phantom.labels, [12, 13, 14]), phantom.labels, 0).astype(np.uint8)  # bones
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "bones")
    image = vtk.vtkImageData()
    image.SetDimensions(labels.shape[2], labels.shape[1], labels.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(labels.reshape(-1), deep=True,
                                                               array_type=vtk.VTK_UNSIGNED_CHAR))
    labelmap.SetAndObserveImageData(image)
    labelmap.SetIJKToRASMatrix(sb._numpy_to_matrix(phantom.volume.ijk_to_ras))
    labelmap.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segments")
    segmentation.CreateDefaultDisplayNodes()
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    logic = ctx["logic"]
    _, whole, _ = logic.render(volume_node, ctx["camera_node"], analytic(), width=SIZE, height=SIZE)
    _, bones, _ = logic.render(volume_node, ctx["camera_node"], analytic(), segmentation_node=segmentation,
                               width=SIZE, height=SIZE)
    assert 0.01 < float((bones > 0.3).mean()) < 0.8 * float((whole > 0.3).mean())
    display = segmentation.GetDisplayNode()
    display.SetAllSegmentsVisibility(False)
    with pytest.raises(sb.SceneError, match="no segment .* is visible"):
        logic.render(volume_node, ctx["camera_node"], analytic(), segmentation_node=segmentation,
                     width=SIZE, height=SIZE)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only fallback")
def test_cuda_request_on_a_cpu_machine_falls_back_with_a_message(ctx):
    settings = RenderSettings(tf_source=f"preset:{PRESET}", method="analytic", device="cuda", spacing_mm=SPACING)
    _, alpha, info = ctx["logic"].render(ctx["volume_node"], ctx["camera"], settings, width=SIZE, height=SIZE)
    assert info["device"] == "cpu" and alpha.max() > 0.5
    assert any("no usable CUDA GPU" in note for note in info["notes"])


def test_out_of_memory_retries_on_a_coarser_grid(ctx, monkeypatch):
    real = pipeline.prepare_scene
    spacings = []

    def runs_out_of_memory_once(*args, **kwargs):
        spacings.append(kwargs["spacing_mm"])
        if len(spacings) == 1:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "prepare_scene", runs_out_of_memory_once)
    _, alpha, info = ctx["logic"].render(ctx["volume_node"], ctx["camera"], analytic(), width=SIZE, height=SIZE)
    assert spacings == [SPACING, SPACING * 1.5]
    assert info["spacing_mm"] == pytest.approx(SPACING * 1.5)
    assert any("Ran out of memory" in note for note in info["notes"]) and alpha.max() > 0.5


def test_confidence_and_compare(ctx):
    logic = ctx["logic"]
    logic.render(ctx["volume_node"], ctx["camera_node"], analytic(), width=SIZE, height=SIZE)
    confidence = logic.check_confidence(logic.prepared, views=1, size=32)
    assert math.isfinite(confidence["psnr"]) and confidence["psnr"] > 10.0
    assert "dB PSNR" in confidence["message"] and logic.prepared.confidence is confidence
    camera = Camera.from_vtk(ctx["camera_node"].GetCamera(), 48, 48)
    result = logic.compare(logic.prepared, camera, native_rgb=np.zeros((48, 48, 3), np.float32))
    assert result["reference"]["rgb"].shape == (48, 48, 3)
    assert result["renderfm"]["psnr"] > result["native"]["psnr"]
    assert -1.0 <= result["renderfm"]["ssim"] <= 1.0


def test_settings_are_validated():
    with pytest.raises(RenderFMError, match="method"):
        RenderSettings(method="magic")
    with pytest.raises(RenderFMError, match="transfer function source"):
        RenderSettings(tf_source="CT-Bone")
    with pytest.raises(RenderFMError, match="working resolution"):
        RenderSettings(spacing_mm=-1.0)


def test_fine_tune_and_export(ctx, tmp_path):
    logic = ctx["logic"]
    coarse = RenderSettings(tf_source=f"preset:{PRESET}", method="analytic", device="cpu", spacing_mm=12.0)
    logic.render(ctx["volume_node"], ctx["camera_node"], coarse, width=SIZE, height=SIZE)
    prepared = logic.prepared
    stages = []
    result = logic.fine_tune(prepared, seconds=0.5, views=1, size=16,
                             progress=lambda stage, fraction: stages.append((stage, fraction)))
    assert result["iterations"] >= 1 and math.isfinite(result["psnr_before"]) and math.isfinite(result["psnr_after"])
    assert "optimising" in {stage for stage, _ in stages}
    assert (logic.prepared.scene.info.get("fine_tuned_iterations") == result["iterations"]) == result["applied"]
    with pytest.raises(InterruptedError):
        logic.fine_tune(prepared, seconds=0.5, views=1, size=16, cancel=lambda: True)
    path = logic.export_ply(logic.prepared, tmp_path / "scene.ply")
    from RenderFMLib.ply import read_6dgs_ply

    gaussians, lam = read_6dgs_ply(path)
    assert len(gaussians) == logic.prepared.num_gaussians and lam == pytest.approx(logic.prepared.scene.lam)
