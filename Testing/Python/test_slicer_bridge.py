"""RenderFMLib.slicer_bridge against Slicer's real MRML classes (PyPI ``slicer-core``), no mocks.

Builds scenes with volumes (oblique, anisotropic, under linear and non-linear parent transforms), volume-property
nodes, segmentations and camera nodes, converts them and checks geometry, values and round trips.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
vtk = pytest.importorskip("vtk")
pytest.importorskip("torch")

from RenderFMLib import slicer_bridge as sb  # noqa: E402
from RenderFMLib.camera import Camera  # noqa: E402
from RenderFMLib.transfer import TransferFunction  # noqa: E402
from RenderFMLib.volume import Volume  # noqa: E402


def rotation(axis, angle_deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = math.radians(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * k @ k


def oblique_volume() -> Volume:
    """A 10x12x14 (k, j, i) volume with a rotated, anisotropic, shifted grid and position-coded values."""
    k, j, i = np.mgrid[0:10, 0:12, 0:14]
    array = (1000.0 * k + 100.0 * j + i - 1000.0).astype(np.float32)
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = rotation([1, 2, 3], 25.0) @ np.diag([0.7, 0.9, 2.5])
    ijk_to_ras[:3, 3] = [-40.0, 12.5, 80.0]
    return Volume(array, ijk_to_ras, name="oblique")


def linear_transform_node(scene, matrix: np.ndarray, name: str):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(sb._numpy_to_matrix(matrix))
    return node


def rigid(axis, angle_deg, translation) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation(axis, angle_deg)
    m[:3, 3] = translation
    return m


@pytest.fixture()
def scene():
    s = slicer.vtkMRMLScene()
    yield s
    s.Clear(1)


def test_volume_from_node_made_the_slicer_way(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ct")
    image = vtk.vtkImageData()
    image.SetDimensions(5, 4, 3)  # i, j, k
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    from vtkmodules.util import numpy_support

    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    values[:] = np.arange(60) * 10 - 300
    node.SetAndObserveImageData(image)
    node.SetSpacing(0.5, 0.75, 3.0)
    node.SetOrigin(10.0, -20.0, 30.0)
    directions = rotation([0, 0, 1], 30.0)
    node.SetIJKToRASDirectionMatrix(sb._numpy_to_matrix(np.block([[directions, np.zeros((3, 1))],
                                                                  [np.zeros((1, 3)), np.ones((1, 1))]])))
    volume = sb.volume_from_node(node)
    assert volume.shape == (3, 4, 5)
    assert volume.array.dtype == np.float32
    # Slicer's [k, j, i] order: voxel (i=4, j=1, k=2) is at flat index i + 5 j + 20 k.
    assert volume.array[2, 1, 4] == (4 + 5 * 1 + 20 * 2) * 10 - 300
    expected = np.eye(4)
    expected[:3, :3] = directions @ np.diag([0.5, 0.75, 3.0])
    expected[:3, 3] = [10.0, -20.0, 30.0]
    np.testing.assert_allclose(volume.ijk_to_ras, expected, atol=1e-9)
    assert volume.name == "ct"


def test_volume_round_trip_oblique(scene):
    volume = oblique_volume()
    node = sb.node_from_volume(volume, scene)
    assert node.GetScene() is scene and node.IsA("vtkMRMLScalarVolumeNode")
    assert node.GetDisplayNode() is not None
    back = sb.volume_from_node(node)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.ijk_to_ras, volume.ijk_to_ras, atol=1e-9)
    # The node's own geometry API agrees: RAS of voxel (i, j, k) = (3, 5, 7).
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ras = matrix.MultiplyPoint((3.0, 5.0, 7.0, 1.0))[:3]
    np.testing.assert_allclose(ras, volume.ijk_to_ras_points(np.array([3.0, 5.0, 7.0])), atol=1e-9)


def test_parent_transforms_are_hardened(scene):
    volume = oblique_volume()
    node = sb.node_from_volume(volume, scene)
    inner = linear_transform_node(scene, rigid([0, 1, 0], 40.0, [5.0, -7.0, 11.0]), "inner")
    outer = linear_transform_node(scene, rigid([1, 0, 0], -15.0, [0.0, 30.0, 0.0]), "outer")
    inner.SetAndObserveTransformNodeID(outer.GetID())
    node.SetAndObserveTransformNodeID(inner.GetID())
    world = sb.volume_from_node(node)
    expected = rigid([1, 0, 0], -15.0, [0.0, 30.0, 0.0]) @ rigid([0, 1, 0], 40.0, [5.0, -7.0, 11.0]) @ volume.ijk_to_ras
    np.testing.assert_allclose(world.ijk_to_ras, expected, atol=1e-9)
    np.testing.assert_array_equal(world.array, volume.array)
    # Slicer's own point transform agrees for a voxel corner.
    local = volume.ijk_to_ras_points(np.array([13.0, 0.0, 9.0]))
    slicer_world = [0.0, 0.0, 0.0]
    node.TransformPointToWorld(list(local), slicer_world)
    np.testing.assert_allclose(world.ijk_to_ras_points(np.array([13.0, 0.0, 9.0])), slicer_world, atol=1e-6)


def test_non_linear_transform_is_a_clear_error(scene):
    node = sb.node_from_volume(oblique_volume(), scene)
    grid = vtk.vtkImageData()
    grid.SetDimensions(3, 3, 3)
    grid.SetSpacing(50.0, 50.0, 50.0)
    grid.SetOrigin(-50.0, -50.0, -50.0)
    grid.AllocateScalars(vtk.VTK_DOUBLE, 3)
    from vtkmodules.util import numpy_support

    numpy_support.vtk_to_numpy(grid.GetPointData().GetScalars())[:] = 2.0
    warp = slicer.vtkOrientedGridTransform()
    warp.SetDisplacementGridData(grid)
    transform = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    transform.SetAndObserveTransformToParent(warp)
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(sb.SceneError, match="non-linear"):
        sb.volume_from_node(node)


def test_bad_nodes_raise_scene_errors(scene):
    with pytest.raises(sb.SceneError, match="no volume"):
        sb.volume_from_node(None)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(sb.SceneError, match="no image data"):
        sb.volume_from_node(empty)
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", "model")
    with pytest.raises(sb.SceneError, match="not a scalar volume"):
        sb.volume_from_node(model)


def property_node(scene):
    """A new volume-property node (the class is registered in the scene only by the volume rendering logic)."""
    node = slicer.vtkMRMLVolumePropertyNode()
    node.SetName("vp")
    scene.AddNode(node)
    return node


def sample_tf() -> TransferFunction:
    return TransferFunction(
        color_points=[[-1000, 0, 0, 0], [-200, 0.6, 0.3, 0.2], [150, 0.9, 0.8, 0.7], [1500, 1, 1, 0.95]],
        opacity_points=[[-1000, 0], [-150, 0], [200, 0.4], [1500, 0.8]],
        gradient_opacity_points=[[0, 0.3], [40, 1.0]], unit_distance=2.5, shade=True, ambient=0.2, diffuse=0.7,
        specular=0.35, specular_power=25.0, name="sample")


def test_transfer_function_round_trip_through_a_new_property_node(scene):
    node = property_node(scene)
    assert node.GetVolumeProperty().GetScalarOpacity().GetSize() > 0  # default points that must go
    tf = sample_tf()
    sb.tf_to_volume_property(tf, node)
    prop = node.GetVolumeProperty()
    assert prop.GetRGBTransferFunction().GetSize() == len(tf.color_points)
    assert prop.GetScalarOpacity().GetSize() == len(tf.opacity_points)
    back = sb.tf_from_volume_property(node)
    np.testing.assert_allclose(back.color_points, tf.color_points)
    np.testing.assert_allclose(back.opacity_points, tf.opacity_points)
    np.testing.assert_allclose(back.gradient_opacity_points, tf.gradient_opacity_points)
    for attr in ("unit_distance", "ambient", "diffuse", "specular", "specular_power"):
        assert getattr(back, attr) == pytest.approx(getattr(tf, attr))
    assert back.shade is True
    assert back.name == "vp"
    # No gradient opacity: written as disabled, read back as None.
    flat = TransferFunction(tf.color_points, tf.opacity_points, None, shade=False, name="flat")
    sb.tf_to_volume_property(flat, node)
    again = sb.tf_from_volume_property(node)
    assert again.gradient_opacity_points is None and again.shade is False


def test_transfer_function_evaluates_like_vtk(scene):
    import torch

    node = property_node(scene)
    tf = sample_tf()
    sb.tf_to_volume_property(tf, node)
    prop = node.GetVolumeProperty()
    hu = np.linspace(-1200.0, 1800.0, 301)
    vtk_rgb = np.array([prop.GetRGBTransferFunction().GetColor(v) for v in hu])
    vtk_opacity = np.array([prop.GetScalarOpacity().GetValue(v) for v in hu])
    ours = tf.color(torch.tensor(hu, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(ours, vtk_rgb, atol=1e-5)
    np.testing.assert_allclose(tf.opacity(torch.tensor(hu, dtype=torch.float32)).numpy(), vtk_opacity, atol=1e-5)


def test_non_linear_vtk_nodes_are_tabulated(scene):
    import torch

    node = property_node(scene)
    sb.tf_to_volume_property(sample_tf(), node)
    opacity = node.GetVolumeProperty().GetScalarOpacity()
    opacity.RemoveAllPoints()
    opacity.AddPoint(-100.0, 0.0, 0.2, 0.0)  # midpoint 0.2: non-linear between the nodes
    opacity.AddPoint(400.0, 0.9, 0.5, 0.0)
    tf = sb.tf_from_volume_property(node)
    hu = np.linspace(-200.0, 500.0, 97)
    expected = np.array([opacity.GetValue(v) for v in hu])
    np.testing.assert_allclose(tf.opacity(torch.tensor(hu, dtype=torch.float32)).numpy(), expected, atol=0.01)


def test_volume_rendering_nodes_are_found(scene):
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    logic = slicer.vtkSlicerVolumeRenderingLogic()
    logic.SetMRMLScene(scene)
    logic.SetDefaultRenderingMethod("vtkMRMLCPURayCastVolumeRenderingDisplayNode")
    node = sb.node_from_volume(oblique_volume(), scene)
    assert sb.volume_rendering_display_node(node) is None
    assert sb.volume_property_node_of(node) is None
    display = logic.CreateDefaultVolumeRenderingNodes(node)
    assert sb.volume_rendering_display_node(node) is display
    vp = sb.volume_property_node_of(node)
    assert vp is not None and vp.IsA("vtkMRMLVolumePropertyNode")
    sb.tf_to_volume_property(sample_tf(), vp)
    assert sb.tf_from_volume_property(vp).opacity_points.shape == (4, 2)


def segmentation_from_labels(scene, volume_node, labels: np.ndarray):
    """A segmentation node made from a label array on the volume's grid, via Slicer's import logic."""
    from vtkmodules.util import numpy_support

    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    image = vtk.vtkImageData()
    image.SetDimensions(labels.shape[2], labels.shape[1], labels.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(labels.reshape(-1), deep=True,
                                                               array_type=vtk.VTK_UNSIGNED_CHAR))
    labelmap.SetAndObserveImageData(image)
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    labelmap.SetIJKToRASMatrix(matrix)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "organs")
    segmentation.CreateDefaultDisplayNodes()
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    scene.RemoveNode(labelmap)
    return segmentation


def test_segment_mask_on_the_volume_grid(scene):
    volume = oblique_volume()
    node = sb.node_from_volume(volume, scene)
    labels = np.zeros(volume.shape, np.uint8)
    labels[2:5, 3:8, 4:9] = 1
    labels[6:9, 1:4, 10:13] = 2
    segmentation = segmentation_from_labels(scene, node, labels)
    ids = [segmentation.GetSegmentation().GetNthSegmentID(n) for n in range(2)]
    assert sb.visible_segment_ids(segmentation) == ids

    both = sb.mask_from_segmentation(segmentation, node)
    assert both.dtype == np.uint8 and both.shape == volume.shape
    np.testing.assert_array_equal(both, (labels > 0).astype(np.uint8))

    segmentation.GetDisplayNode().SetSegmentVisibility(ids[0], False)
    assert sb.visible_segment_ids(segmentation) == ids[1:]
    np.testing.assert_array_equal(sb.mask_from_segmentation(segmentation, node), (labels == 2).astype(np.uint8))
    np.testing.assert_array_equal(sb.mask_from_segmentation(segmentation, node, [ids[0]]),
                                  (labels == 1).astype(np.uint8))
    assert sb.mask_from_segmentation(segmentation, node, []).sum() == 0
    with pytest.raises(sb.SceneError, match="no segment 'liver'"):
        sb.mask_from_segmentation(segmentation, node, ["liver"])
    # The temporary labelmap is gone: only the volume and the segmentation remain.
    assert scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0


def test_camera_round_trip_and_rotation(scene):
    node = scene.AddNewNodeByClass("vtkMRMLCameraNode", "cam")
    camera = Camera(position=(10.0, 400.0, 50.0), focal_point=(5.0, -3.0, 20.0), view_up=(0.0, 0.0, 1.0),
                    view_angle_deg=25.0, width=160, height=120)
    events = []
    node.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *args: events.append(1))
    sb.camera_to_node(camera, node)
    assert len(events) == 1
    back = sb.camera_from_node(node, 160, 120)
    np.testing.assert_allclose(back.position, camera.position, atol=1e-9)
    np.testing.assert_allclose(back.focal_point, camera.focal_point, atol=1e-9)
    np.testing.assert_allclose(back.world_to_camera(), camera.world_to_camera(), atol=1e-9)
    assert back.view_angle_deg == pytest.approx(25.0)
    assert (back.width, back.height) == (160, 120)

    sb.rotate_camera_node(node, azimuth_deg=90.0)
    moved = sb.camera_from_node(node, 160, 120)
    # Orbiting keeps the focal point and the distance and turns the view direction by 90 degrees.
    np.testing.assert_allclose(moved.focal_point, camera.focal_point, atol=1e-9)
    assert moved.distance == pytest.approx(camera.distance)
    cos = float(moved.basis()[2] @ camera.basis()[2])
    assert cos == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(sb.SceneError, match="no camera"):
        sb.camera_from_node(None, 10, 10)
