"""The ``renderfm`` command line.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` to a callable ``func(args) -> int``. Shared helpers (volume/TF arguments, progress bars,
JSON output) are in :mod:`RenderFMLib.cli.common`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import RenderFMError

#: Subcommand modules, in the order ``renderfm --help`` lists them.
COMMAND_MODULES = ("info", "presets", "raycast", "train", "finetune", "eval", "reference", "bench", "render", "compare",
                   "optimize", "export")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="renderfm",
        description="Real-time photorealistic CT rendering with feedforward 6D Gaussian splats. "
                    "VOLUME is a NIfTI/NRRD/MHA file, a DICOM folder, or 'phantom' (built-in torso).")
    parser.add_argument("--version", action="version", version=f"renderfm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``renderfm`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RenderFMError as exc:
        print(f"renderfm {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"renderfm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
