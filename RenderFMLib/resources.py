"""Locate shipped data files (presets, model weights) in a source checkout, a wheel or a Slicer extension."""

from __future__ import annotations

import os
from pathlib import Path


def resources_dir() -> Path:
    """The ``Resources`` folder: ``$RENDERFM_RESOURCES`` if set, else next to or inside the package."""
    override = os.environ.get("RENDERFM_RESOURCES")
    if override:
        return Path(override)
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "Resources", package / "Resources"):
        if (candidate / "presets").is_dir():
            return candidate
    raise FileNotFoundError(f"RenderFM resources not found next to {package} (set RENDERFM_RESOURCES)")


def resource_path(*parts: str) -> Path:
    """Path of a file under :func:`resources_dir`, e.g. ``resource_path("presets", "presets.json")``."""
    return resources_dir().joinpath(*parts)


def default_weights_path() -> Path:
    """The shipped Render-FM weights (``Resources/renderfm_unet.safetensors``)."""
    from .model.weights import DEFAULT_WEIGHTS, WeightsError

    path = resources_dir() / DEFAULT_WEIGHTS
    if not path.is_file():
        raise WeightsError(f"shipped model weights not found at {path}; reinstall RenderFM or pass --weights FILE")
    return path
