"""Transfer functions (TFs) with VTK volume-property semantics, evaluated on torch tensors.

A :class:`TransferFunction` maps HU to linear RGB (piecewise linear, clamped outside its points) and to scalar
opacity per ``unit_distance`` mm (VTK's ``scalarOpacityUnitDistance``), optionally multiplied by a gradient-opacity
function of the gradient magnitude (HU/mm), and carries shading coefficients (ambient, diffuse, specular, power).
Presets and file formats live in :mod:`RenderFMLib.presets` and :mod:`RenderFMLib.transfer_io`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .errors import TransferFunctionError


@dataclass
class TransferFunction:
    """A VTK-style volume property.

    ``color_points``: ``(N, 4)`` rows ``[hu, r, g, b]`` (linear RGB in [0, 1]), sorted by HU.
    ``opacity_points``: ``(M, 2)`` rows ``[hu, opacity]`` (opacity per ``unit_distance`` mm, in [0, 1]).
    ``gradient_opacity_points``: ``(G, 2)`` rows ``[|grad| HU/mm, factor]`` or ``None`` (no gradient opacity).
    """

    color_points: np.ndarray
    opacity_points: np.ndarray
    gradient_opacity_points: np.ndarray | None = None
    unit_distance: float = 1.0
    shade: bool = True
    ambient: float = 0.1
    diffuse: float = 0.9
    specular: float = 0.2
    specular_power: float = 10.0
    name: str = "custom"
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.color_points = _as_points(self.color_points, 4, "colour", self.name)
        self.opacity_points = _as_points(self.opacity_points, 2, "scalar opacity", self.name)
        if self.gradient_opacity_points is not None:
            self.gradient_opacity_points = _as_points(self.gradient_opacity_points, 2, "gradient opacity", self.name)
        if not (np.isfinite(self.unit_distance) and self.unit_distance > 0):
            raise TransferFunctionError(f"{self.name}: scalar opacity unit distance must be > 0, got "
                                        f"{self.unit_distance}")
        self.unit_distance = float(self.unit_distance)
        for attr in ("ambient", "diffuse", "specular", "specular_power"):
            value = float(getattr(self, attr))
            if not np.isfinite(value) or value < 0:
                raise TransferFunctionError(f"{self.name}: {attr} must be a finite number >= 0, got {value}")
            setattr(self, attr, value)
        self.color_points[:, 1:] = np.clip(self.color_points[:, 1:], 0.0, 1.0)
        self.opacity_points[:, 1] = np.clip(self.opacity_points[:, 1], 0.0, 1.0)

    # ---- evaluation --------------------------------------------------------------------------------------
    def color(self, hu):
        """Linear RGB for HU values: tensor ``(...)`` -> ``(..., 3)`` on the same device, float32."""
        import torch

        table = torch.as_tensor(self.color_points, dtype=torch.float32, device=hu.device)
        return torch.stack([piecewise_linear(hu, table[:, 0], table[:, c]) for c in (1, 2, 3)], dim=-1)

    def opacity(self, hu):
        """Scalar opacity per ``unit_distance`` for HU values: ``(...)`` -> ``(...)`` in [0, 1]."""
        import torch

        table = torch.as_tensor(self.opacity_points, dtype=torch.float32, device=hu.device)
        return piecewise_linear(hu, table[:, 0], table[:, 1])

    def gradient_factor(self, gradient_magnitude):
        """Gradient-opacity multiplier for gradient magnitudes (HU/mm): ``(...)`` -> ``(...)``; ones if unset."""
        import torch

        if self.gradient_opacity_points is None:
            return torch.ones_like(gradient_magnitude)
        table = torch.as_tensor(self.gradient_opacity_points, dtype=torch.float32, device=gradient_magnitude.device)
        return piecewise_linear(gradient_magnitude, table[:, 0], table[:, 1])

    def evaluate(self, hu, sample_distance_mm: float, gradient_magnitude=None):
        """RGB ``(..., 3)`` and opacity-corrected alpha ``(...)`` for samples ``sample_distance_mm`` apart.

        ``alpha = 1 - (1 - opacity * gradient_factor) ** (sample_distance_mm / unit_distance)``, as VTK does.
        """
        import torch

        a = self.opacity(hu)
        if gradient_magnitude is not None:
            a = a * self.gradient_factor(gradient_magnitude)
        exponent = float(sample_distance_mm) / self.unit_distance
        alpha = 1.0 - torch.pow(torch.clamp(1.0 - a, min=0.0), exponent)
        return self.color(hu), alpha

    @property
    def has_gradient_opacity(self) -> bool:
        """True if a non-trivial gradient-opacity function is set."""
        g = self.gradient_opacity_points
        return g is not None and not np.allclose(g[:, 1], 1.0)

    @property
    def visible_hu_range(self) -> tuple[float, float]:
        """Smallest HU interval outside which opacity is zero (``(inf, -inf)`` if never visible)."""
        pts = self.opacity_points
        positive = np.nonzero(pts[:, 1] > 0)[0]
        if len(positive) == 0:
            return float("inf"), float("-inf")
        lo = -np.inf if positive[0] == 0 else pts[positive[0] - 1, 0]
        hi = np.inf if positive[-1] == len(pts) - 1 else pts[positive[-1] + 1, 0]
        return float(lo), float(hi)

    def with_name(self, name: str) -> "TransferFunction":
        """A copy with another name."""
        return replace(self, name=name, color_points=self.color_points.copy(),
                       opacity_points=self.opacity_points.copy())


def _as_points(points, columns: int, what: str, name: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != columns or array.shape[0] < 1:
        raise TransferFunctionError(f"{name}: {what} points must be an (N, {columns}) table with N >= 1, got "
                                    f"shape {array.shape}")
    if not np.isfinite(array).all():
        raise TransferFunctionError(f"{name}: {what} points contain NaN or Inf")
    order = np.argsort(array[:, 0], kind="stable")
    return array[order].copy()


def piecewise_linear(x, xp, fp):
    """Evaluate the piecewise-linear function through ``(xp, fp)`` at ``x``, clamped outside ``xp``'s range.

    ``x`` any shape; ``xp`` (N,) sorted ascending; ``fp`` (N,). Equal neighbouring ``xp`` give a step. Returns a
    tensor shaped like ``x``. Works on any device; differentiable in ``x`` and ``fp``.
    """
    import torch

    if xp.numel() == 1:
        return fp[0].expand_as(x).clone()
    flat = x.reshape(-1)
    index = torch.searchsorted(xp.contiguous(), flat.contiguous(), right=True).clamp(1, xp.numel() - 1)
    x0, x1 = xp[index - 1], xp[index]
    f0, f1 = fp[index - 1], fp[index]
    width = x1 - x0
    t = torch.where(width > 0, (flat - x0) / torch.where(width > 0, width, torch.ones_like(width)),
                    torch.ones_like(flat))
    t = t.clamp(0.0, 1.0)
    return (f0 + t * (f1 - f0)).reshape(x.shape)
