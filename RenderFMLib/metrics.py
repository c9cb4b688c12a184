"""Image quality metrics: PSNR and SSIM on linear RGB images ``[H, W, 3]`` in [0, 1].

SSIM comes from pytorch-msssim (Gaussian window 11, sigma 1.5, the standard constants), which agrees with
scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
Images are compared after sRGB encoding (what a person sees), unless ``encoded=False``.
"""

from __future__ import annotations

import numpy as np

from .image import linear_to_srgb


def _prepare(a, b, encoded: bool):
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if encoded:
        a, b = linear_to_srgb(a), linear_to_srgb(b)
    return np.clip(a, 0, 1), np.clip(b, 0, 1)


def psnr(image, reference, encoded: bool = True) -> float:
    """Peak signal-to-noise ratio in dB (peak 1.0); ``inf`` for identical images."""
    a, b = _prepare(image, reference, encoded)
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def ssim(image, reference, encoded: bool = True) -> float:
    """Structural similarity (mean over the image, Gaussian window), in [-1, 1]."""
    import torch
    from pytorch_msssim import ssim as _ssim

    a, b = _prepare(image, reference, encoded)
    ta = torch.from_numpy(a).permute(2, 0, 1)[None]
    tb = torch.from_numpy(b).permute(2, 0, 1)[None]
    return float(_ssim(ta, tb, data_range=1.0, size_average=True))
