"""The Render-FM network: an nnU-Net-style 3D U-Net predicting per-voxel 6DGS residuals.

Blocks are conv3x3x3 - InstanceNorm - LeakyReLU (twice); the encoder downsamples with strided convolutions, the
decoder upsamples with transposed convolutions and concatenates the skip connection. The output layer is a 1x1x1
convolution initialised to zero, so an untrained network predicts zero residuals and renders exactly like the
analytic initialisation.

Input ``[B, 6, D, H, W]``: normalised HU, TF RGBA (4), segmentation mask (see :mod:`RenderFMLib.model.features`).
Output ``[B, C, D, H, W]`` with ``C = residual_channels(sh_degree)`` (76 for SH degree 3; see
:data:`RESIDUAL_LAYOUT`). Spatial sizes must be divisible by ``2 ** (levels - 1)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..sh import num_coefficients

#: Number of input channels: normalised HU, TF R, G, B, A, segmentation mask.
INPUT_CHANNELS = 6


def residual_layout(sh_degree: int) -> dict[str, tuple[int, int]]:
    """Channel ranges ``name -> (start, stop)`` of the network's output, in order.

    ``position`` (3, mm offsets in units of the working spacing), ``chol_log_diag`` (6), ``chol_offdiag`` (15),
    ``dir_mean`` (3), ``sh`` (3 per coefficient, coefficient-major), ``opacity`` (1, logit offset).
    """
    sizes = {"position": 3, "chol_log_diag": 6, "chol_offdiag": 15, "dir_mean": 3,
             "sh": 3 * num_coefficients(sh_degree), "opacity": 1}
    layout, start = {}, 0
    for name, size in sizes.items():
        layout[name] = (start, start + size)
        start += size
    return layout


def residual_channels(sh_degree: int) -> int:
    """Total output channels for an SH degree (76 for degree 3)."""
    return max(stop for _, stop in residual_layout(sh_degree).values())


@dataclass(frozen=True)
class UNetConfig:
    """Architecture hyper-parameters (stored in the weights header)."""

    widths: tuple[int, ...] = (16, 32, 64, 96)
    sh_degree: int = 3
    in_channels: int = INPUT_CHANNELS

    def to_dict(self) -> dict:
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "UNetConfig":
        return cls(widths=tuple(int(w) for w in data["widths"]), sh_degree=int(data["sh_degree"]),
                   in_channels=int(data.get("in_channels", INPUT_CHANNELS)))

    @property
    def divisor(self) -> int:
        """Spatial sizes must be multiples of this."""
        return 2 ** (len(self.widths) - 1)


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True))


class RenderFMUNet(nn.Module):
    """3D U-Net mapping ``[B, 6, D, H, W]`` features to ``[B, C, D, H, W]`` 6DGS residuals (zero at init)."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        widths = config.widths
        self.encoders = nn.ModuleList([_block(config.in_channels, widths[0])] +
                                      [_block(widths[i - 1], widths[i], stride=2) for i in range(1, len(widths))])
        self.upsamplers = nn.ModuleList([nn.ConvTranspose3d(widths[i], widths[i - 1], 2, stride=2)
                                         for i in range(len(widths) - 1, 0, -1)])
        self.decoders = nn.ModuleList([_block(2 * widths[i - 1], widths[i - 1])
                                       for i in range(len(widths) - 1, 0, -1)])
        self.head = nn.Conv3d(widths[0], residual_channels(config.sh_degree), 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 5 or features.shape[1] != self.config.in_channels:
            raise ValueError(f"expected features [B, {self.config.in_channels}, D, H, W], got {tuple(features.shape)}")
        if any(s % self.config.divisor for s in features.shape[2:]):
            raise ValueError(f"spatial size {tuple(features.shape[2:])} must be divisible by {self.config.divisor}")
        skips = []
        x = features
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips[:-1]), strict=True):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)
