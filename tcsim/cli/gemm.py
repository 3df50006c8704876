"""``tcsim gemm``: an FP8 GEMM with a named recipe, its accumulation and total error."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from ..errors import ConfigError, ShapeError
from ..frozen_config import config_error_message
from ..npzfile import npy_out_path, read_real_npy
from ..recipe import EPILOGUE_NAMES, GEMM_OUTPUTS, RECIPE_NAMES
from ..workloads import DISTRIBUTIONS
from .common import emit, model_flags, output_flags, positive


def _physical_memory() -> Optional[int]:
    """Bytes of memory this machine has, or None where the system does not say."""
    import os
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_gemm_memory(m: int, k: int, n: int) -> None:
    """Refuse a generated GEMM that cannot fit before drawing its inputs (drawing them alone
    could take minutes): it holds at least x and w while drawing them (float64) and the M x N
    float32 accumulator."""
    need, have = 8 * (m * k + k * n) + 4 * m * n, _physical_memory()
    if have is not None and need > have:
        raise ShapeError(f"--m {m} --n {n} --k {k}: this GEMM needs at least "
                         f"{need / 2 ** 30:,.1f} GiB of memory (its inputs and the M x N "
                         f"accumulator); this machine has {have / 2 ** 30:,.1f} GiB")


def _cmd_gemm(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from ..gemm import gemm
    from ..metrics import error_table, flat, gemm_errors
    from ..recipe import Recipe
    from ..workloads import make_inputs
    out = npy_out_path(args.out)
    if args.recipe not in RECIPE_NAMES:
        raise ConfigError(f"--recipe: unknown recipe {args.recipe!r}; named recipes: "
                          f"{', '.join(RECIPE_NAMES)}")
    if args.x or args.w:
        if not (args.x and args.w):
            raise ShapeError("give both --x and --w (or neither, for generated inputs)")
        x, w = read_real_npy(args.x, "--x"), read_real_npy(args.w, "--w")
    else:
        positive(args, "m", "n", "k")
        _check_gemm_memory(args.m, args.k, args.n)
        x, w = make_inputs(args.dist, args.m, args.k, args.n, args.seed)
    overrides = {}
    if args.promotion is not None:
        overrides["promotion_interval"] = None if args.promotion == 0 else args.promotion
    if args.epilogue:
        overrides["epilogue"] = args.epilogue
    if args.output:
        overrides["output"] = args.output
    try:
        recipe = Recipe.named(args.recipe, **overrides)
    except ValueError as exc:
        raise ConfigError(config_error_message(exc, where="recipe: ")) from None
    t0 = time.perf_counter()
    y, det = gemm(x, w, model=args.model, recipe=recipe, return_details=True, path=args.path)
    seconds = time.perf_counter() - t0
    if out:
        np.save(out, np.asarray(y, dtype=np.float32))
        print(f"wrote {out}", file=sys.stderr)
    errs = gemm_errors(x, w, y, det, elementwise=args.raw_max)
    (m, k), n = x.shape, w.shape[1]
    row = {"model": args.model, "recipe": args.recipe, "M": m, "N": n, "K": k,
           "promotions": det.chunks} | flat(errs) | {"seconds": seconds}
    if args.json or args.csv:
        emit(args, [row])
    else:
        print(f"{args.model}, recipe {args.recipe}: M = {m}, N = {n}, K = {k}, "
              f"{det.chunks} tensor-core chunk(s) per output, simulated in {seconds:.2f} s")
        print(error_table(errs))
    return 0


def add_parser(sub) -> None:
    """Add the ``gemm`` command to ``sub`` (the subparsers of ``tcsim``)."""
    p = sub.add_parser("gemm", help="simulate an FP8 GEMM with a recipe; error vs float64",
                       description="Quantise x and w with a named recipe, simulate the GEMM on "
                       "the model and print its accumulation error (against the exact product "
                       "of the quantised FP8 inputs: what the matrix unit loses) and its total "
                       "error (against x @ w in float64: quantisation + accumulation), as "
                       "fractions.")
    p.add_argument("--x", help="x (M, K) .npy (default: generated with --dist)")
    p.add_argument("--w", help="w (K, N) .npy")
    p.add_argument("--m", type=int, default=64, help="rows of the generated x (M >= 1)")
    p.add_argument("--n", type=int, default=64, help="columns of the generated w (N >= 1)")
    p.add_argument("--k", type=int, default=4096, help="inner dimension K of the generated "
                                                         "inputs (K >= 1)")
    p.add_argument("--dist", default="normal", choices=DISTRIBUTIONS,
                   help="distribution of the generated inputs (tcsim.workloads)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs")
    model_flags(p)
    p.add_argument("--recipe", default="deepseek_v3",
                   help=f"named recipe: {', '.join(RECIPE_NAMES)}")
    p.add_argument("--promotion", type=int, help="promotion interval (0 = fast accumulation)")
    p.add_argument("--epilogue", choices=EPILOGUE_NAMES,
                   help="order of the scaling FMA at each promotion (default: the recipe's)")
    p.add_argument("--output", choices=GEMM_OUTPUTS,
                   help="output format (default: the recipe's)")
    p.add_argument("--out", help="write y as .npy (float32) to this file ('.npy' is appended "
                                 "when missing; a folder is refused)")
    p.add_argument("--raw-max", dest="raw_max", action="store_true",
                   help="also report the raw max elementwise relative error max|err|/|ref| "
                        "(dominated by outputs near zero)")
    output_flags(p)
    p.set_defaults(func=_cmd_gemm)
