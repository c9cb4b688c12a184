"""Helpers shared by the ``renderfm`` subcommands: common arguments, loading inputs, progress, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager

from ..errors import TransferFunctionError


def add_volume_argument(parser: argparse.ArgumentParser) -> None:
    """Positional VOLUME (file, DICOM folder or 'phantom')."""
    parser.add_argument("volume", metavar="VOLUME",
                        help="NIfTI/NRRD/MHA file, DICOM series folder, or 'phantom' (built-in torso; 'phantom:SEED')")


def add_tf_arguments(parser: argparse.ArgumentParser, default_preset: str = "CT-Bone") -> None:
    """``--preset NAME`` or ``--tf FILE.vp.json`` (mutually exclusive)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", default=None,
                       help=f"Slicer volume-rendering preset (default {default_preset}; see `renderfm presets`)")
    group.add_argument("--tf", default=None, metavar="FILE.vp.json", help="Slicer volume-property file (.vp.json)")
    parser.set_defaults(default_preset=default_preset)


def add_view_arguments(parser: argparse.ArgumentParser, views: int = 4, size: str = "256x256") -> None:
    """``--views N --size WxH --elevation DEG``."""
    parser.add_argument("--views", type=int, default=views,
                        help=f"number of views orbiting the superior axis; view 0 is anterior (default {views})")
    parser.add_argument("--size", default=size, help=f"image size WxH in pixels (default {size})")
    parser.add_argument("--elevation", type=float, default=0.0, help="camera elevation in degrees (default 0)")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json`` (machine-readable summary on stdout) and ``--quiet`` (no progress bars)."""
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def load_tf(args: argparse.Namespace):
    """The transfer function chosen by ``--tf`` / ``--preset`` (or the command's default preset)."""
    from ..presets import get_preset
    from ..transfer_io import read_vp_json

    if getattr(args, "tf", None):
        return read_vp_json(args.tf)
    name = getattr(args, "preset", None) or getattr(args, "default_preset", "CT-Bone")
    tf = get_preset(name)
    if tf is None:  # pragma: no cover - get_preset raises for unknown names
        raise TransferFunctionError(f"unknown preset {name!r}")
    return tf


def load_input_volume(args: argparse.Namespace):
    """Load VOLUME; warns on stderr when it does not look like CT."""
    from ..volume import load_volume

    volume = load_volume(args.volume)
    if volume.modality_note and not getattr(args, "json", False):
        warn(f"{volume.name}: {volume.modality_note}")
    return volume


def views_for(volume, args: argparse.Namespace):
    """Orbit cameras around ``volume`` from ``--views``, ``--size`` and ``--elevation``."""
    from ..camera import orbit_cameras, parse_size

    width, height = parse_size(args.size)
    return orbit_cameras(volume.center_ras(), volume.radius_mm(), args.views, width, height,
                         elevation_deg=getattr(args, "elevation", 0.0))


def warn(message: str) -> None:
    """Print a warning on stderr."""
    print(f"warning: {message}", file=sys.stderr)


@contextmanager
def progress(total: int, description: str, quiet: bool = False, unit: str = "it"):
    """A tqdm progress bar on stderr (disabled with ``quiet`` or when stderr is not a terminal and --quiet)."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=description, unit=unit, disable=quiet, file=sys.stderr, leave=False,
               dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def print_json(data: dict) -> None:
    """Print ``data`` as one JSON object on stdout."""
    json.dump(data, sys.stdout, indent=None, sort_keys=False, default=_json_default)
    sys.stdout.write("\n")


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
