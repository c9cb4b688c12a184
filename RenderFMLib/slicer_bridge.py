"""MRML nodes <-> RenderFM types: the one place where Slicer's scene meets the library.

Converts a scalar volume node (with its parent transforms hardened) to a :class:`~RenderFMLib.volume.Volume` and
back, a volume-property node to a :class:`~RenderFMLib.transfer.TransferFunction` and back, a segmentation node
plus its visible segments to a voxel mask on a volume's grid, and a camera node to a
:class:`~RenderFMLib.camera.Camera` and back.

Works inside Slicer and in a plain Python with the PyPI package ``slicer-core`` (real MRML classes, no Qt); ``slicer``
and ``vtk`` are imported inside the functions, so importing this module never needs them.
Arrays follow Slicer's order ``[k, j, i]``; geometry is RAS millimetres.
"""

from __future__ import annotations

import numpy as np

from .camera import Camera
from .errors import RenderFMError, TransferFunctionError, VolumeError
from .transfer import TransferFunction
from .volume import Volume

#: Samples used to tabulate a VTK function whose nodes have non-default midpoint or sharpness (non-linear pieces).
NONLINEAR_TABLE_SIZE = 256


class SceneError(RenderFMError, ValueError):
    """A MRML node cannot be converted (wrong type, no image data, non-linear transform, missing segment...)."""


# ---- volumes ------------------------------------------------------------------------------------------------------
def _matrix_to_numpy(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _numpy_to_matrix(array: np.ndarray):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def node_to_world_matrix(node) -> np.ndarray:
    """4x4 matrix from the node's own coordinates to world RAS (identity without a parent transform).

    Raises :class:`SceneError` when a parent transform is non-linear (warping cannot be hardened into a grid
    matrix; harden it in Slicer's Transforms module first, which resamples the volume).
    """
    transform_node = node.GetParentTransformNode()
    if transform_node is None:
        return np.eye(4)
    if not transform_node.IsTransformToWorldLinear():
        raise SceneError(f"'{node.GetName()}': its parent transform '{transform_node.GetName()}' is non-linear "
                         "(a warp); RenderFM needs a linear geometry. Harden the transform in the Transforms "
                         "module (which resamples the volume) or remove it")
    import vtk

    matrix = vtk.vtkMatrix4x4()
    transform_node.GetMatrixTransformToWorld(matrix)
    return _matrix_to_numpy(matrix)


def ijk_to_world_matrix(volume_node) -> np.ndarray:
    """4x4 matrix mapping the node's voxel indices ``(i, j, k, 1)`` to world RAS mm, parent transforms included.

    Indices start at the image data's extent origin (0 for every volume Slicer creates).
    """
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = _matrix_to_numpy(matrix)
    image = volume_node.GetImageData()
    if image is not None:
        extent = image.GetExtent()
        shift = np.eye(4)
        shift[:3, 3] = (extent[0], extent[2], extent[4])
        ijk_to_ras = ijk_to_ras @ shift
    return node_to_world_matrix(volume_node) @ ijk_to_ras


def volume_from_node(volume_node) -> Volume:
    """A :class:`Volume` from a scalar volume node: float32 array ``[k, j, i]`` and world ``ijk_to_ras``.

    The node's parent transforms are applied to the geometry (linear only, see :func:`node_to_world_matrix`).
    Raises :class:`SceneError` for a missing node, a node without image data or a multi-component image.
    """
    from vtkmodules.util import numpy_support

    if volume_node is None:
        raise SceneError("no volume selected: choose a scalar volume node")
    name = volume_node.GetName() or "volume"
    if not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise SceneError(f"'{name}' is a {volume_node.GetClassName()}, not a scalar volume (RenderFM renders "
                         "single-component CT volumes)")
    image = volume_node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise SceneError(f"'{name}' has no image data (empty volume node)")
    if image.GetNumberOfScalarComponents() != 1:
        raise SceneError(f"'{name}' has {image.GetNumberOfScalarComponents()} components per voxel; RenderFM "
                         "needs a scalar (single-component) volume")
    dims = image.GetDimensions()
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    try:
        return Volume(array.astype(np.float32), ijk_to_world_matrix(volume_node), name=name)
    except VolumeError as exc:
        raise SceneError(f"volume node '{name}': {exc}") from None


def node_from_volume(volume: Volume, scene, name: str | None = None, node=None):
    """Write a :class:`Volume` into a scalar volume node (new one added to ``scene`` unless ``node`` is given).

    The node gets the volume's array (float32) and ``ijk_to_ras`` as its own geometry (no parent transform) and
    default display nodes. Returns the node.
    """
    import vtk
    from vtkmodules.util import numpy_support

    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name or volume.name)
    image = vtk.vtkImageData()
    k, j, i = volume.shape
    image.SetDimensions(i, j, k)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(volume.array.reshape(-1), deep=True,
                                                               array_type=vtk.VTK_FLOAT))
    node.SetIJKToRASMatrix(_numpy_to_matrix(volume.ijk_to_ras))
    node.SetAndObserveImageData(image)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None and display.IsA("vtkMRMLScalarVolumeDisplayNode"):
        display.SetAutoWindowLevel(False)
        display.SetWindowLevel(400.0, 40.0)
    return node


# ---- transfer functions -----------------------------------------------------------------------------------------
def _vtk_property(volume_property):
    """The ``vtkVolumeProperty`` of a volume-property node, or the argument itself if it is one."""
    if volume_property is None:
        raise SceneError("no volume property: the volume has no volume rendering set up yet")
    if volume_property.IsA("vtkMRMLVolumePropertyNode"):
        return volume_property.GetVolumeProperty()
    if volume_property.IsA("vtkVolumeProperty"):
        return volume_property
    raise SceneError(f"expected a vtkMRMLVolumePropertyNode or vtkVolumeProperty, got "
                     f"{volume_property.GetClassName()}")


def _function_points(function, values_per_node: int) -> np.ndarray:
    """Node table of a ``vtkColorTransferFunction`` (rows x,r,g,b) or ``vtkPiecewiseFunction`` (rows x,y).

    Nodes with midpoint != 0.5 or sharpness != 0 make VTK's function non-linear between them; such a function is
    tabulated on :data:`NONLINEAR_TABLE_SIZE` samples (plus its nodes) so the piecewise-linear copy matches it.
    """
    n = function.GetSize()
    rows = []
    nonlinear = False
    for index in range(n):
        node = [0.0] * (values_per_node + 2)
        function.GetNodeValue(index, node)
        rows.append(node[:values_per_node])
        midpoint, sharpness = node[values_per_node], node[values_per_node + 1]
        nonlinear |= index < n - 1 and (abs(midpoint - 0.5) > 1e-6 or abs(sharpness) > 1e-6)
    table = np.array(rows, dtype=np.float64).reshape(-1, values_per_node)
    if not nonlinear:
        return table
    x = np.unique(np.concatenate([np.linspace(table[0, 0], table[-1, 0], NONLINEAR_TABLE_SIZE), table[:, 0]]))
    if values_per_node == 4:
        values = np.array([function.GetColor(float(v)) for v in x])
    else:
        values = np.array([[function.GetValue(float(v))] for v in x])
    return np.column_stack([x, values])


def voxel_size_mm(volume_node) -> float:
    """Geometric mean of the node's world voxel spacing (mm), parent transforms included.

    Slicer's native volume rendering draws the image in voxel (IJK) coordinates and puts the IJK-to-RAS geometry
    in the actor's matrix, so VTK measures the volume property's scalar opacity unit distance in voxels, not mm
    (checked here: a volume at 4 mm with unit distance 0.25 renders exactly like VTK with 1 mm on a mm grid).
    One Slicer unit is therefore this many mm (for anisotropic voxels, an average over directions).
    """
    spacing = np.linalg.norm(ijk_to_world_matrix(volume_node)[:3, :3], axis=0)
    return float(np.prod(spacing) ** (1.0 / 3.0))


def tf_from_volume_property(volume_property, name: str | None = None,
                            voxel_size: float | None = None) -> TransferFunction:
    """Read a volume-property node (or ``vtkVolumeProperty``) into a :class:`TransferFunction`.

    Reads component 0: colour, scalar opacity, gradient opacity (``None`` when disabled or constant 1), shading
    flag and coefficients, and the scalar opacity unit distance. ``voxel_size``: the mm per unit of the volume the
    property renders in Slicer (:func:`voxel_size_mm`), so the TF's unit distance (mm) reproduces Slicer's look;
    ``None`` takes the property's unit distance as mm.
    """
    prop = _vtk_property(volume_property)
    label = name or (volume_property.GetName() if volume_property.IsA("vtkMRMLNode") else None) or "slicer"
    color = _function_points(prop.GetRGBTransferFunction(0), 4)
    opacity = _function_points(prop.GetScalarOpacity(0), 2)
    if len(color) == 0 or len(opacity) == 0:
        raise SceneError(f"volume property '{label}' has an empty colour or opacity function")
    gradient = None
    if not prop.GetDisableGradientOpacity(0):
        table = _function_points(prop.GetGradientOpacity(0), 2)
        if len(table) and not np.allclose(table[:, 1], 1.0):
            gradient = table
    try:
        return TransferFunction(color_points=color, opacity_points=opacity, gradient_opacity_points=gradient,
                                unit_distance=prop.GetScalarOpacityUnitDistance(0) * (voxel_size or 1.0),
                                shade=bool(prop.GetShade(0)),
                                ambient=prop.GetAmbient(0), diffuse=prop.GetDiffuse(0), specular=prop.GetSpecular(0),
                                specular_power=prop.GetSpecularPower(0), name=label)
    except TransferFunctionError as exc:
        raise SceneError(f"volume property '{label}': {exc}") from None


def tf_to_volume_property(tf: TransferFunction, volume_property, voxel_size: float | None = None) -> None:
    """Write ``tf`` into a volume-property node (or ``vtkVolumeProperty``), replacing every existing point.

    A new ``vtkMRMLVolumePropertyNode`` already has default points; they are removed first. Gradient opacity
    ``None`` is written as a constant 1 and disabled. ``voxel_size``: mm per unit of the volume rendered with this
    property in Slicer (:func:`voxel_size_mm`); the unit distance is divided by it so Slicer's native rendering
    accumulates opacity per mm as ``tf`` does. Modified events fire once at the end.
    """
    prop = _vtk_property(volume_property)
    is_node = volume_property.IsA("vtkMRMLVolumePropertyNode")
    state = volume_property.StartModify() if is_node else None
    color = prop.GetRGBTransferFunction(0)
    opacity = prop.GetScalarOpacity(0)
    gradient = prop.GetGradientOpacity(0)
    color.RemoveAllPoints()
    for hu, r, g, b in tf.color_points:
        color.AddRGBPoint(float(hu), float(r), float(g), float(b))
    opacity.RemoveAllPoints()
    for hu, a in tf.opacity_points:
        opacity.AddPoint(float(hu), float(a))
    gradient.RemoveAllPoints()
    if tf.gradient_opacity_points is None:
        gradient.AddPoint(0.0, 1.0)
        gradient.AddPoint(255.0, 1.0)
        prop.SetDisableGradientOpacity(0, 1)
    else:
        for g, factor in tf.gradient_opacity_points:
            gradient.AddPoint(float(g), float(factor))
        prop.SetDisableGradientOpacity(0, 0)
    prop.SetScalarOpacityUnitDistance(0, tf.unit_distance / (voxel_size or 1.0))
    prop.SetShade(0, int(tf.shade))
    prop.SetAmbient(0, tf.ambient)
    prop.SetDiffuse(0, tf.diffuse)
    prop.SetSpecular(0, tf.specular)
    prop.SetSpecularPower(0, tf.specular_power)
    prop.SetInterpolationTypeToLinear()
    if is_node:
        volume_property.CalculateEffectiveRange()
        volume_property.Modified()
        volume_property.EndModify(state)


def volume_rendering_display_node(volume_node):
    """The first volume-rendering display node of ``volume_node``, or ``None`` if it has none."""
    for index in range(volume_node.GetNumberOfDisplayNodes()):
        display = volume_node.GetNthDisplayNode(index)
        if display is not None and display.IsA("vtkMRMLVolumeRenderingDisplayNode"):
            return display
    return None


def volume_property_node_of(volume_node):
    """The volume-property node used by ``volume_node``'s volume rendering, or ``None``."""
    display = volume_rendering_display_node(volume_node)
    return None if display is None else display.GetVolumePropertyNode()


# ---- segmentations ------------------------------------------------------------------------------------------------
def visible_segment_ids(segmentation_node) -> list[str]:
    """IDs of the segments shown in 3D by the segmentation's display node (all segments if it has none)."""
    segmentation = segmentation_node.GetSegmentation()
    all_ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    display = segmentation_node.GetDisplayNode()
    if display is None:
        return all_ids
    if not display.GetVisibility() or not display.GetVisibility3D():
        return []
    return [s for s in all_ids if display.GetSegmentVisibility(s) and display.GetSegmentVisibility3D(s)]


def mask_from_segmentation(segmentation_node, volume_node, segment_ids=None) -> np.ndarray:
    """Voxel mask on ``volume_node``'s grid: uint8 ``[k, j, i]``, 1 where a shown segment covers the voxel.

    ``segment_ids`` defaults to :func:`visible_segment_ids`. Segments are exported through Slicer's binary
    labelmap representation resampled to the volume's geometry (transforms of both nodes are taken into
    account by Slicer). Raises :class:`SceneError` naming an unknown segment ID.
    """
    import slicer
    import vtk
    from vtkmodules.util import numpy_support

    if segment_ids is None:
        segment_ids = visible_segment_ids(segmentation_node)
    segment_ids = [str(s) for s in segment_ids]
    segmentation = segmentation_node.GetSegmentation()
    for segment_id in segment_ids:
        if segmentation.GetSegment(segment_id) is None:
            names = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
            raise SceneError(f"segmentation '{segmentation_node.GetName()}' has no segment '{segment_id}' "
                             f"(it has: {', '.join(names) or 'none'})")
    image = volume_node.GetImageData()
    dims = image.GetDimensions()
    if not segment_ids:
        return np.zeros((dims[2], dims[1], dims[0]), dtype=np.uint8)
    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "RenderFM_mask_tmp")
    try:
        ids = vtk.vtkStringArray()
        for segment_id in segment_ids:
            ids.InsertNextValue(segment_id)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, volume_node)
        out = labelmap.GetImageData()
        if not ok or out is None:
            raise SceneError(f"could not export segments {segment_ids} of '{segmentation_node.GetName()}' onto "
                             f"the grid of '{volume_node.GetName()}'")
        out_dims = out.GetDimensions()
        labels = numpy_support.vtk_to_numpy(out.GetPointData().GetScalars()).reshape(out_dims[::-1])
        if tuple(out_dims) != tuple(dims):
            raise SceneError(f"exported mask has size {out_dims}, expected the volume's {dims}")
        return (labels > 0).astype(np.uint8)
    finally:
        display = labelmap.GetDisplayNode()
        if display is not None:
            scene.RemoveNode(display)
        scene.RemoveNode(labelmap)


# ---- cameras --------------------------------------------------------------------------------------------------
def camera_from_node(camera_node, width: int, height: int) -> Camera:
    """The :class:`Camera` of a ``vtkMRMLCameraNode`` for an image of ``width`` x ``height`` pixels."""
    if camera_node is None:
        raise SceneError("no camera node: the 3D view has no camera yet")
    return Camera.from_vtk(camera_node.GetCamera(), width, height)


def camera_to_node(camera: Camera, camera_node) -> None:
    """Move a ``vtkMRMLCameraNode`` to ``camera`` (position, focal point, view-up, angle, projection).

    Observers (views, the RenderFM view) get one modified event.
    """
    state = camera_node.StartModify()
    camera_node.SetPosition(*camera.position)
    camera_node.SetFocalPoint(*camera.focal_point)
    camera_node.SetViewUp(*camera.view_up)
    camera_node.SetViewAngle(camera.view_angle_deg)
    camera_node.SetParallelProjection(int(camera.parallel_projection))
    camera_node.SetParallelScale(camera.parallel_scale)
    camera_node.GetCamera().OrthogonalizeViewUp()
    camera_node.EndModify(state)


def rotate_camera_node(camera_node, azimuth_deg: float = 0.0, elevation_deg: float = 0.0) -> None:
    """Orbit a camera node around its focal point (VTK's Azimuth/Elevation), keeping view-up orthogonal."""
    state = camera_node.StartModify()
    camera = camera_node.GetCamera()
    if azimuth_deg:
        camera.Azimuth(float(azimuth_deg))
    if elevation_deg:
        camera.Elevation(float(elevation_deg))
    camera.OrthogonalizeViewUp()
    camera_node.Modified()
    camera_node.EndModify(state)
