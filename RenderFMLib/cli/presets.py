"""``renderfm presets [NAME] [--json]``: list Slicer's volume-rendering presets, or print one preset's points."""

from __future__ import annotations

from .common import add_json_argument, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "presets", help="list the volume-rendering presets, or print one preset's transfer function",
        description="Without NAME: every preset with the kind of image it is for and the range of values it "
                    "shows (HU for CT presets). With NAME: its opacity, colour and gradient-opacity points and "
                    "shading.")
    parser.add_argument("name", nargs="?", metavar="NAME", help="a preset name (case-insensitive), e.g. CT-Bone")
    parser.add_argument("--ct", action="store_true", help="list only the CT presets")
    add_json_argument(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..presets import ct_preset_names, get_preset, preset_modality, preset_names
    from ..transfer_io import transfer_function_to_dict

    if args.name:
        tf = get_preset(args.name)
        info = {"modality": preset_modality(tf.name), **transfer_function_to_dict(tf)}
        if args.json:
            print_json(info)
        else:
            _print_preset(info)
        return 0

    rows = []
    for name in ct_preset_names() if args.ct else preset_names():
        tf = get_preset(name)
        rows.append({"name": name, "modality": preset_modality(name),
                     "visible_range": transfer_function_to_dict(tf)["visible_range"], "shade": tf.shade,
                     "has_gradient_opacity": tf.has_gradient_opacity})
    if args.json:
        print_json({"count": len(rows), "presets": rows})
        return 0
    width = max(len(row["name"]) for row in rows)
    print(f"{'NAME':<{width}}  {'MODALITY':<8}  {'VISIBLE RANGE (HU for CT)':<26}  SHADE")
    for row in rows:
        print(f"{row['name']:<{width}}  {row['modality']:<8}  {_range_text(row['visible_range']):<26}  "
              f"{'yes' if row['shade'] else 'no'}")
    return 0


def _range_text(visible) -> str:
    if visible is None:
        return "never visible"
    low, high = visible
    return f"{'-inf' if low is None else f'{low:g}'} .. {'+inf' if high is None else f'{high:g}'}"


def _print_preset(info: dict) -> None:
    print(f"{info['name']}  ({info['modality']})")
    print(f"  visible range      {_range_text(info['visible_range'])}")
    print(f"  shading            {'on' if info['shade'] else 'off'}: ambient {info['ambient']:g}, diffuse "
          f"{info['diffuse']:g}, specular {info['specular']:g}, power {info['specular_power']:g}")
    print(f"  unit distance      {info['unit_distance']:g} mm")
    print(f"  interpolation      {info['interpolation']}")
    if info["effective_range"] is not None:
        print(f"  effective range    {info['effective_range'][0]:g} .. {info['effective_range'][1]:g}")
    print("  scalar opacity     value -> opacity")
    for x, y in info["scalar_opacity"]:
        print(f"    {x:>12g}  {y:g}")
    print("  colour             value -> r g b (linear)")
    for x, r, g, b in info["color"]:
        print(f"    {x:>12g}  {r:g} {g:g} {b:g}")
    if info["gradient_opacity"] is not None:
        print("  gradient opacity   |gradient| -> factor")
        for x, y in info["gradient_opacity"]:
            print(f"    {x:>12g}  {y:g}")
