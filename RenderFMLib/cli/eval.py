"""``renderfm eval``: every method against the cinematic reference on held-out views (table, images, JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .common import add_output_arguments, add_scene_arguments, add_tf_arguments, load_tf, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="compare VTK, analytic, Render-FM, fine-tuned and per-scan 6DGS against the reference",
        description="On held-out views, PSNR/SSIM against the cinematic reference, preparation time and FPS of "
                    "each method. Writes OUT/results.md, OUT/results.json and side-by-side images.")
    parser.add_argument("volumes", nargs="+", metavar="VOLUME", help="CT files, DICOM folders or 'phantom'")
    add_tf_arguments(parser)
    parser.add_argument("--views", type=int, default=4, help="held-out views (default 4)")
    parser.add_argument("--size", type=int, default=128, help="square image size (default 128)")
    parser.add_argument("--train-views", type=int, default=20, help="views for fine-tuning / per-scan (20)")
    parser.add_argument("--finetune-seconds", type=float, default=60.0)
    parser.add_argument("--per-scan-seconds", type=float, default=120.0)
    add_scene_arguments(parser, method=False,
                        spacing_help="working spacing mm of every method (default: the network's when it is "
                                     "evaluated, else per device)",
                        device_help="auto, cpu or cuda", weights_help="model weights (default: the shipped ones)",
                        metavars=False)
    parser.add_argument("--methods", default=",".join(("vtk", "analytic", "feedforward", "finetune", "per_scan")),
                        help="comma-separated subset of vtk,analytic,feedforward,finetune,per_scan")
    parser.add_argument("--out", default="out/eval", help="folder for results.md, results.json and images")
    add_output_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..evaluate import ALL_METHODS, EvalSettings, evaluate_volume, markdown_table
    from ..image import save_png
    from ..volume import load_volume

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        from ..errors import RenderFMError

        raise RenderFMError(f"unknown method(s) {unknown}; choose from {', '.join(ALL_METHODS)}")
    tf = load_tf(args)
    settings = EvalSettings(views=args.views, size=args.size, train_views=args.train_views,
                            finetune_s=args.finetune_seconds, per_scan_s=args.per_scan_seconds,
                            spacing_mm=args.spacing, device=args.device, weights=args.weights, methods=methods)
    out = Path(args.out)
    results = []
    for spec in args.volumes:
        volume = load_volume(spec)

        def say(message, name=volume.name):
            if not args.quiet:
                print(f"[{name}] {message}", file=sys.stderr)

        result, images = evaluate_volume(volume, tf, settings, progress=say)
        results.append(result)
        order = ["reference"] + [m for m in methods if m in images]
        for view in range(settings.views):
            row = np.concatenate([images[name][view] for name in order], axis=1)
            save_png(out / f"{volume.name}_{tf.name}_view{view}.png", row)
        say("columns of the images: " + " | ".join(order))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown_table(results))
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if args.json:
        print_json(results[0] if len(results) == 1 else {"results": results})
    else:
        print(markdown_table(results))
    return 0
