"""``renderfm finetune``: Render-FM prediction, then fine-tuning against reference views, PLY out."""

from __future__ import annotations

from .common import (
    add_output_arguments,
    add_scene_arguments,
    add_tf_arguments,
    add_volume_argument,
    load_input_volume,
    load_tf,
    print_json,
    progress,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("finetune", help="predict with Render-FM, fine-tune on reference views, save PLY")
    add_volume_argument(parser)
    add_tf_arguments(parser)
    parser.add_argument("--seconds", type=float, default=60.0, help="optimisation time budget (default 60)")
    parser.add_argument("--iters", type=int, default=None, help="stop after this many iterations instead")
    parser.add_argument("--views", type=int, default=20, help="reference views to fine-tune on (default 20)")
    parser.add_argument("--size", type=int, default=128, help="square size of the reference views")
    add_scene_arguments(parser, method=False, spacing_help="working spacing mm (default: the model's)",
                        device_help=None, weights_help="model weights (default: the shipped ones)", metavars=False)
    parser.add_argument("--out", default="out/finetuned.ply", help="6DGS PLY to write")
    add_output_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..finetune import confidence_check, finetune_scene
    from ..pipeline import prepare_scene
    from ..ply import write_6dgs_ply

    volume = load_input_volume(args)
    tf = load_tf(args)
    scene = prepare_scene(volume, tf, method="model", spacing_mm=args.spacing, device=args.device,
                          weights=args.weights)
    confidence = confidence_check(scene)
    with progress(100, "fine-tuning", args.quiet, unit="%") as bar:
        def report(fraction, loss):
            bar.n = int(100 * fraction)
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.refresh()

        tuned, result = finetune_scene(scene, seconds=args.seconds, iterations=args.iters, views=args.views,
                                       size=args.size, progress=report)
    path = write_6dgs_ply(tuned.gaussians, args.out, lam=tuned.lam)
    summary = {"volume": volume.name, "tf": tf.name, "gaussians": tuned.num_gaussians,
               "predict_s": round(scene.prep_seconds, 2), "confidence": confidence.to_dict(),
               "finetune": result.to_dict(), "out": str(path)}
    if args.json:
        print_json(summary)
    else:
        print(f"prediction: {scene.num_gaussians} Gaussians in {scene.prep_seconds:.1f} s; {confidence.message}")
        print(f"fine-tuning: {result.iterations} iterations in {result.seconds:.0f} s; held-out PSNR "
              f"{result.psnr_before:.2f} -> {result.psnr_after:.2f} dB")
        print(f"wrote {path}")
    return 0
