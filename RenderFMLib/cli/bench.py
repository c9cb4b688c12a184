"""``renderfm bench --SUITE ...``: speed benchmarks (median of several runs, VTK timed in the same run)."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import add_json_argument, print_json


def register(subparsers) -> None:
    from ..bench import SUITES

    parser = subparsers.add_parser(
        "bench", help="time renderers (median of several runs after warm-up; VTK ray casting as baseline)",
        description="Run the chosen benchmark suites on the built-in phantom resampled to --volume-size^3 voxels "
                    "and print median seconds per frame with the speed-up over the suite's baseline.")
    for name, (_, description) in SUITES.items():
        parser.add_argument(f"--{name}", action="store_true", help=description)
    parser.add_argument("--size", type=int, nargs="+", default=[256, 512], metavar="N",
                        help="square image sizes in pixels (default 256 512)")
    parser.add_argument("--volume-size", type=int, default=256, metavar="N",
                        help="edge of the benchmark volume in voxels (default 256)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per case (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--preset", default="CT-Bone", help="transfer function preset (default CT-Bone)")
    add_json_argument(parser)
    parser.add_argument("--out", default=None, metavar="FILE.md",
                        help="append the results as a Markdown section to this file (e.g. docs/results/bench.md)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..bench import SUITES, BenchConfig, run_suites, to_markdown
    from ..errors import RenderFMError

    names = [name for name in SUITES if getattr(args, name, False)]
    if not names:
        raise RenderFMError(f"choose at least one suite: {', '.join('--' + name for name in SUITES)}")
    if args.runs < 1 or args.warmup < 0 or args.volume_size < 8 or min(args.size) < 1:
        raise RenderFMError("--runs must be >= 1, --warmup >= 0, --volume-size >= 8 and sizes >= 1")
    config = BenchConfig(sizes=tuple(args.size), volume_size=args.volume_size, runs=args.runs, warmup=args.warmup,
                         device=args.device, threads=args.threads, preset=args.preset)
    report = run_suites(names, config)
    command = "renderfm " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("renderfm") else ""
    markdown = to_markdown(report, command)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(("\n" if path.stat().st_size else "") + markdown)
    if args.json:
        print_json(report.to_dict())
    else:
        sys.stdout.write(markdown)
    return 0
