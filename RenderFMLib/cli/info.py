"""``renderfm info VOLUME``: geometry, HU statistics and whether the volume looks like CT."""

from __future__ import annotations

from .common import add_json_argument, add_volume_argument, load_input_volume, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="describe a volume: geometry, HU statistics, CT or not")
    add_volume_argument(parser)
    add_json_argument(parser)
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
