"""The 31 volume-rendering presets of 3D Slicer, as :class:`~RenderFMLib.transfer.TransferFunction` objects.

The data live in ``Resources/presets/presets.json``: the attribute strings of Slicer's ``presets.xml``, kept
exactly, parsed at load time by :func:`RenderFMLib.transfer_io.preset_from_xml_attributes`. They are loaded
once per process. Names are matched case-insensitively (``"ct-bone"``, ``"CT_Bone"`` and ``"CT Bone"`` all
give ``CT-Bone``). CT presets (``CT-*``) map HU; the others map the scalar values of MR, DTI (FA),
ultrasound and micro-CT images.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
from functools import lru_cache

from .errors import TransferFunctionError
from .resources import resource_path
from .transfer import TransferFunction
from .transfer_io import preset_from_xml_attributes

logger = logging.getLogger(__name__)

_FILE = ("presets", "presets.json")


def preset_names() -> list[str]:
    """All preset names, in Slicer's order (CT first)."""
    return [tf.name for tf, _ in _presets().values()]


def ct_preset_names() -> list[str]:
    """Names of the presets meant for CT (``CT-*``; their x axis is HU)."""
    return [name for name in preset_names() if name.startswith("CT-")]


def get_preset(name: str) -> TransferFunction:
    """A fresh copy of the preset ``name`` (case-insensitive); its ``name`` is the canonical preset name.

    Raises :class:`TransferFunctionError` for an unknown name, listing close matches and all names.
    """
    return copy.deepcopy(_lookup(name)[0])


def preset_modality(name: str) -> str:
    """The kind of image preset ``name`` is meant for: ``"CT"``, ``"MR"``, ``"DTI"``, ``"US"`` or ``"micro-CT"``."""
    return _lookup(name)[1]


def _key(name: str) -> str:
    return str(name).strip().lower().replace("_", "-").replace(" ", "-")


def _lookup(name: str) -> tuple[TransferFunction, str]:
    presets = _presets()
    found = presets.get(_key(name))
    if found is None:
        names = preset_names()
        by_key = {_key(n): n for n in names}
        close = [by_key[k] for k in difflib.get_close_matches(_key(name), list(by_key), n=3, cutoff=0.6)]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise TransferFunctionError(f"unknown preset {name!r}.{hint} Available presets: {', '.join(names)}")
    return found


@lru_cache(maxsize=1)
def _presets() -> dict[str, tuple[TransferFunction, str]]:
    """``{lower-case name: (transfer function, modality)}`` parsed from the shipped JSON (once)."""
    try:
        path = resource_path(*_FILE)
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TransferFunctionError(f"cannot load the shipped presets ({exc})") from None
    entries = document.get("presets") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise TransferFunctionError(f"{path}: no 'presets' list")
    presets: dict[str, tuple[TransferFunction, str]] = {}
    for entry in entries:
        # Known defects of the shipped data (e.g. CT-X-ray's effectiveRange "-250.0.0 1550.0") are worked
        # around by the parser; they are only worth a debug message here.
        tf = preset_from_xml_attributes(entry, on_warning=lambda message: logger.debug("%s: %s", path, message))
        key = _key(tf.name)
        if key in presets:
            raise TransferFunctionError(f"{path}: preset {tf.name!r} appears twice")
        presets[key] = (tf, str(entry.get("modality", "unknown")))
    return presets
