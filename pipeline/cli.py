"""The ``liver-tumor`` command: one sub-command per job.

Example:
    liver-tumor synth --out data/synthetic --cases 12 --seed 0 --shape 96 96 64
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence


def _synth(args: argparse.Namespace) -> int:
    from pipeline.data.synth_dataset import write_synthetic_dataset

    options = {}
    if args.phase:
        options["phase"] = args.phase
    if args.spacing:
        options["spacing"] = tuple(args.spacing)
    start = time.perf_counter()
    datalist = write_synthetic_dataset(
        args.out,
        n_cases=args.cases,
        seed=args.seed,
        shape=tuple(args.shape),
        layout=args.layout,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        **options,
    )
    seconds = time.perf_counter() - start
    print(f"{args.cases} synthetic cases ({args.layout} layout) in {args.out} ({seconds:.1f} s)")
    print(f"datalist: {datalist}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``liver-tumor`` (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="liver-tumor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="generate a synthetic CT dataset with liver/tumour labels")
    synth.add_argument("--out", required=True, help="destination folder")
    synth.add_argument("--cases", type=int, default=10, help="number of cases")
    synth.add_argument("--seed", type=int, default=0, help="dataset seed")
    synth.add_argument("--shape", type=int, nargs=3, default=(96, 96, 64), metavar=("X", "Y", "Z"))
    synth.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        default=None,
        metavar=("SX", "SY", "SZ"),
        help="voxel size in mm (default: fits the body in the field of view)",
    )
    synth.add_argument("--layout", choices=("lits", "msd"), default="lits")
    synth.add_argument(
        "--phase",
        choices=("non_contrast", "portal_venous"),
        default=None,
        help="contrast phase (default: drawn per case)",
    )
    synth.add_argument("--val-fraction", type=float, default=0.2)
    synth.add_argument("--test-fraction", type=float, default=0.2)
    synth.set_defaults(func=_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``liver-tumor`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
