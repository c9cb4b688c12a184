"""``renderfm raycast VOLUME``: classic VTK ray casting (as Slicer's volume rendering) of orbit views to PNGs."""

from __future__ import annotations

import time
from pathlib import Path

from .common import (
    add_image_folder_argument,
    add_output_arguments,
    add_tf_arguments,
    add_view_arguments,
    add_volume_argument,
    load_input_volume,
    load_tf,
    print_json,
    progress,
    views_for,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "raycast", help="render views with VTK's classic ray caster (the baseline Slicer shows)",
        description="Render VOLUME with VTK ray casting from --views cameras orbiting the superior axis and write "
                    "view_000.png, view_001.png, ... (sRGB, over black) to --out. View 0 is anterior: superior "
                    "is up and the patient's left is on the image right, as in Slicer's default 3D view.")
    add_volume_argument(parser)
    add_tf_arguments(parser)
    add_view_arguments(parser)
    add_image_folder_argument(parser)
    parser.add_argument("--mapper", choices=("auto", "cpu", "gpu"), default="auto",
                        help="vtkFixedPointVolumeRayCastMapper (cpu), vtkGPUVolumeRayCastMapper (gpu), or the GPU "
                             "mapper only on hardware OpenGL (auto, default)")
    parser.add_argument("--spacing", type=float, default=None, metavar="MM",
                        help="crop to the body and resample to this isotropic spacing first (default: native grid)")
    parser.add_argument("--step", type=float, default=None, metavar="MM",
                        help="sample distance along rays (default: half the smallest voxel spacing)")
    add_output_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    import statistics

    from ..image import save_png
    from ..volume import working_volume
    from ..vtk_raycast import VtkRaycaster

    volume = load_input_volume(args)
    if args.spacing is not None:
        volume = working_volume(volume, args.spacing)
    tf = load_tf(args)
    cameras = views_for(volume, args)
    out = Path(args.out)
    files, seconds = [], []
    with VtkRaycaster(volume, tf, args.mapper, args.step) as raycaster, \
            progress(len(cameras), "raycast", quiet=args.quiet or args.json, unit="view") as bar:
        for index, camera in enumerate(cameras):
            start = time.perf_counter()
            rgb, alpha = raycaster.render(camera)
            seconds.append(time.perf_counter() - start)
            files.append(str(save_png(out / f"view_{index:03d}.png", rgb, alpha)))
            bar.update(1)
    # the first view also builds VTK's per-volume data (gradients, textures); later views show the frame time
    per_view = statistics.median(seconds[1:] or seconds)
    if args.json:
        print_json({"volume": args.volume, "preset": tf.name, "views": len(cameras),
                    "size": [cameras[0].width, cameras[0].height], "mapper": raycaster.mapper,
                    "spacing_mm": [round(float(s), 4) for s in volume.spacing], "files": files,
                    "seconds_per_view": round(per_view, 4), "seconds_first_view": round(seconds[0], 4)})
    else:
        print(f"wrote {len(files)} views of {volume.name} ({tf.name}, {raycaster.mapper} mapper, first view "
              f"{seconds[0]:.3f} s, then {per_view:.3f} s/view) to {out}")
    return 0
