"""Filmic tone mapping for the cinematic reference renderer: scene-linear radiance -> display-referred linear RGB.

The cinematic mode of :mod:`RenderFMLib.reference` computes scene-linear radiance (unbounded, premultiplied by alpha),
then applies :func:`tone_map`: multiply by ``2 ** exposure``, divide by alpha (un-premultiply), apply the ACES
filmic curve fit of Narkowicz (2015), ``f(x) = x (2.51 x + 0.03) / (x (2.43 x + 0.59) + 0.14)`` clamped to [0, 1],
and multiply by alpha again. The result is display-referred *linear* RGB in [0, 1]: sRGB encoding still happens
only when an image is written (:func:`RenderFMLib.image.save_png`). The curve maps 0 to 0, is close to linear with
slope ~0.2 near black, reaches 0.8 near x = 2.3 and saturates towards 1 (before clamping).
"""

from __future__ import annotations

#: Coefficients of the ACES filmic fit (Krzysztof Narkowicz, "ACES Filmic Tone Mapping Curve", 2015).
ACES_A, ACES_B, ACES_C, ACES_D, ACES_E = 2.51, 0.03, 2.43, 0.59, 0.14

#: Alpha below which a pixel is treated as empty when un-premultiplying.
MIN_ALPHA = 1e-6


def aces_filmic(x):
    """ACES filmic fit applied elementwise to a non-negative torch tensor; returns values in [0, 1]."""
    x = x.clamp(min=0.0)
    return ((x * (ACES_A * x + ACES_B)) / (x * (ACES_C * x + ACES_D) + ACES_E)).clamp(0.0, 1.0)


def tone_map(rgb, alpha, exposure: float = 0.0):
    """Tone map premultiplied scene-linear ``rgb`` ``[..., 3]`` with ``alpha`` ``[..., 1]`` (torch tensors).

    ``exposure`` is in stops (the radiance is multiplied by ``2 ** exposure``). The curve is applied to the
    un-premultiplied colour, and the result is premultiplied again, so a half-transparent pixel keeps its hue
    and brightness relative to its opacity. Returns a tensor shaped like ``rgb`` in [0, 1].
    """
    import torch

    a = alpha.clamp(0.0, 1.0)
    safe = torch.where(a > MIN_ALPHA, a, torch.ones_like(a))
    straight = rgb * (2.0 ** float(exposure)) / safe
    return torch.where(a > MIN_ALPHA, aces_filmic(straight) * a, torch.zeros_like(rgb))
