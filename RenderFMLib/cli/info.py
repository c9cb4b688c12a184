"""``renderfm info VOLUME``: geometry, HU statistics and whether the volume looks like CT."""

from __future__ import annotations

from .common import add_volume_argument, load_input_volume, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="describe a volume: geometry, HU statistics, CT or not")
    add_volume_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(func=run)


def run(args) -> int:
    volume = load_input_volume(args)
    info = volume.describe()
    if args.json:
        print_json(info)
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0
