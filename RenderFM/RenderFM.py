"""RenderFM: real-time photorealistic volume rendering of CT in 3D Slicer (feedforward 6D Gaussian splats).

The module is a thin layer over the ``RenderFMLib`` library: the GUI-free logic is
``RenderFMLib.slicer_logic.RenderFMSceneLogic`` (tested outside Slicer with the PyPI package ``slicer-core``);
this file adds the panel (parameter node, UI), the side-by-side layout with the RenderFM view and its linked
camera, background work with progress and Cancel, dependency installation on first use, and the in-Slicer test.
"""

import importlib
import importlib.util
import logging
import os
import shutil
import sys
import threading
import time
from typing import Annotated

import ctk
import numpy as np
import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, Default, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from vtkSlicerSegmentationsModuleMRMLPython import vtkMRMLSegmentationNode


def _addLibraryToPath():
    """Make ``RenderFMLib`` importable: it lies next to this file in the installed extension and one folder up in
    a source checkout (module path ``<repo>/RenderFM``)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.dirname(here)):
        if os.path.isdir(os.path.join(folder, "RenderFMLib")):
            if folder not in sys.path:
                sys.path.insert(0, folder)
            return


_addLibraryToPath()

from RenderFMLib import slicer_bridge  # noqa: E402
from RenderFMLib.errors import RenderFMError  # noqa: E402
from RenderFMLib.image import srgb_to_linear, to_uint8  # noqa: E402
from RenderFMLib.presets import preset_names  # noqa: E402
from RenderFMLib.slicer_logic import (  # noqa: E402
    BACKENDS,
    DEVICES,
    FOLLOW_VOLUME_RENDERING,
    METHODS,
    PRESET_PREFIX,
    RenderFMSceneLogic,
    RenderSettings,
    is_out_of_memory,
)

#: Id of the side-by-side layout (a user layout id, unlikely to collide with other extensions).
SIDE_BY_SIDE_LAYOUT_ID = slicer.vtkMRMLLayoutNode.SlicerLayoutUserView + 4726
#: XML tag of the RenderFM view in layout descriptions.
VIEW_TAG = "RenderFMView"
SIDE_BY_SIDE_LAYOUT = f"""
<layout type="horizontal" split="true">
 <item>
  <view class="vtkMRMLViewNode" singletontag="1">
   <property name="viewlabel" action="default">1</property>
  </view>
 </item>
 <item>
  <{VIEW_TAG}></{VIEW_TAG}>
 </item>
</layout>
"""
#: Python packages installed on first use besides torch (torch comes from the PyTorch extension).
REQUIREMENTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "requirements.txt")
TORCH_REQUIREMENT = ">=2.1"
#: Degrees of camera rotation per pixel of mouse drag in the RenderFM view.
DEGREES_PER_PIXEL = 0.4
#: While the mouse drags, the RenderFM view renders at this fraction of its size (full size once released).
INTERACTIVE_SCALE = 0.5
#: Milliseconds between progress polls of background work, and before an automatic re-prediction.
POLL_MS = 100
AUTO_UPDATE_DELAY_MS = 1000


#
# RenderFM
#


class RenderFM(ScriptedLoadableModule):
    """Module description; registers the side-by-side layout at startup so saved scenes can restore it."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "RenderFM"
        self.parent.categories = ["Rendering"]
        self.parent.dependencies = ["VolumeRendering", "Segmentations", "Cameras"]
        self.parent.contributors = ["RenderFM contributors"]
        self.parent.helpText = (
            "Photorealistic real-time rendering of CT: a feedforward network predicts 6D Gaussian splats from the "
            "volume, its transfer function and optionally a segmentation; they are drawn next to Slicer's own "
            "volume rendering with linked cameras. Choose a volume and click Render.")
        self.parent.acknowledgementText = (
            "Method after Gao et al., 'Render-FM: Feedforward Model for Real-time Photorealistic Volumetric "
            "Rendering' (arXiv 2505.17338), with 6D Gaussian splatting.")
        slicer.app.connect("startupCompleted()", registerSideBySideLayout)


#
# Side-by-side layout and the RenderFM view
#


class RenderFMView(qt.QWidget):
    """The RenderFM view of the layout: the latest frame scaled to fit, a status overlay, and mouse interaction.

    Mouse drag orbits the shared camera (``onRotate(dx, dy)``), the wheel zooms (``onZoom(factor)``), and
    release/resize ask for a full-size frame (``onRequestFrame()``); a controller sets these callbacks.
    """

    def __init__(self, parent=None):
        qt.QWidget.__init__(self, parent)
        self.setMinimumSize(64, 64)
        self.setMouseTracking(False)
        layout = qt.QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.imageLabel = qt.QLabel()
        self.imageLabel.setAlignment(qt.Qt.AlignCenter)
        self.imageLabel.setSizePolicy(qt.QSizePolicy.Ignored, qt.QSizePolicy.Ignored)
        self.imageLabel.setStyleSheet("background-color: black; color: #bbbbbb;")
        self.imageLabel.setText("RenderFM view: click Render in the RenderFM module")
        layout.addWidget(self.imageLabel, 0, 0)
        self.infoLabel = qt.QLabel()
        self.infoLabel.setStyleSheet("background-color: rgba(0, 0, 0, 140); color: white; padding: 3px;")
        self.infoLabel.setAlignment(qt.Qt.AlignLeft | qt.Qt.AlignTop)
        layout.addWidget(self.infoLabel, 0, 0, qt.Qt.AlignLeft | qt.Qt.AlignTop)
        for label in (self.imageLabel, self.infoLabel):  # mouse events go to the view itself
            label.setAttribute(qt.Qt.WA_TransparentForMouseEvents)
        self.pixmap = None
        self.dragging = False
        self.lastPosition = None
        self.onRotate = None
        self.onZoom = None
        self.onRequestFrame = None

    def showFrame(self, rgb, alpha, background, text):
        """Show linear premultiplied ``rgb`` ``[H, W, 3]`` over ``background`` (linear RGB) with an overlay."""
        image = to_uint8(rgb, alpha, background)
        self.pixmap = qt.QPixmap.fromImage(numpyToQImage(image))
        self._updatePixmap()
        self.infoLabel.setText(text)

    def showMessage(self, text):
        self.pixmap = None
        self.imageLabel.setPixmap(qt.QPixmap())
        self.imageLabel.setText(text)
        self.infoLabel.setText("")

    def _updatePixmap(self):
        if self.pixmap is not None:
            self.imageLabel.setPixmap(self.pixmap.scaled(self.imageLabel.size, qt.Qt.KeepAspectRatio,
                                                         qt.Qt.SmoothTransformation))

    def renderSize(self, largest):
        """Image size ``(width, height)`` matching the view's aspect ratio, largest side ``largest`` pixels."""
        width, height = max(1, self.width), max(1, self.height)
        scale = float(largest) / max(width, height)
        return max(16, int(round(width * scale))), max(16, int(round(height * scale)))

    def resizeEvent(self, event):
        self._updatePixmap()
        if self.onRequestFrame:
            self.onRequestFrame()

    def mousePressEvent(self, event):
        if event.button() == qt.Qt.LeftButton:
            self.dragging = True
            self.lastPosition = event.pos()

    def mouseMoveEvent(self, event):
        if not self.dragging or self.lastPosition is None:
            return
        position = event.pos()
        dx, dy = position.x() - self.lastPosition.x(), position.y() - self.lastPosition.y()
        self.lastPosition = position
        if self.onRotate and (dx or dy):
            self.onRotate(dx, dy)

    def mouseReleaseEvent(self, event):
        if event.button() == qt.Qt.LeftButton and self.dragging:
            self.dragging = False
            self.lastPosition = None
            if self.onRequestFrame:
                self.onRequestFrame()

    def wheelEvent(self, event):
        steps = event.angleDelta().y() / 120.0
        if self.onZoom and steps:
            self.onZoom(1.1 ** steps)


def numpyToQImage(image):
    """A QImage of a uint8 RGB array ``[H, W, 3]`` (row 0 at the top)."""
    from vtkmodules.util import numpy_support

    height, width = image.shape[:2]
    vtkImage = vtk.vtkImageData()
    vtkImage.SetDimensions(width, height, 1)
    # VTK images start at the bottom row.
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(image[::-1]).reshape(-1, 3), deep=True,
                                         array_type=vtk.VTK_UNSIGNED_CHAR)
    vtkImage.GetPointData().SetScalars(scalars)
    return ctk.ctkVTKWidgetsUtils.vtkImageDataToQImage(vtkImage)


def registerSideBySideLayout():
    """Register the RenderFM view factory and the side-by-side layout once; returns the RenderFM view widget.

    Factory and view are kept on ``slicer.modules`` so that reloading the module (developer mode) reuses them
    instead of registering a second factory for the same tag.
    """
    layoutManager = slicer.app.layoutManager()
    if layoutManager is None:
        return None
    if getattr(slicer.modules, "RenderFMViewFactory", None) is None:
        # The Python objects are kept referenced here: the view is a Python subclass whose methods must survive.
        slicer.modules.RenderFMView = RenderFMView()
        factory = slicer.qSlicerSingletonViewFactory()
        factory.setTagName(VIEW_TAG)
        factory.setWidget(slicer.modules.RenderFMView)
        layoutManager.registerViewFactory(factory)
        slicer.modules.RenderFMViewFactory = factory
    layoutNode = layoutManager.layoutLogic().GetLayoutNode()
    if not layoutNode.IsLayoutDescription(SIDE_BY_SIDE_LAYOUT_ID):
        layoutNode.AddLayoutDescription(SIDE_BY_SIDE_LAYOUT_ID, SIDE_BY_SIDE_LAYOUT)
    return slicer.modules.RenderFMView


def threeDViewCameraNode():
    """The camera node of the first 3D view of the layout (the view shown next to the RenderFM view)."""
    widget = slicer.app.layoutManager().threeDWidget(0)
    if widget is None:
        return None
    return slicer.modules.cameras.logic().GetViewActiveCameraNode(widget.mrmlViewNode())


def threeDViewImage():
    """Slicer's first 3D view as linear RGB float32 ``[H, W, 3]`` over black (frame-buffer values, as RenderFMLib
    reads VTK images), captured with a black background and without the bounding box, then restored."""
    from vtkmodules.util import numpy_support

    widget = slicer.app.layoutManager().threeDWidget(0)
    viewNode, view = widget.mrmlViewNode(), widget.threeDView()
    saved = (viewNode.GetBackgroundColor(), viewNode.GetBackgroundColor2(), viewNode.GetBoxVisible(),
             viewNode.GetAxisLabelsVisible())
    with slicer.util.NodeModify(viewNode):
        viewNode.SetBackgroundColor(0.0, 0.0, 0.0)
        viewNode.SetBackgroundColor2(0.0, 0.0, 0.0)
        viewNode.SetBoxVisible(False)
        viewNode.SetAxisLabelsVisible(False)
    try:
        view.forceRender()
        grabber = vtk.vtkWindowToImageFilter()
        grabber.SetInput(view.renderWindow())
        grabber.SetInputBufferTypeToRGB()
        grabber.ReadFrontBufferOff()
        grabber.Update()
        image = grabber.GetOutput()
        width, height, _ = image.GetDimensions()
        pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, 3)[::-1]
    finally:
        with slicer.util.NodeModify(viewNode):
            viewNode.SetBackgroundColor(*saved[0])
            viewNode.SetBackgroundColor2(*saved[1])
            viewNode.SetBoxVisible(saved[2])
            viewNode.SetAxisLabelsVisible(saved[3])
        view.forceRender()
    return pixels.astype(np.float32) / 255.0


class LinkedViewController(VTKObservationMixin):
    """Keeps the RenderFM view in step with a camera node: throttled re-render on every camera change, and mouse
    interaction in the RenderFM view moves that camera node (so Slicer's 3D view follows too)."""

    def __init__(self, view, logic):
        VTKObservationMixin.__init__(self)
        self.view = view
        self.logic = logic
        self.cameraNode = None
        self.prepared = None
        self.backend = "auto"
        self.largestSide = 384
        self.background = (0.0, 0.0, 0.0)
        self.lastSeconds = 0.0
        self.lastInfo = None
        self.timer = qt.QTimer()
        self.timer.setSingleShot(True)
        self.timer.connect("timeout()", self.renderNow)
        view.onRotate = self.rotate
        view.onZoom = self.zoom
        view.onRequestFrame = self.requestFrame

    def setCameraNode(self, cameraNode):
        if cameraNode is self.cameraNode:
            return
        self.removeObservers()
        self.cameraNode = cameraNode
        if cameraNode is not None:
            self.addObserver(cameraNode, vtk.vtkCommand.ModifiedEvent, self.onCameraModified)
        self.requestFrame()

    def setScene(self, prepared, backend, largestSide, background):
        self.prepared, self.backend, self.largestSide, self.background = prepared, backend, largestSide, background
        self.requestFrame()

    def onCameraModified(self, caller=None, event=None):
        self.requestFrame()

    def requestFrame(self):
        """Render soon: at once when idle, else after the last frame's duration (throttling during drags)."""
        if self.timer.isActive():
            return
        self.timer.start(int(min(500, 1000 * self.lastSeconds)) if self.view.dragging else 0)

    def renderNow(self):
        if self.prepared is None or self.cameraNode is None:
            return
        largest = self.largestSide * (INTERACTIVE_SCALE if self.view.dragging else 1.0)
        width, height = self.view.renderSize(largest)
        camera = slicer_bridge.camera_from_node(self.cameraNode, width, height)
        try:
            rgb, alpha, info = self.logic.render_prepared(self.prepared, camera, self.backend)
        except RenderFMError as exc:
            self.view.showMessage(str(exc))
            return
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc) or self.largestSide <= 64:
                raise
            self.largestSide = max(64, self.largestSide // 2)  # out of memory: continue at a smaller size
            self.view.showMessage(f"Out of memory while rendering: continuing at {self.largestSide} px")
            self.requestFrame()
            return
        self.lastSeconds = info["seconds"]
        self.lastInfo = info
        self.view.showFrame(rgb, alpha, self.background, overlayText(info))

    def rotate(self, dx, dy):
        if self.cameraNode is None:
            return
        slicer_bridge.rotate_camera_node(self.cameraNode, azimuth_deg=-dx * DEGREES_PER_PIXEL,
                                         elevation_deg=dy * DEGREES_PER_PIXEL)
        self.cameraNode.ResetClippingRange()

    def zoom(self, factor):
        if self.cameraNode is None:
            return
        camera = self.cameraNode.GetCamera()
        if camera.GetParallelProjection():
            camera.SetParallelScale(camera.GetParallelScale() / factor)
        else:
            camera.Dolly(factor)
        self.cameraNode.Modified()
        self.cameraNode.ResetClippingRange()


def overlayText(info):
    """The RenderFM view's overlay: FPS, Gaussian count, device, backend."""
    return (f"RenderFM  {info['fps']:.0f} FPS  |  {info['gaussians']:,} Gaussians  |  {info['device']}  |  "
            f"{info['backend']}")


#
# Background work
#


class BackgroundTask:
    """Runs ``function(progress, cancelled)`` in a Python thread (torch releases the GIL, so Slicer stays
    responsive); the GUI polls :attr:`stage`, :attr:`fraction`, :attr:`done` with a QTimer. The function must not
    touch Qt or MRML."""

    def __init__(self, function):
        self.stage, self.fraction = "starting", 0.0
        self.result = self.error = None
        self.done = False
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(function,), daemon=True)
        self._thread.start()

    def _run(self, function):
        try:
            self.result = function(self.progress, self._cancel.is_set)
        except BaseException as exc:  # reported on the main thread
            self.error = exc
        self.done = True

    def progress(self, stage, fraction):
        self.stage, self.fraction = stage, float(fraction)

    def cancel(self):
        self._cancel.set()

    @property
    def cancelled(self):
        return self._cancel.is_set()


#
# Parameter node
#


@parameterNodeWrapper
class RenderFMParameterNode:
    """The module's inputs and settings, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    tfSource: Annotated[str, Default(FOLLOW_VOLUME_RENDERING)]
    method: Annotated[str, Choice(METHODS), Default("model")]
    device: Annotated[str, Choice(DEVICES), Default("auto")]
    backend: Annotated[str, Choice(BACKENDS), Default("auto")]
    spacingMm: Annotated[float, WithinRange(0.0, 10.0), Default(0.0)]
    imageSize: Annotated[int, WithinRange(64, 2048), Default(384)]
    fineTuneSeconds: Annotated[int, WithinRange(5, 3600), Default(60)]
    autoUpdate: Annotated[bool, Default(True)]


#
# RenderFMWidget
#


class RenderFMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.task = None
        self.taskDone = None
        self.controller = None
        self.observedInputs = []
        self.centerViewsPending = False

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RenderFM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = RenderFMLogic()

        self.ui.tfSourceComboBox.addItem("Follow the volume's volume rendering", FOLLOW_VOLUME_RENDERING)
        for name in preset_names():
            self.ui.tfSourceComboBox.addItem(f"Preset: {name}", PRESET_PREFIX + name)
        for combo, values in ((self.ui.methodComboBox, METHODS), (self.ui.deviceComboBox, DEVICES),
                              (self.ui.backendComboBox, BACKENDS)):
            for index, value in enumerate(values):
                combo.setItemData(index, value)
            combo.connect("currentIndexChanged(int)", self.updateParameterNodeFromCombos)
        self.ui.tfSourceComboBox.connect("currentIndexChanged(int)", self.updateParameterNodeFromCombos)
        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setVisible(False)

        self.ui.renderButton.connect("clicked(bool)", self.onRender)
        self.ui.fineTuneButton.connect("clicked(bool)", self.onFineTune)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.layoutButton.connect("clicked(bool)", self.showSideBySide)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)",
                                             self.ui.segmentsTableView.setSegmentationNode)

        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(POLL_MS)
        self.pollTimer.connect("timeout()", self.pollTask)
        self.autoUpdateTimer = qt.QTimer()
        self.autoUpdateTimer.setSingleShot(True)
        self.autoUpdateTimer.setInterval(AUTO_UPDATE_DELAY_MS)
        self.autoUpdateTimer.connect("timeout()", self.onAutoUpdate)

        view = registerSideBySideLayout()
        self.controller = LinkedViewController(view, self.logic)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        if self.task is not None:
            self.task.cancel()
        self.removeObservers()
        if self.controller is not None:
            self.controller.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event):
        if self.task is not None:
            self.task.cancel()
        self.setParameterNode(None)
        self.controller.setScene(None, "auto", 384, (0.0, 0.0, 0.0))
        self.controller.view.showMessage("RenderFM view: click Render in the RenderFM module")
        self.logic.prepared = None

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ---- parameter node ------------------------------------------------------------------------------------------
    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            volumeNode = activeVolumeNode()
            if volumeNode is not None:
                self._parameterNode.inputVolume = volumeNode

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = parameterNode
        if self._parameterNode:
            # Widgets with a "SlicerParameterName" property in the .ui file are connected automatically.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
            self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        node = self._parameterNode
        if node is None:
            return
        for combo, value in ((self.ui.tfSourceComboBox, node.tfSource), (self.ui.methodComboBox, node.method),
                             (self.ui.deviceComboBox, node.device), (self.ui.backendComboBox, node.backend)):
            index = combo.findData(value)
            if index >= 0 and index != combo.currentIndex:
                wasBlocked = combo.blockSignals(True)
                combo.currentIndex = index
                combo.blockSignals(wasBlocked)
        busy = self.task is not None
        prepared = self.logic.prepared is not None
        self.ui.renderButton.enabled = bool(node.inputVolume) and not busy
        self.ui.renderButton.toolTip = ("Predict the Gaussians and show the side-by-side layout" if node.inputVolume
                                        else "Select a volume first")
        for button in (self.ui.fineTuneButton, self.ui.exportButton, self.ui.compareButton):
            button.enabled = prepared and not busy
        self.observeInputs()

    def updateParameterNodeFromCombos(self, index=None):
        node = self._parameterNode
        if node is None:
            return
        with slicer.util.NodeModify(node.parameterNode):
            node.tfSource = self.ui.tfSourceComboBox.itemData(self.ui.tfSourceComboBox.currentIndex)
            node.method = self.ui.methodComboBox.itemData(self.ui.methodComboBox.currentIndex)
            node.device = self.ui.deviceComboBox.itemData(self.ui.deviceComboBox.currentIndex)
            node.backend = self.ui.backendComboBox.itemData(self.ui.backendComboBox.currentIndex)

    def settings(self):
        node = self._parameterNode
        return RenderSettings(tf_source=node.tfSource, method=node.method, device=node.device, backend=node.backend,
                              spacing_mm=float(node.spacingMm))

    # ---- automatic re-prediction ------------------------------------------------------------------------------------
    def observeInputs(self):
        """Observe what a re-prediction depends on: the followed volume property, the segments' visibility."""
        node = self._parameterNode
        wanted = []
        if node is not None and node.inputVolume and node.tfSource == FOLLOW_VOLUME_RENDERING:
            propertyNode = slicer_bridge.volume_property_node_of(node.inputVolume)
            if propertyNode is not None:
                wanted.append(propertyNode)
        if node is not None and node.segmentation and node.segmentation.GetDisplayNode():
            wanted.append(node.segmentation.GetDisplayNode())
        if wanted == self.observedInputs:
            return
        for observed in self.observedInputs:
            self.removeObserver(observed, vtk.vtkCommand.ModifiedEvent, self.onInputModified)
        for observed in wanted:
            self.addObserver(observed, vtk.vtkCommand.ModifiedEvent, self.onInputModified)
        self.observedInputs = wanted

    def onInputModified(self, caller=None, event=None):
        if self._parameterNode and self._parameterNode.autoUpdate and self.logic.prepared is not None:
            self.autoUpdateTimer.start()  # restarts: one re-prediction after the edits stop

    def onAutoUpdate(self):
        if self.task is None:
            self.onRender()
        else:
            self.autoUpdateTimer.start()

    # ---- actions ----------------------------------------------------------------------------------------------------
    def onRender(self):
        node = self._parameterNode
        if not self.logic.ensureDependencies():
            return
        if node.backend == "gsplat" and not self.logic.ensureGsplat():
            node.backend = "auto"
        settings = self.settings()
        try:
            tf = None if settings.tf_source == FOLLOW_VOLUME_RENDERING else self.logic.transfer_function(
                node.inputVolume, settings.tf_source)
            # Slicer's own volume rendering, with the same TF, for the left view (created if missing).
            self.centerViewsPending = slicer_bridge.volume_rendering_display_node(node.inputVolume) is None
            self.logic.show_native_volume_rendering(node.inputVolume, self.logic.volumeRenderingLogic(), tf)
            inputs = self.logic.gather(node.inputVolume, settings, node.segmentation)
        except RenderFMError as exc:
            slicer.util.errorDisplay(str(exc), windowTitle="RenderFM")
            return
        self.observeInputs()

        def work(progress, cancelled):
            prepared = self.logic.prepare(inputs, settings, progress=progress, cancel=cancelled)
            if prepared.confidence is None:
                progress("confidence check", 0.95)
                self.logic.check_confidence(prepared, cancel=cancelled)
            return prepared

        self.startTask(work, "Predicting Gaussians", self.onPrepared)

    def onPrepared(self, prepared):
        self.showSideBySide()
        if self.centerViewsPending:  # first rendering of this volume: frame it in the 3D view
            slicer.util.resetThreeDViews()
            self.centerViewsPending = False
        node = self._parameterNode
        self.controller.setScene(prepared, node.backend, node.imageSize, self.viewBackground())
        self.controller.renderNow()
        self.updateStatus()

    def onFineTune(self):
        prepared = self.logic.prepared
        seconds = self._parameterNode.fineTuneSeconds

        def work(progress, cancelled):
            return self.logic.fine_tune(prepared, seconds=seconds, progress=progress, cancel=cancelled)

        def done(result):
            self.controller.setScene(self.logic.prepared, self._parameterNode.backend, self._parameterNode.imageSize,
                                     self.viewBackground())
            self.updateStatus(f"Fine-tuning: {result['psnr_before']:.1f} dB -> {result['psnr_after']:.1f} dB PSNR "
                              f"on held-out views in {result['seconds']:.0f} s.")

        self.startTask(work, "Fine-tuning", done)

    def onExport(self):
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "Export Gaussians", "renderfm_scene.ply",
                                              "6DGS PLY (*.ply)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("Failed to export the Gaussians.", waitCursor=True):
            written = self.logic.export_ply(self.logic.prepared, path)
            self.updateStatus(f"Exported {self.logic.prepared.num_gaussians:,} Gaussians to {written}.")

    def onCompare(self):
        cameraNode = threeDViewCameraNode()
        if cameraNode is None:
            slicer.util.errorDisplay("No 3D view to compare with.", windowTitle="RenderFM")
            return
        native = threeDViewImage()
        largest = 256 if self.logic.prepared.scene.device.type == "cuda" else 128
        height, width = native.shape[:2]
        scale = largest / max(width, height)
        size = (max(16, int(width * scale)), max(16, int(height * scale)))
        camera = slicer_bridge.camera_from_node(cameraNode, *size)
        native = resizeImage(native, size)
        with slicer.util.tryWithErrorDisplay("Comparison failed.", waitCursor=True):
            result = self.logic.compare(self.logic.prepared, camera, native_rgb=native,
                                        backend=self._parameterNode.backend)
            showComparison(result)

    def onCancel(self):
        if self.task is not None:
            self.task.cancel()
            self.ui.statusLabel.text = "Cancelling..."

    # ---- task plumbing -------------------------------------------------------------------------------------------
    def startTask(self, function, title, onDone):
        self.taskTitle = title
        self.taskDone = onDone
        self.task = BackgroundTask(function)
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.setValue(0)
        self.ui.cancelButton.setVisible(True)
        self.ui.statusLabel.text = f"{title}..."
        self.updateGUIFromParameterNode()
        self.pollTimer.start()

    def pollTask(self):
        task = self.task
        if task is None:
            self.pollTimer.stop()
            return
        self.ui.progressBar.setValue(int(100 * task.fraction))
        if not task.done:
            self.ui.statusLabel.text = f"{self.taskTitle}: {task.stage}..."
            return
        self.pollTimer.stop()
        self.task = None
        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setVisible(False)
        self.updateGUIFromParameterNode()
        if isinstance(task.error, InterruptedError):
            self.ui.statusLabel.text = f"{self.taskTitle}: cancelled; the scene is unchanged."
        elif task.error is not None:
            self.reportError(task.error)
        else:
            self.taskDone(task.result)

    def reportError(self, error):
        if isinstance(error, RenderFMError):
            message = str(error)
        elif isinstance(error, ImportError):
            message = f"A Python package is missing ({error}). Click Render again to install the dependencies."
        else:
            message = f"{type(error).__name__}: {error}"
            logging.error("RenderFM %s failed", self.taskTitle, exc_info=error)
        self.ui.statusLabel.text = f"{self.taskTitle} failed: {message}"
        slicer.util.errorDisplay(message, windowTitle="RenderFM")

    def updateStatus(self, extra=None):
        prepared = self.logic.prepared
        lines = []
        if extra:
            lines.append(extra)
        if prepared is not None:
            scene = prepared.scene
            lines.append(f"{prepared.num_gaussians:,} Gaussians ({scene.method}, {scene.info.get('spacing_mm')} mm "
                         f"grid) prepared in {scene.prep_seconds:.1f} s on {scene.device}.")
            info = self.controller.lastInfo
            if info is not None:
                lines.append(f"Rendering: {info['fps']:.1f} FPS with the {info['backend']} rasterizer at "
                             f"{self._parameterNode.imageSize} px.")
            if prepared.confidence is not None:
                lines.append(prepared.confidence["message"])
            lines.extend(prepared.notes)
        self.ui.statusLabel.text = "\n".join(lines)

    # ---- layout -----------------------------------------------------------------------------------------------------
    def showSideBySide(self):
        registerSideBySideLayout()
        slicer.app.layoutManager().setLayout(SIDE_BY_SIDE_LAYOUT_ID)
        self.controller.setCameraNode(threeDViewCameraNode())

    def viewBackground(self):
        widget = slicer.app.layoutManager().threeDWidget(0)
        color = widget.mrmlViewNode().GetBackgroundColor() if widget is not None else (0.0, 0.0, 0.0)
        return tuple(float(c) for c in srgb_to_linear(np.asarray(color, dtype=np.float32)))


def activeVolumeNode():
    """The volume shown in the slice views (Slicer's 'active volume'), else the first scalar volume."""
    selectionNode = slicer.app.applicationLogic().GetSelectionNode()
    volumeID = selectionNode.GetActiveVolumeID() if selectionNode else None
    node = slicer.mrmlScene.GetNodeByID(volumeID) if volumeID else None
    if node is not None and node.IsA("vtkMRMLScalarVolumeNode"):
        return node
    return slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")


def resizeImage(image, size):
    """Nearest-neighbour resize of ``[H, W, C]`` to ``size = (width, height)``."""
    width, height = size
    rows = (np.arange(height) * image.shape[0] / height).astype(int)
    columns = (np.arange(width) * image.shape[1] / width).astype(int)
    return np.ascontiguousarray(image[rows][:, columns])


def showComparison(result):
    """A dialog with Slicer's view, RenderFM and the reference side by side, with PSNR/SSIM."""
    dialog = qt.QDialog(slicer.util.mainWindow())
    dialog.setWindowTitle("RenderFM: comparison with the reference renderer")
    layout = qt.QGridLayout(dialog)
    columns = [("Slicer volume rendering", result["native"]), ("RenderFM", result["renderfm"]),
               ("Reference (cinematic)", result["reference"])]
    for column, (title, entry) in enumerate(columns):
        if entry is None:
            continue
        label = qt.QLabel()
        label.setPixmap(qt.QPixmap.fromImage(numpyToQImage(to_uint8(entry["rgb"]))).scaled(
            320, 320, qt.Qt.KeepAspectRatio, qt.Qt.SmoothTransformation))
        layout.addWidget(label, 0, column)
        text = title if "psnr" not in entry else f"{title}\nPSNR {entry['psnr']:.2f} dB, SSIM {entry['ssim']:.3f}"
        layout.addWidget(qt.QLabel(text), 1, column)
    buttons = qt.QDialogButtonBox(qt.QDialogButtonBox.Close)
    buttons.connect("rejected()", dialog.reject)
    layout.addWidget(buttons, 2, 0, 1, 3)
    dialog.exec_()


#
# RenderFMLogic
#


class RenderFMLogic(ScriptedLoadableModuleLogic, RenderFMSceneLogic):
    """The module logic: :class:`RenderFMLib.slicer_logic.RenderFMSceneLogic` plus Slicer application services
    (parameter node, the Volume Rendering module's logic, dependency installation). Usable from the Python console
    without the GUI, e.g. ``RenderFMLogic().render(volumeNode, cameraNode, RenderSettings(method="analytic"))``."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        RenderFMSceneLogic.__init__(self)

    def getParameterNode(self):
        return RenderFMParameterNode(super().getParameterNode())

    @staticmethod
    def volumeRenderingLogic():
        return slicer.modules.volumerendering.logic()

    # ---- dependencies -----------------------------------------------------------------------------------------
    @staticmethod
    def missingPackages():
        """Lines of Resources/requirements.txt that are not installed in a matching version."""
        from importlib.metadata import PackageNotFoundError, version

        from packaging.requirements import Requirement

        missing = []
        with open(REQUIREMENTS_FILE, encoding="utf-8") as stream:
            lines = [line.split("#", 1)[0].strip() for line in stream]
        for line in filter(None, lines):
            requirement = Requirement(line)
            try:
                installed = version(requirement.name)
            except PackageNotFoundError:
                missing.append(line)
                continue
            if not requirement.specifier.contains(installed, prereleases=True):
                missing.append(line)
        return missing

    @staticmethod
    def cudaCompilerFound():
        """True when nvcc is on PATH or under CUDA_HOME / CUDA_PATH (gsplat compiles its kernels with it)."""
        if shutil.which("nvcc"):
            return True
        for variable in ("CUDA_HOME", "CUDA_PATH"):
            root = os.environ.get(variable)
            if root and any(os.path.isfile(os.path.join(root, "bin", exe)) for exe in ("nvcc", "nvcc.exe")):
                return True
        return False

    def ensureDependencies(self):
        """Ask, then install what is missing: torch through the PyTorch extension (a wheel matching the GPU
        driver), the other packages with ``pip_ensure`` (Slicer >= 5.11) or ``slicer.util.pip_install``.
        Returns True when everything is importable."""
        if importlib.util.find_spec("torch") is None:
            try:
                import PyTorchUtils
            except ImportError:
                slicer.util.errorDisplay("RenderFM needs PyTorch: install the 'PyTorch' extension from the "
                                         "Extensions Manager and restart Slicer.", windowTitle="RenderFM")
                return False
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                                  torchVersionRequirement=TORCH_REQUIREMENT)
            if torch is None:
                return False
        missing = self.missingPackages()
        if missing:
            self._pipInstall(missing)
        return not self.missingPackages()

    def ensureGsplat(self):
        """Offer gsplat (CUDA rasterizer) where it can work: CUDA available and a CUDA compiler found. Returns True
        when gsplat is importable; otherwise says why and the caller falls back to the automatic choice."""
        if importlib.util.find_spec("gsplat") is not None:
            return True
        import torch

        if not torch.cuda.is_available():
            reason = "this machine has no usable CUDA GPU"
        elif not self.cudaCompilerFound():
            reason = "no CUDA compiler (nvcc) was found to build its kernels"
        else:
            self._pipInstall(["gsplat"])
            if importlib.util.find_spec("gsplat") is not None:
                return True
            reason = "it could not be installed"
        slicer.util.warningDisplay(f"The gsplat rasterizer is not available: {reason}. RenderFM uses its torch "
                                   "(GPU) or CPU-fast rasterizer instead.", windowTitle="RenderFM")
        return False

    @staticmethod
    def _pipInstall(requirements):
        """Install ``requirements`` (strings) after asking: ``pip_ensure`` where Slicer has it, else pip_install."""
        pydeps = None
        for name in ("slicer.pydeps", "slicer.packaging"):
            try:
                pydeps = importlib.import_module(name)
                break
            except ImportError:
                continue
        if pydeps is not None and hasattr(pydeps, "pip_ensure"):
            from packaging.requirements import Requirement

            pydeps.pip_ensure([Requirement(r) for r in requirements], requester="RenderFM")
        elif slicer.util.confirmOkCancelDisplay(
                "RenderFM needs these Python packages, which will be downloaded and installed now:\n"
                + "\n".join(requirements), windowTitle="RenderFM"):
            with slicer.util.WaitCursor():
                slicer.util.pip_install(requirements)
        importlib.invalidate_caches()


#
# RenderFMTest
#


class RenderFMTest(ScriptedLoadableModuleTest):
    """In-Slicer tests: a volume made in code, the logic end to end on CPU at a small size, the side-by-side layout
    and the linked camera. Rendering is skipped (with a message) where torch is not installed, e.g. on the
    Extensions Manager's build machines."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_LayoutAndLinkedCamera()
        self.setUp()
        self.test_RenderEndToEnd()

    def makeVolumeNode(self):
        from RenderFMLib.phantom import make_phantom

        phantom = make_phantom(spacing_mm=6.0)
        return slicer_bridge.node_from_volume(phantom.volume, slicer.mrmlScene, name="RenderFMPhantom")

    def test_LayoutAndLinkedCamera(self):
        self.delayDisplay("Side-by-side layout and linked camera")
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            self.delayDisplay("No main window (no layout manager): skipping the layout test")
            return
        volumeNode = self.makeVolumeNode()
        view = registerSideBySideLayout()
        layoutManager.setLayout(SIDE_BY_SIDE_LAYOUT_ID)
        slicer.app.processEvents()
        self.assertEqual(layoutManager.layout, SIDE_BY_SIDE_LAYOUT_ID)
        self.assertTrue(view.isVisible())
        cameraNode = threeDViewCameraNode()
        self.assertIsNotNone(cameraNode)
        logic = RenderFMLogic()
        logic.show_native_volume_rendering(volumeNode, logic.volumeRenderingLogic())
        self.assertIsNotNone(slicer_bridge.volume_property_node_of(volumeNode))
        controller = LinkedViewController(view, logic)
        controller.setCameraNode(cameraNode)
        before = np.array(cameraNode.GetPosition())
        controller.rotate(50, 0)  # what a mouse drag in the RenderFM view does
        after = np.array(cameraNode.GetPosition())
        self.assertGreater(np.linalg.norm(after - before), 1.0, "dragging in the RenderFM view moves the camera")
        threeDCamera = layoutManager.threeDWidget(0).threeDView().renderWindow().GetRenderers().GetFirstRenderer()
        np.testing.assert_allclose(threeDCamera.GetActiveCamera().GetPosition(), after, atol=1e-6)
        controller.removeObservers()
        self.delayDisplay("Layout and linked camera OK")

    def test_RenderEndToEnd(self):
        if importlib.util.find_spec("torch") is None:
            self.delayDisplay("torch is not installed: skipping the rendering test (install the PyTorch extension)")
            return
        self.delayDisplay("Rendering on CPU at a small size")
        volumeNode = self.makeVolumeNode()
        logic = RenderFMLogic()
        cameraNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLCameraNode", "RenderFMTestCamera")
        from RenderFMLib.camera import orbit_cameras

        volume = slicer_bridge.volume_from_node(volumeNode)
        slicer_bridge.camera_to_node(orbit_cameras(volume.center_ras(), volume.radius_mm(), 1, 64, 64)[0], cameraNode)
        settings = RenderSettings(tf_source=PRESET_PREFIX + "CT-Bone", method="analytic", device="cpu",
                                  spacing_mm=6.0)
        start = time.perf_counter()
        rgb, alpha, info = logic.render(volumeNode, cameraNode, settings, width=64, height=64)
        self.assertEqual(rgb.shape, (64, 64, 3))
        self.assertGreater(float((alpha > 0.3).mean()), 0.05)
        self.assertGreater(info["gaussians"], 1000)
        confidence = logic.check_confidence(logic.prepared, views=1, size=32)
        self.assertIn("dB PSNR", confidence["message"])
        self.delayDisplay(f"Rendered {info['gaussians']} Gaussians in {time.perf_counter() - start:.1f} s "
                          f"({info['backend']}); {confidence['message']}")
