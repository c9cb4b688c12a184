"""Images: float32 linear RGB ``[H, W, 3]`` in [0, 1] plus alpha ``[H, W, 1]``; encoding only at the file edge."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def linear_to_srgb(rgb: np.ndarray) -> np.ndarray:
    """sRGB transfer curve (IEC 61966-2-1) of linear values in [0, 1]; same shape, float32."""
    x = np.clip(np.asarray(rgb, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """Inverse of :func:`linear_to_srgb`."""
    x = np.clip(np.asarray(srgb, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, np.power((x + 0.055) / 1.055, 2.4)).astype(np.float32)


def composite(rgb: np.ndarray, alpha: np.ndarray | None, background=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Premultiplied ``rgb`` ``[H, W, 3]`` over a constant linear ``background`` using ``alpha`` ``[H, W, 1]``."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if alpha is None:
        return rgb
    alpha = np.asarray(alpha, dtype=np.float32).reshape(rgb.shape[:2] + (1,))
    return rgb + (1.0 - alpha) * np.asarray(background, dtype=np.float32)


def to_uint8(rgb: np.ndarray, alpha: np.ndarray | None = None, background=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Linear premultiplied RGB (+ alpha) -> sRGB uint8 ``[H, W, 3]`` over ``background`` (linear)."""
    return np.round(linear_to_srgb(composite(rgb, alpha, background)) * 255.0).astype(np.uint8)


def save_png(path: str | os.PathLike, rgb: np.ndarray, alpha: np.ndarray | None = None,
             background=(0.0, 0.0, 0.0)) -> Path:
    """Write linear premultiplied RGB (+ alpha) as an sRGB PNG; creates parent folders. Returns the path."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, to_uint8(rgb, alpha, background))
    return path


def load_png_linear(path: str | os.PathLike) -> np.ndarray:
    """Read an 8-bit sRGB PNG back as linear float32 RGB ``[H, W, 3]``."""
    import imageio.v3 as iio

    data = iio.imread(Path(path))
    return srgb_to_linear(data[..., :3].astype(np.float32) / 255.0)
