"""Exception types raised by RenderFMLib.

Every error a user can trigger with bad input is a subclass of :class:`RenderFMError`, so the command line can
print its message (which always names the offending file or parameter) without a traceback.
"""


class RenderFMError(Exception):
    """Base class of all user-facing RenderFM errors."""


class VolumeError(RenderFMError, ValueError):
    """A volume file or array cannot be used (missing, corrupt, wrong dimensionality, bad values...)."""


class TransferFunctionError(RenderFMError, ValueError):
    """A transfer function or preset is malformed or unknown."""


class CameraError(RenderFMError, ValueError):
    """Camera parameters are degenerate (zero view direction, view-up parallel to it, bad size...)."""


class BackendUnavailableError(RenderFMError, RuntimeError):
    """A requested compute or rendering backend is not available on this machine."""


class GaussianError(RenderFMError, ValueError):
    """A set of Gaussians is malformed (shapes, non-finite values, unsupported SH degree...)."""


class PlyError(RenderFMError, ValueError):
    """A PLY file cannot be read or written (bad header, truncated data, missing properties...)."""
