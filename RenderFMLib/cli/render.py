"""``renderfm render VOLUME``: prepare Gaussians (analytic or Render-FM) and rasterize orbit views to PNGs.

Also home of the scene arguments (``--method --spacing --device --weights``) shared by ``compare``, ``optimize``
and ``export``.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .common import (
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

BACKEND_CHOICES = ("auto", "torch", "gsplat", "cpu-fast")


def add_scene_arguments(parser, method: bool = True) -> None:
    """``--method`` (if ``method``), ``--spacing --device --weights``: how a volume becomes Gaussians."""
    if method:
        parser.add_argument("--method", choices=("analytic", "model"), default="analytic",
                            help="how the Gaussians are made: analytic initialisation (default, no learning) or "
                                 "model (Render-FM with the shipped weights, or --weights)")
    parser.add_argument("--spacing", type=float, default=None, metavar="MM",
                        help="working grid spacing in mm (default: 1.5 on CUDA, 3 on CPU, or the model's)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    parser.add_argument("--weights", default=None, metavar="FILE", help="Render-FM weights for --method model")


def prepare_from_args(args, volume, tf, method: str | None = None):
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
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the PNG files")
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
