"""Helpers shared by the ``renderfm`` subcommands: common arguments, loading inputs, progress, JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager

from ..errors import TransferFunctionError

#: Help text of a VOLUME positional argument.
VOLUME_HELP = "NIfTI/NRRD/MHA file, DICOM series folder, or 'phantom' (built-in torso; 'phantom:SEED')"

#: Gaussian rasterizers a command can pick with ``--backend``.
BACKEND_CHOICES = ("auto", "torch", "gsplat", "cpu-fast")


def add_volume_argument(parser: argparse.ArgumentParser, many: bool = False) -> None:
    """Positional VOLUME (file, DICOM folder or 'phantom'); ``many``: one or more, as ``args.volumes``."""
    if many:
        parser.add_argument("volumes", nargs="+", metavar="VOLUME", help=VOLUME_HELP)
    else:
        parser.add_argument("volume", metavar="VOLUME", help=VOLUME_HELP)


def add_tf_arguments(parser: argparse.ArgumentParser, default_preset: str = "CT-Bone", many: bool = False) -> None:
    """``--preset NAME`` or ``--tf FILE.vp.json`` (mutually exclusive); ``many``: one or more of either (read them
    with :func:`load_tfs`)."""
    group = parser.add_mutually_exclusive_group()
    plural, nargs = ("(s)", "+") if many else ("", None)
    group.add_argument("--preset", nargs=nargs, default=None, metavar="NAME" if many else None,
                       help=f"Slicer volume-rendering preset{plural} (default {default_preset}; "
                            "see `renderfm presets`)")
    group.add_argument("--tf", nargs=nargs, default=None, metavar="FILE.vp.json",
                       help=f"Slicer volume-property file{plural} (.vp.json)")
    parser.set_defaults(default_preset=default_preset)


def add_view_arguments(parser: argparse.ArgumentParser, views: int = 4, size: str = "256x256") -> None:
    """``--views N --size WxH --elevation DEG``."""
    parser.add_argument("--views", type=int, default=views,
                        help=f"number of views orbiting the superior axis; view 0 is anterior (default {views})")
    parser.add_argument("--size", default=size, help=f"image size WxH in pixels (default {size})")
    parser.add_argument("--elevation", type=float, default=0.0, help="camera elevation in degrees (default 0)")


def add_image_folder_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--out DIR``: the folder the PNG files go to."""
    parser.add_argument("--out", required=required, default=None, metavar="DIR",
                        help="output folder for the PNG files")


def add_scene_arguments(parser: argparse.ArgumentParser, method: bool = True,
                        spacing_help: str = "working grid spacing in mm (default: 1.5 on CUDA, 3 on CPU, or the "
                                            "model's)",
                        device_help: str | None = "auto (CUDA if available), cpu or cuda",
                        weights_help: str = "Render-FM weights for --method model", metavars: bool = True) -> None:
    """``--method`` (if ``method``), ``--spacing --device --weights``: how a volume becomes Gaussians.

    The help texts can be worded for the command; ``metavars=False`` shows the plain ``SPACING``/``WEIGHTS``.
    """
    if method:
        parser.add_argument("--method", choices=("analytic", "model"), default="analytic",
                            help="how the Gaussians are made: analytic initialisation (default, no learning) or "
                                 "model (Render-FM with the shipped weights, or --weights)")
    parser.add_argument("--spacing", type=float, default=None, metavar="MM" if metavars else None, help=spacing_help)
    parser.add_argument("--device", default="auto", help=device_help)
    parser.add_argument("--weights", default=None, metavar="FILE" if metavars else None, help=weights_help)


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    """``--json``: a machine-readable summary on stdout."""
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json`` (machine-readable summary on stdout) and ``--quiet`` (no progress bars)."""
    add_json_argument(parser)
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


def load_tfs(args: argparse.Namespace) -> list:
    """The transfer functions chosen by ``--tf``/``--preset`` given with ``many`` (or the default preset)."""
    from ..presets import get_preset
    from ..transfer_io import read_vp_json

    if getattr(args, "tf", None):
        return [read_vp_json(path) for path in args.tf]
    return [get_preset(name) for name in (getattr(args, "preset", None)
                                          or [getattr(args, "default_preset", "CT-Bone")])]


def load_input_volume(args: argparse.Namespace, spec: str | None = None):
    """Load VOLUME (or ``spec``, one of several); warns on stderr when it does not look like CT (unless --json)."""
    from ..volume import load_volume

    volume = load_volume(args.volume if spec is None else spec)
    if volume.modality_note and not getattr(args, "json", False):
        warn(f"{volume.name}: {volume.modality_note}")
    return volume


def views_for(volume, args: argparse.Namespace):
    """Orbit cameras around ``volume`` from ``--views``, ``--size`` and ``--elevation``."""
    from ..camera import orbit_cameras, parse_size

    width, height = parse_size(args.size)
    return orbit_cameras(volume.center_ras(), volume.radius_mm(), args.views, width, height,
                         elevation_deg=getattr(args, "elevation", 0.0))


def prepare_from_args(args: argparse.Namespace, volume, tf, method: str | None = None):
    """:func:`RenderFMLib.pipeline.prepare_scene` with the scene arguments (``method`` overrides ``--method``),
    under a progress bar."""
    from ..pipeline import prepare_scene

    method = method or args.method
    with progress(100, f"preparing ({method})", quiet=args.quiet or args.json, unit="%") as bar:
        def report(stage, fraction):
            bar.set_postfix_str(stage)
            bar.n = int(100 * fraction)
            bar.refresh()

        return prepare_scene(volume, tf, method=method, spacing_mm=args.spacing, device=args.device,
                             weights=args.weights, progress=report)


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
