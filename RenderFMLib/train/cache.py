"""On-disk cache of reference renders, keyed by a content hash of everything that determines the image.

The key hashes the working volume's voxels and geometry, the transfer function, the camera, the lighting rig and
:data:`RENDERER_VERSION` (bump it when the reference renderer's output changes). Images are stored as
safetensors (no pickle), written atomically, so concurrent training processes can share one cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..camera import Camera
from ..illumination import LightingRig
from ..transfer import TransferFunction
from ..transfer_io import transfer_function_to_dict
from ..volume import Volume

#: Version of the reference renderer's output; part of every key.
RENDERER_VERSION = "reference-1"


def content_key(volume: Volume, tf: TransferFunction, camera: Camera, lighting: LightingRig) -> str:
    """Hex SHA-256 of the volume (voxels + geometry), TF, camera, lighting and renderer version."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(volume.array).tobytes())
    digest.update(np.asarray(volume.ijk_to_ras, dtype=np.float64).tobytes())
    description = {"tf": transfer_function_to_dict(tf), "camera": camera.to_dict(), "lighting": lighting.to_dict(),
                   "renderer": RENDERER_VERSION, "shape": list(volume.shape)}
    digest.update(json.dumps(description, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class ReferenceCache:
    """A folder of cached reference images (``[H, W, 3]`` float32), two-level by key prefix."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def get_or_render(self, volume: Volume, tf: TransferFunction, camera: Camera, lighting: LightingRig,
                      render: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached image for these inputs, or ``render()``'s result, stored for next time."""
        from safetensors.numpy import load_file, save_file

        path = self.path(content_key(volume, tf, camera, lighting))
        if path.is_file():
            try:
                image = load_file(str(path))["rgb"]
                self.hits += 1
                return image
            except Exception:  # a corrupt entry is re-rendered and overwritten
                pass
        image = np.ascontiguousarray(render(), dtype=np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        save_file({"rgb": image}, str(tmp))
        os.replace(tmp, path)
        self.misses += 1
        return image
