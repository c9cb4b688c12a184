"""Model weights as safetensors with a JSON header (never pickle).

The safetensors metadata holds one key, ``renderfm``, whose value is a JSON object::

    {"format": "renderfm-unet", "format_version": 1, "architecture": {...UNetConfig...},
     "working_spacing_mm": 3.0, "sh_degree": 3, "lam": 0.35, "library_version": "0.1.0", "training": {...}}

:func:`load_model` refuses files that are missing, corrupt, of another format or version, or whose tensors do not
match the declared architecture, with a message naming the file and the problem.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import RenderFMError
from .unet import RenderFMUNet, UNetConfig

FORMAT = "renderfm-unet"
FORMAT_VERSION = 1
#: File name of the weights shipped in ``Resources/``.
DEFAULT_WEIGHTS = "renderfm_unet.safetensors"


class WeightsError(RenderFMError, ValueError):
    """A weights file cannot be used (missing, corrupt, incompatible)."""


@dataclass
class ModelHeader:
    """What a weights file declares about its model (see module docstring)."""

    architecture: UNetConfig
    working_spacing_mm: float
    lam: float = 0.35
    training: dict = field(default_factory=dict)

    def to_json(self) -> str:
        from .. import __version__

        return json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION,
                           "architecture": self.architecture.to_dict(), "working_spacing_mm": self.working_spacing_mm,
                           "sh_degree": self.architecture.sh_degree, "lam": self.lam,
                           "library_version": __version__, "training": self.training})


def save_model(model: RenderFMUNet, header: ModelHeader, path: str | os.PathLike) -> Path:
    """Write ``model``'s parameters and buffers (float32, CPU) and ``header`` to a safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu", torch.float32).contiguous()
               for name, tensor in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={"renderfm": header.to_json()})
    os.replace(tmp, path)
    return path


def read_header(path: str | os.PathLike) -> ModelHeader:
    """Read and check the JSON header of a weights file without loading tensors."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    if "renderfm" not in metadata:
        raise WeightsError(f"{path}: no RenderFM header in the safetensors metadata; not a RenderFM model")
    try:
        data = json.loads(metadata["renderfm"])
        if data.get("format") != FORMAT:
            raise WeightsError(f"{path}: format {data.get('format')!r} is not {FORMAT!r}")
        if int(data.get("format_version", -1)) != FORMAT_VERSION:
            raise WeightsError(f"{path}: format version {data.get('format_version')} is not supported (this "
                               f"RenderFM reads version {FORMAT_VERSION}); update RenderFM or the weights")
        architecture = UNetConfig.from_dict(data["architecture"])
        return ModelHeader(architecture, float(data["working_spacing_mm"]), float(data.get("lam", 0.35)),
                           dict(data.get("training", {})))
    except WeightsError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: malformed RenderFM header ({exc!r})") from None


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[RenderFMUNet, ModelHeader]:
    """Build the declared network and load its weights; the model is in eval mode on ``device``."""
    from safetensors.torch import load_file

    header = read_header(path)
    model = RenderFMUNet(header.architecture)
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:
        raise WeightsError(f"{path}: tensor data is corrupt ({exc})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or wrong:
        raise WeightsError(f"{path}: tensors do not match the declared architecture (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]})")
    if not all(bool(torch.isfinite(t).all()) for t in tensors.values()):
        raise WeightsError(f"{path}: weights contain NaN or Inf")
    model.load_state_dict(tensors)
    return model.to(device).eval(), header
