"""RenderFMLib: real-time photorealistic CT rendering with feedforward 6D Gaussian splats.

Pure Python + torch; nothing here imports Qt or Slicer at module level. Submodules:
``volume`` (CT volumes in RAS mm), ``transfer`` / ``presets`` / ``transfer_io`` (transfer functions),
``camera`` (VTK <-> OpenCV cameras), ``phantom`` (procedural CT torso), ``vtk_raycast`` (classic ray casting),
``cli`` (the ``renderfm`` command).
"""

__version__ = "0.1.0"
