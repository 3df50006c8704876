"""``tcsim demo``: the DeepSeek-V3 GEMM error table and plot."""

from __future__ import annotations

import argparse

from ..npzfile import check_out_folder
from .common import positive


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..demo import run
    positive(args, "m")
    check_out_folder(args.out)
    return run(Path(args.out), m=args.m, n=args.m, seed=args.seed)


def add_parser(sub) -> None:
    """Add the ``demo`` command to ``sub`` (the subparsers of ``tcsim``)."""
    p = sub.add_parser("demo", help="DeepSeek-V3 FP8 GEMM on a simulated H100: error table and "
                                    "plot", description="Simulate FP8 GEMMs with fast "
                       "accumulation and with promotion every 128 (h100), b200 and an ideal unit; "
                       "print the errors against float64 and save a plot of error against K.")
    p.add_argument("--out", default="tcsim_demo.png", help="PNG file for the plot")
    p.add_argument("--m", type=int, default=64, help="M = N of the simulated GEMMs")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs")
    p.set_defaults(func=_cmd_demo)
