"""``renderfm render VOLUME``: prepare Gaussians (analytic or Render-FM) and rasterize orbit views to PNGs."""

from __future__ import annotations

import statistics
from pathlib import Path

from .common import (
    BACKEND_CHOICES,
    add_image_folder_argument,
    add_output_arguments,
    add_scene_arguments,
    add_tf_arguments,
    add_view_arguments,
    add_volume_argument,
    load_input_volume,
    load_tf,
    prepare_from_args,
    print_json,
    progress,
    views_for,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "render", help="render views with 6D Gaussians (analytic or Render-FM)",
        description="Turn VOLUME into 6D Gaussians (--method analytic: no learning; model: Render-FM) and rasterize "
                    "--views cameras orbiting the superior axis to OUT/view_000.png, ... (tone-mapped like the "
                    "cinematic reference, sRGB over black). View 0 is anterior.")
    add_volume_argument(parser)
    add_tf_arguments(parser)
    add_scene_arguments(parser)
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                        help="rasterizer: auto (gsplat/torch on CUDA, cpu-fast on CPU), torch, gsplat, cpu-fast")
    add_view_arguments(parser)
    add_image_folder_argument(parser)
    add_output_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..image import save_png
    from ..pipeline import render_scene

    volume = load_input_volume(args)
    tf = load_tf(args)
    scene = prepare_from_args(args, volume, tf)
    cameras = views_for(scene.working, args)
    out = Path(args.out)
    files, seconds = [], []
    with progress(len(cameras), "render", quiet=args.quiet or args.json, unit="view") as bar:
        for index, camera in enumerate(cameras):
            image = render_scene(scene, camera, backend=args.backend)
            seconds.append(image.seconds)
            files.append(str(save_png(out / f"view_{index:03d}.png", image.rgb, image.alpha)))
            bar.update(1)
    # the first view also conditions the Gaussians once and may compile kernels; later views show the frame time
    per_view = statistics.median(seconds[1:] or seconds)
    summary = {"volume": volume.name, "preset": tf.name, "method": scene.method, "backend": image.backend,
               "device": str(scene.device), "gaussians": scene.num_gaussians, "counts": scene.info.get("counts"),
               "spacing_mm": scene.info.get("spacing_mm"), "prep_s": round(scene.prep_seconds, 3),
               "views": len(cameras), "size": [cameras[0].width, cameras[0].height],
               "first_view_s": round(seconds[0], 4), "seconds_per_view": round(per_view, 4),
               "fps": round(1.0 / per_view, 2) if per_view > 0 else None, "files": files}
    if args.json:
        print_json(summary)
    else:
        print(f"{scene.num_gaussians} Gaussians ({scene.method}, {scene.info.get('spacing_mm')} mm grid) prepared "
              f"in {scene.prep_seconds:.1f} s; {len(files)} views with {image.backend} at "
              f"{summary['fps']} FPS (first view {seconds[0]:.2f} s); wrote {out}")
    return 0
