"""``renderfm reference VOLUME...``: the photoreal reference renderer (cinematic, shaded, emission-absorption).

Writes one PNG per volume, transfer function and view; optionally a labelled contact sheet of all of them
(``--contact-sheet``), the agreement with VTK's ray caster (``--compare-vtk``) and the step-size convergence curve
(``--convergence``).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from .common import (
    add_image_folder_argument,
    add_output_arguments,
    add_tf_arguments,
    add_view_arguments,
    add_volume_argument,
    load_input_volume,
    load_tfs,
    print_json,
    progress,
    views_for,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "reference", help="render views with the photoreal reference renderer (the ground truth)",
        description="Render each VOLUME with each transfer function from --views cameras orbiting the superior axis "
                    "(view 0 anterior) and write VOLUME_PRESET_MODE_view000.png, ... (sRGB, over black) to --out. "
                    "The volume is cropped to the body and resampled to --spacing first (the working grid). "
                    "The cinematic mode (default) is lit by a world-fixed key light with soft shadows, sky light "
                    "with ambient occlusion and multiple scattering, and is tone-mapped (ACES filmic).")
    add_volume_argument(parser, many=True)
    add_tf_arguments(parser, many=True)
    parser.add_argument("--mode", choices=("cinematic", "shaded", "emission-absorption"), default="cinematic",
                        help="cinematic (default), shaded (as VTK's ray caster) or emission-absorption (no lighting)")
    add_view_arguments(parser)
    add_image_folder_argument(parser, required=False)
    parser.add_argument("--spacing", type=float, default=None, metavar="MM",
                        help="working-grid spacing (default 1.5 mm on CUDA, 2.0 mm on CPU)")
    parser.add_argument("--step", type=float, default=None, metavar="MM",
                        help="sample distance along rays (default: half the smallest working-grid spacing)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--exposure", type=float, default=None, metavar="STOPS",
                        help="cinematic exposure in stops (default 0)")
    parser.add_argument("--key-direction", default=None, metavar="R,A,S",
                        help="cinematic key-light direction in RAS, towards the light (default 0.35,0.55,0.75)")
    parser.add_argument("--contact-sheet", default=None, metavar="FILE.png",
                        help="also write one labelled image of all renders (rows: volume x preset, columns: views)")
    parser.add_argument("--compare-vtk", action="store_true",
                        help="instead of writing images, render emission-absorption and shaded with both this "
                             "renderer and VTK's CPU ray caster and report PSNR/SSIM per view")
    parser.add_argument("--convergence", action="store_true",
                        help="instead of writing images, report how images change as the step is halved "
                             "(view 1, steps 1 to 1/16 of the spacing)")
    add_output_arguments(parser)
    parser.set_defaults(func=run)


def _lighting(args):
    from ..errors import RenderFMError
    from ..illumination import LightingRig

    options = {}
    if args.exposure is not None:
        options["exposure"] = args.exposure
    if args.key_direction:
        try:
            options["key_direction"] = tuple(float(v) for v in args.key_direction.split(","))
        except ValueError:
            raise RenderFMError(f"--key-direction must be three numbers R,A,S, got {args.key_direction!r}") from None
        if len(options["key_direction"]) != 3:
            raise RenderFMError(f"--key-direction must be three numbers R,A,S, got {args.key_direction!r}")
    return LightingRig(**options)


def run(args) -> int:
    import numpy as np

    from ..camera import parse_size
    from ..errors import RenderFMError
    from ..illumination import compute_illumination
    from ..image import save_png, to_uint8
    from ..reference import render_reference, resolve_device
    from ..reference_eval import compare_with_vtk, contact_sheet, convergence_curve
    from ..volume import working_volume

    device = resolve_device(args.device)
    spacing = args.spacing or (1.5 if device.type == "cuda" else 2.0)
    tfs = load_tfs(args)
    lighting = _lighting(args)
    width, height = parse_size(args.size)
    if not (args.compare_vtk or args.convergence) and not args.out and not args.contact_sheet:
        raise RenderFMError("give --out DIR and/or --contact-sheet FILE.png (or --compare-vtk / --convergence)")
    quiet = args.quiet or args.json
    report = {"device": str(device), "spacing_mm": spacing, "mode": args.mode, "size": [width, height],
              "volumes": []}
    tiles, row_labels = [], []
    for spec in args.volumes:
        volume = working_volume(load_input_volume(args, spec), spacing)
        cameras = views_for(volume, args)
        entry = {"volume": spec, "working_grid_kji": list(volume.shape), "presets": []}
        report["volumes"].append(entry)
        label = Path(str(spec)).name.split(".")[0]
        for tf in tfs:
            item = {"preset": tf.name}
            entry["presets"].append(item)
            if args.compare_vtk:
                item["vtk"] = compare_with_vtk(volume, tf, cameras, step_mm=args.step, device=device)
                continue
            illumination = None
            if args.mode == "cinematic":
                illumination = compute_illumination(volume, tf, lighting, device)
                item["illumination_seconds"] = round(illumination.seconds, 3)
            if args.convergence:
                item["convergence"] = convergence_curve(volume, tf, cameras[min(1, len(cameras) - 1)], args.mode,
                                                        device=device, illumination=illumination)
                continue
            seconds, files, row = [], [], []
            with progress(len(cameras), f"{label} {tf.name}", quiet=quiet, unit="view") as bar:
                for index, camera in enumerate(cameras):
                    start = time.perf_counter()
                    rgb, alpha = render_reference(volume, tf, camera, mode=args.mode, step_mm=args.step,
                                                  device=device, illumination=illumination)
                    seconds.append(time.perf_counter() - start)
                    if not np.isfinite(rgb).all():
                        raise RenderFMError(f"{spec}: the {args.mode} render of view {index} has NaN/Inf pixels")
                    if args.out:
                        name = f"{label}_{tf.name}_{args.mode}_view{index:03d}.png"
                        files.append(str(save_png(Path(args.out) / name, rgb, alpha)))
                    row.append(to_uint8(rgb, alpha))
                    bar.update(1)
            item.update({"files": files, "seconds_per_view": round(statistics.median(seconds), 4)})
            tiles.append(row)
            row_labels.append(f"{label} / {tf.name}")
    if args.contact_sheet and tiles:
        sheet = contact_sheet(tiles, row_labels, [f"view {i} ({360 * i // args.views} deg)"
                                                  for i in range(args.views)])
        path = Path(args.contact_sheet)
        path.parent.mkdir(parents=True, exist_ok=True)
        import imageio.v3 as iio

        iio.imwrite(path, sheet)
        report["contact_sheet"] = str(path)
    if args.json:
        print_json(report)
    else:
        _print_summary(report)
    return 0


def _print_summary(report: dict) -> None:
    for entry in report["volumes"]:
        for item in entry["presets"]:
            head = f"{entry['volume']} {item['preset']}"
            if "vtk" in item:
                for row in item["vtk"]:
                    print(f"{head} {row['mode']} view {row['view']}: PSNR vs VTK {row['psnr']} dB "
                          f"(display-matched {row['psnr_display_matched']} dB), SSIM {row['ssim']}")
            elif "convergence" in item:
                for row in item["convergence"]:
                    print(f"{head} step {row['step_mm']} mm: PSNR vs half step {row.get('psnr_vs_half_step', '-')}"
                          f" dB, vs finest {row.get('psnr_vs_finest', '-')} dB")
            else:
                print(f"{head}: {len(item['files'])} views, {item['seconds_per_view']} s/view"
                      + (f" (+{item['illumination_seconds']} s illumination)" if "illumination_seconds" in item
                         else ""))
    if "contact_sheet" in report:
        print(f"contact sheet: {report['contact_sheet']}")
