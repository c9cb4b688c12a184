"""``renderfm optimize VOLUME``: per-scan 6DGS optimisation against cinematic reference views, 6DGS PLY out."""

from __future__ import annotations

from pathlib import Path

from .common import (
    add_output_arguments,
    add_scene_arguments,
    add_tf_arguments,
    add_volume_argument,
    load_input_volume,
    load_tf,
    prepare_from_args,
    print_json,
    progress,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "optimize", help="per-scan 6DGS: optimise Gaussians against reference views, write a 6DGS PLY",
        description="Optimise 6D Gaussians (from the analytic initialisation, Render-FM's prediction or a random "
                    "start) against cinematic reference renders of --views cameras spread over the sphere, with "
                    "L1 + SSIM and Adam, for --iters iterations or --seconds of wall time. Prints the PSNR on "
                    "--held-out orbit views (never trained on) before and after, and writes the Gaussians as a "
                    "6DGS PLY.")
    add_volume_argument(parser)
    add_tf_arguments(parser)
    add_scene_arguments(parser, method=False)
    parser.add_argument("--init", choices=("analytic", "model", "random"), default="analytic",
                        help="starting Gaussians: analytic initialisation (default), Render-FM prediction, or "
                             "random positions in the volume's box (as many as the analytic initialisation has)")
    parser.add_argument("--views", type=int, default=20, help="training views (default 20, as in the paper)")
    parser.add_argument("--held-out", type=int, default=2, help="held-out views for the PSNR (default 2)")
    parser.add_argument("--size", default="128x128", help="image size WxH of all views (default 128x128)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--iters", type=int, default=None, help="number of optimisation steps")
    budget.add_argument("--seconds", type=float, default=None, help="wall-time budget of the optimisation")
    parser.add_argument("--sh-degree", type=int, default=3, choices=(0, 1, 2, 3),
                        help="SH degree of the optimised colours (default 3: view-dependent)")
    parser.add_argument("--eval-every", type=float, default=None, metavar="S",
                        help="seconds of optimisation between held-out evaluations (default: budget / 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (view order, random start)")
    parser.add_argument("--out", required=True, metavar="FILE.ply", help="6DGS PLY to write")
    add_output_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    import time
    from dataclasses import replace

    from ..camera import parse_size
    from ..errors import RenderFMError
    from ..finetune import held_out_views, training_views
    from ..optimize import evaluate_views, optimize_gaussians, random_gaussians
    from ..pipeline import render_scene_reference
    from ..ply import write_6dgs_ply

    if args.views < 1 or args.held_out < 1:
        raise RenderFMError("--views and --held-out must be at least 1")
    if args.iters is None and args.seconds is None:
        args.iters = 300
    if (args.iters is not None and args.iters < 0) or (args.seconds is not None and args.seconds <= 0):
        raise RenderFMError("--iters must be >= 0 and --seconds > 0")
    quiet = args.quiet or args.json
    volume = load_input_volume(args)
    tf = load_tf(args)
    scene = prepare_from_args(args, volume, tf, method="model" if args.init == "model" else "analytic")
    if args.init == "random":
        start = random_gaussians(scene.working, scene.num_gaussians, seed=args.seed, device=scene.device)
        scene = replace(scene, gaussians=start, method="random")
    width, height = parse_size(args.size)
    train = training_views(scene, args.views, (width, height), seed=args.seed + 1)
    held = held_out_views(scene, args.held_out, (width, height))
    tic = time.perf_counter()
    with progress(len(train) + len(held), "reference views", quiet=quiet, unit="view") as bar:
        targets = []
        for camera in train + held:
            targets.append(render_scene_reference(scene, camera)[0])
            bar.update(1)
    reference_seconds = time.perf_counter() - tic
    held_out = list(zip(held, targets[len(train):], strict=True))
    before = evaluate_views(scene, None, held_out)
    budget = args.seconds if args.seconds is not None else None
    every = args.eval_every or (budget / 8 if budget else 30.0)
    with progress(100, "optimising", quiet=quiet, unit="%") as bar:
        def report(fraction, loss):
            bar.n = int(100 * fraction)
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.refresh()

        gaussians, log = optimize_gaussians(scene, train, targets[:len(train)], iterations=args.iters,
                                            seconds=args.seconds, sh_degree=args.sh_degree, held_out=held_out,
                                            eval_every_s=every, seed=args.seed, progress=report)
    after = evaluate_views(scene, gaussians, held_out)
    path = write_6dgs_ply(gaussians, Path(args.out), lam=scene.lam)
    summary = {"volume": volume.name, "preset": tf.name, "init": args.init, "gaussians": len(gaussians),
               "spacing_mm": scene.info.get("spacing_mm"), "views": len(train), "held_out": len(held),
               "size": [width, height], "prep_s": round(scene.prep_seconds, 2),
               "reference_s": round(reference_seconds, 2), "iterations": log.iterations,
               "seconds": round(log.seconds, 2), "psnr_before": round(before["psnr"], 3),
               "psnr_after": round(after["psnr"], 3), "ssim_before": round(before["ssim"], 4),
               "ssim_after": round(after["ssim"], 4),
               "curve": [[round(t, 2), round(p, 3)] for t, p in log.curve], "out": str(path)}
    if args.json:
        print_json(summary)
    else:
        print(f"{args.init} start: {len(gaussians)} Gaussians; {log.iterations} iterations in {log.seconds:.1f} s "
              f"on {len(train)} views; held-out PSNR {before['psnr']:.2f} -> {after['psnr']:.2f} dB, SSIM "
              f"{before['ssim']:.3f} -> {after['ssim']:.3f}")
        print(f"wrote {path}")
    return 0
