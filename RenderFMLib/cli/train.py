"""``renderfm train``: train the Render-FM network (one CPU process up to many GPUs under torchrun)."""

from __future__ import annotations

from pathlib import Path

from ..errors import RenderFMError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train the Render-FM network on CT volumes (run under torchrun for several processes)",
        description="Train on CT volumes x presets (and random TF perturbations) x segment subsets x random views, "
                    "with the cinematic reference as ground truth (cached on disk). Several processes: "
                    "torchrun --nproc_per_node N -m RenderFMLib.cli train ... (gloo on CPU, NCCL on GPUs).")
    parser.add_argument("data", nargs="*", metavar="VOLUME_OR_FOLDER",
                        help="CT files, DICOM folders, 'phantom:SEED', or folders searched for them (label maps "
                             "named <stem>.labels.nii.gz are paired automatically)")
    parser.add_argument("--validation", nargs="*", default=[], metavar="VOLUME",
                        help="held-out volumes for validation (never trained on)")
    parser.add_argument("--out", default="runs/renderfm", help="run folder: checkpoint, metrics.csv, weights")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this wall time (checkpointed)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--spacing", type=float, default=3.0, help="working spacing in mm")
    parser.add_argument("--crop", type=int, default=32, help="crop side in working voxels")
    parser.add_argument("--views", type=int, default=2, help="views per sample")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--pool", type=int, default=32, help="samples kept in memory and reused")
    parser.add_argument("--new-sample-every", type=int, default=2, help="draw a new sample every N steps")
    parser.add_argument("--widths", default="8,16,32,64", help="U-Net channel widths per level")
    parser.add_argument("--sh-degree", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--validate-every", type=int, default=100)
    parser.add_argument("--cache", default=None, help="reference-image cache folder (default OUT/reference_cache)")
    parser.set_defaults(func=run)


def expand_sources(items: list[str]) -> tuple[list[str], dict[str, str]]:
    """Training volume specs and their label maps from files, folders and phantoms."""
    from ..train.data import discover_sources

    sources, labels = [], {}
    for item in items:
        path = Path(item)
        if item.startswith("phantom") or path.is_file() or (path.is_dir() and not any(path.rglob("*.nii*"))):
            sources.append(item)
        elif path.is_dir():
            for source in discover_sources(path):
                sources.append(source.spec)
                if source.labels:
                    labels[source.spec] = source.labels
        else:
            raise RenderFMError(f"{item}: not a volume, folder or phantom")
    return sources, labels


def run(args) -> int:
    from ..train.loop import TrainConfig, train

    if not args.data:
        raise RenderFMError("give training volumes or folders (e.g. ../shared/data phantom:1)")
    sources, labels = expand_sources(args.data)
    held_out = {str(Path(v)) for v in args.validation}
    sources = [s for s in sources if str(Path(s)) not in held_out]
    config = TrainConfig(sources=sources, labels=labels, validation=list(args.validation), out_dir=args.out,
                         steps=args.steps, lr=args.lr, spacing_mm=args.spacing, crop_voxels=args.crop,
                         views=args.views, image_size=args.image_size,
                         widths=tuple(int(w) for w in args.widths.split(",")), sh_degree=args.sh_degree,
                         seed=args.seed, checkpoint_every=args.checkpoint_every, validate_every=args.validate_every,
                         cache_dir=args.cache, max_seconds=args.seconds, pool_size=args.pool,
                         new_sample_every=args.new_sample_every)
    weights = train(config)
    print(f"weights: {weights}")
    return 0
