"""``renderfm export INPUT``: Gaussians of a volume (or of a 6DGS PLY) to a 6DGS or standard 3DGS PLY file."""

from __future__ import annotations

from pathlib import Path

from .common import add_output_arguments, add_scene_arguments, add_tf_arguments, load_tf, prepare_from_args, print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write Gaussians as a 6DGS PLY or a standard 3DGS PLY (for common 3DGS viewers)",
        description="INPUT is a volume (NIfTI/NRRD/MHA file, DICOM folder or 'phantom'), whose Gaussians are made "
                    "with --method, or an existing 6DGS .ply file to convert. --format 6dgs keeps the full 6D "
                    "Gaussians; 3dgs slices them for one view direction into ordinary 3D Gaussians (sRGB colours, "
                    "RAS millimetres) that common 3DGS viewers open.")
    parser.add_argument("input", metavar="INPUT", help="volume or 6DGS .ply file")
    add_tf_arguments(parser)
    add_scene_arguments(parser)
    parser.add_argument("--format", choices=("6dgs", "3dgs"), default="6dgs", help="output layout (default 6dgs)")
    parser.add_argument("--view-direction", default="0,-1,0", metavar="R,A,S",
                        help="for --format 3dgs: direction from the viewer into the scene, RAS (default 0,-1,0: "
                             "seen from the front, as Slicer's default 3D view)")
    parser.add_argument("--out", required=True, metavar="FILE.ply", help="PLY file to write")
    add_output_arguments(parser)
    parser.set_defaults(func=run)


def parse_direction(text: str):
    """``"x,y,z"`` -> a unit numpy vector; raises :class:`RenderFMError` for anything else."""
    import numpy as np

    from ..errors import RenderFMError

    try:
        vector = np.array([float(v) for v in str(text).split(",")], dtype=np.float64)
    except ValueError:
        vector = np.zeros(0)
    if vector.shape != (3,) or not np.isfinite(vector).all() or np.linalg.norm(vector) < 1e-9:
        raise RenderFMError(f"--view-direction must be three numbers R,A,S not all zero, got {text!r}")
    return vector / np.linalg.norm(vector)


def run(args) -> int:
    from ..ply import export_3dgs_ply, read_6dgs_ply, write_6dgs_ply
    from ..volume import load_volume

    direction = parse_direction(args.view_direction) if args.format == "3dgs" else None
    source = Path(args.input)
    if source.suffix.lower() == ".ply":
        gaussians, lam = read_6dgs_ply(source)
        origin = {"input": str(source), "method": "ply"}
    else:
        volume = load_volume(args.input)
        tf = load_tf(args)
        scene = prepare_from_args(args, volume, tf)
        gaussians, lam = scene.gaussians, scene.lam
        origin = {"input": volume.name, "preset": tf.name, "method": scene.method,
                  "spacing_mm": scene.info.get("spacing_mm"), "prep_s": round(scene.prep_seconds, 3)}
    if args.format == "6dgs":
        path = write_6dgs_ply(gaussians, args.out, lam=lam)
    else:
        path = export_3dgs_ply(gaussians, args.out, view_direction=direction, lam=lam)
    summary = {**origin, "format": args.format, "gaussians": len(gaussians), "sh_degree": gaussians.sh_degree,
               "out": str(path), "bytes": path.stat().st_size}
    if direction is not None:
        summary["view_direction"] = [round(float(v), 6) for v in direction]
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {len(gaussians)} Gaussians ({args.format}) to {path}")
    return 0
