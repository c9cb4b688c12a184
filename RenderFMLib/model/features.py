"""Network input features on the working grid: ``[6, K, J, I]`` float32.

Channels: 0 normalised HU (``clip(hu / 1000, -1.2, 3)``), 1-3 TF linear RGB, 4 TF opacity per unit distance
(``TransferFunction.opacity``, before the step-size correction), 5 segmentation mask (1 = shown; all ones without a
segmentation). This is the "anatomy-guided priming" input of Render-FM: anatomy (HU, mask) plus appearance (TF).
"""

from __future__ import annotations

import torch

from ..transfer import TransferFunction

#: Channel names, in order.
FEATURE_NAMES = ("hu", "tf_r", "tf_g", "tf_b", "tf_opacity", "mask")


def make_features(hu: torch.Tensor, tf: TransferFunction, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Features ``[6, K, J, I]`` from HU ``[K, J, I]`` (any device), a TF and an optional mask ``[K, J, I]``."""
    hu = hu.to(torch.float32)
    rgb = tf.color(hu)
    opacity = tf.opacity(hu)
    shown = torch.ones_like(hu) if mask is None else (torch.as_tensor(mask, device=hu.device) > 0).to(hu.dtype)
    return torch.stack([torch.clamp(hu / 1000.0, -1.2, 3.0), rgb[..., 0], rgb[..., 1], rgb[..., 2], opacity, shown])


def pad_to_multiple(tensor: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Pad the last three dims of ``tensor`` at the end (replicate) to multiples of ``multiple``.

    Returns the padded tensor and the original sizes ``(K, J, I)``.
    """
    sizes = tuple(int(s) for s in tensor.shape[-3:])
    pads = [(-s) % multiple for s in sizes]
    if not any(pads):
        return tensor, sizes
    padded = torch.nn.functional.pad(tensor[None] if tensor.ndim == 4 else tensor,
                                     (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate")
    return (padded[0] if tensor.ndim == 4 else padded), sizes
