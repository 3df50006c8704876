"""``tcsim explain``: one output traced through a datapath, term by term."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import FormatError, ShapeError
from ..gpu_model import OUTPUT_FORMATS
from .common import model_flags


def _cmd_explain(args: argparse.Namespace) -> int:
    from ..explain import deepseek_example, explain
    if args.example:
        a, b, c = deepseek_example()
    else:
        if not (args.a and args.b):
            print("tcsim: error: give --a and --b (comma-separated values), or --example",
                  file=sys.stderr)
            return 2
        a, b = _numbers(args.a, "--a"), _numbers(args.b, "--b")
        c = _exact_number(args.c, "--c")
    if args.max_terms < 0:
        raise ShapeError(f"--max-terms must be 0 or more, got {args.max_terms}")
    ex = explain(a, b, c, model=args.model, a_format=args.format, b_format=args.b_format,
                 acc=args.acc, path=args.path, promotion_interval=args.promotion or None)
    if args.json:
        print(json.dumps({"result": ex.result, "exact": float(ex.exact), "checked": ex.checked,
                          "blocks": [{"k0": bl.k0, "k1": bl.k1, "E": bl.E,
                                      "terms": [{"label": t.label, "value": float(t.value),
                                                 "exponent": t.exponent,
                                                 "aligned": float(t.aligned),
                                                 "swamped": t.swamped} for t in bl.terms],
                                      "notes": bl.notes,
                                      "result": float(bl.result)} for bl in ex.blocks]},
                         indent=2))
    else:
        print(ex.text(max_terms=args.max_terms))
    if args.png:
        saved = ex.figure(args.png)
        print(f"figure saved to {saved}" if saved else "(matplotlib missing: no figure)",
              file=sys.stderr)
    return 0


def _numbers(text: str, option: str):
    """A comma-separated list of numbers as a float64 array, each exactly the number written
    (a decimal that float64 would round is refused, as tcsim.mma refuses rounding)."""
    import numpy as np
    return np.array([_exact_number(v, option) for v in text.split(",")])


def _exact_number(text: str, option: str) -> float:
    from fractions import Fraction
    try:
        value = float(text)
    except ValueError:
        raise ShapeError(f"{option}: {text.strip()!r} is not a number (give comma-separated "
                         f"numbers, e.g. {option} 1,0.5,-2)") from None
    try:
        exact = Fraction(text.strip())
    except ValueError:      # inf, nan: no exact fraction (explain refuses them itself)
        return value
    if Fraction(value) != exact:
        raise FormatError(f"{option}: {text.strip()} is not exactly a binary floating-point "
                          f"value (the nearest float64 is {value:.17g}); give a value the "
                          f"format holds")
    return value


def add_parser(sub) -> None:
    """Add the ``explain`` command to ``sub`` (the subparsers of ``tcsim``)."""
    p = sub.add_parser("explain", help="trace one output through a datapath, term by term",
                       description="Every term's exponent, its value on the block's grid, what "
                       "it lost (or whether it was swamped), the block sums and the rounding. "
                       "--example shows Hopper's 14-bit FP8 accumulation swamping small "
                       "products next to a large one.")
    p.add_argument("--a", help="comma-separated values of the row of A")
    p.add_argument("--b", help="comma-separated values of the column of B")
    p.add_argument("--c", default="0",
                   help="C, exactly representable in the accumulator format")
    p.add_argument("--example", action="store_true", help="the DeepSeek '14 bits' example")
    model_flags(p)
    p.add_argument("--format", default="e4m3", help="format of A (and of B unless --b-format)")
    p.add_argument("--b-format", dest="b_format", help="format of B (default: --format)")
    p.add_argument("--acc", default="fp32", choices=OUTPUT_FORMATS,
                   help="accumulator (and output) format")
    p.add_argument("--promotion", type=int,
                   help="promotion interval into FP32 accumulation (0 or none: no promotion)")
    p.add_argument("--max-terms", type=int, default=12, help="terms shown per block")
    p.add_argument("--png", help="save the term/grid figure of the first block")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_explain)
