"""``renderfm compare VOLUME``: VTK ray casting | Gaussians | cinematic reference, side by side, with PSNR/SSIM."""

from __future__ import annotations

import sys
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
    print_json,
    progress,
    views_for,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help="side-by-side images: VTK ray cast | Gaussians | cinematic reference, with PSNR/SSIM",
        description="Render --views orbit views of VOLUME with VTK's ray caster (what Slicer shows), the analytic "
                    "Gaussians, Render-FM (when its weights are installed) and the cinematic reference renderer, "
                    "all on the same working grid, and write OUT/compare_000.png, ...: one row per view, each "
                    "panel captioned with its PSNR/SSIM against the reference (sRGB, as a person sees it).")
    add_volume_argument(parser)
    add_tf_arguments(parser)
    add_scene_arguments(parser, method=False,
                        spacing_help="working grid spacing in mm (default: 1.5 on CUDA, 3 on CPU)",
                        weights_help="Render-FM weights (default: the shipped ones; skipped when absent)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="auto", help="Gaussian rasterizer")
    parser.add_argument("--mapper", choices=("auto", "cpu", "gpu"), default="cpu",
                        help="VTK ray cast mapper (default cpu: vtkFixedPointVolumeRayCastMapper)")
    add_view_arguments(parser)
    add_image_folder_argument(parser)
    add_output_arguments(parser)
    parser.set_defaults(func=run)


def _model_scene(args, volume, tf, analytic):
    """The Render-FM scene on the analytic scene's grid, or ``None`` (with a note) when no weights are found."""
    from ..model.weights import WeightsError
    from ..pipeline import prepare_scene

    try:
        return prepare_scene(volume, tf, method="model", spacing_mm=analytic.info["spacing_mm"], device=args.device,
                             weights=args.weights)
    except WeightsError as exc:
        if args.weights:
            raise
        print(f"note: Render-FM skipped ({exc})", file=sys.stderr)
        return None


def run(args) -> int:
    import imageio.v3 as iio
    import numpy as np

    from ..annotate import captioned_row
    from ..image import to_uint8
    from ..metrics import psnr, ssim
    from ..pipeline import prepare_scene, render_scene, render_scene_reference
    from ..vtk_raycast import VtkRaycaster

    quiet = args.quiet or args.json
    volume = load_input_volume(args)
    tf = load_tf(args)
    analytic = prepare_scene(volume, tf, method="analytic", spacing_mm=args.spacing, device=args.device)
    scenes = {"analytic": analytic}
    model = _model_scene(args, volume, tf, analytic)
    if model is not None:
        scenes["model"] = model
    cameras = views_for(analytic.working, args)
    names = ["vtk", *scenes]
    titles = {"vtk": "VTK ray cast", "analytic": f"Gaussians, analytic ({analytic.num_gaussians:,})",
              "model": f"Gaussians, Render-FM ({model.num_gaussians:,})" if model is not None else ""}
    scores = {name: [] for name in names}
    out = Path(args.out)
    files = []
    with VtkRaycaster(analytic.working, tf, args.mapper) as raycaster, \
            progress(len(cameras), "compare", quiet=quiet, unit="view") as bar:
        for index, camera in enumerate(cameras):
            reference = render_scene_reference(analytic, camera)[0]
            images = {"vtk": raycaster.render(camera)[0]}
            for name, scene in scenes.items():
                images[name] = render_scene(scene, camera, backend=args.backend).rgb
            panels = []
            for name in names:
                value = (psnr(images[name], reference), ssim(images[name], reference))
                scores[name].append(value)
                panels.append((to_uint8(images[name]), [titles[name], f"PSNR {value[0]:.2f} dB  SSIM {value[1]:.3f}"]))
            panels.append((to_uint8(reference), ["cinematic reference", f"{tf.name}, view {index}"]))
            path = out / f"compare_{index:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            iio.imwrite(path, captioned_row(panels))
            files.append(str(path))
            bar.update(1)
    methods = {name: {"psnr": round(float(np.mean([v[0] for v in values])), 3),
                      "ssim": round(float(np.mean([v[1] for v in values])), 4),
                      "per_view_psnr": [round(v[0], 3) for v in values],
                      "per_view_ssim": [round(v[1], 4) for v in values]} for name, values in scores.items()}
    if args.json:
        print_json({"views": len(cameras), "size": [cameras[0].width, cameras[0].height], "reference": "cinematic",
                    "methods": methods})
    else:
        for name, values in methods.items():
            print(f"{name:>8}: PSNR {values['psnr']:.2f} dB, SSIM {values['ssim']:.3f} (vs cinematic reference)")
        print(f"wrote {len(files)} images to {out}")
    return 0
