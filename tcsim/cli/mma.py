"""``tcsim mma``: one bit-exact matrix multiply-accumulate of .npy operands."""

from __future__ import annotations

import argparse
import sys

from ..errors import FormatError, ShapeError, TcsimError
from ..gpu_model import OUTPUT_FORMATS
from ..npzfile import npy_out_path, read_npy
from ..scales import SCALE_FORMATS
from .common import emit, model_flags, output_flags


def _cmd_mma(args: argparse.Namespace) -> int:
    import numpy as np

    from ..formats.conversion import check_representable
    from ..mma import ACC_DTYPES, mma
    out = npy_out_path(args.out)
    a, b = read_npy(args.a, "A"), read_npy(args.b, "B")
    c = None
    if args.c:
        c = read_npy(args.c, "C")
        if c.dtype != ACC_DTYPES[args.acc] and c.dtype.kind in "fiu":
            # C must be exactly a value of the accumulator, as tcsim.mma demands (no cast)
            try:
                check_representable(c, args.acc, what="C")
            except TcsimError as exc:
                raise FormatError(f"--c {args.c}: {exc} (--acc {args.acc})") from None
            c = c.astype(ACC_DTYPES[args.acc])
    a_format, b_format = _mma_formats(args, a, b)
    scales = {}
    if args.a_scale or args.b_scale:
        if not (args.a_scale and args.b_scale):
            raise ShapeError("give both --a-scale and --b-scale (block-scaled paths)")
        scales = dict(a_scale=read_npy(args.a_scale, "A scales"),
                      b_scale=read_npy(args.b_scale, "B scales"),
                      scale_format=args.scale_format)
    d = mma(a, b, c, model=args.model, a_format=a_format, b_format=b_format, acc=args.acc,
            path=args.path, **scales)
    if out:
        np.save(out, d)
        print(f"wrote {out} ({d.shape}, {d.dtype})", file=sys.stderr)
    bits = d.view(np.uint32 if d.dtype == np.float32 else np.uint16)
    rows = []
    for index in np.ndindex(d.shape):       # (i, j), or (batch, i, j) for 3-D operands
        names = ("i", "j") if d.ndim == 2 else ("batch", "i", "j")
        rows.append({**dict(zip(names, map(int, index))), "d": float(d[index]),
                     "bits": f"{int(bits[index]):#x}"})
    if not args.out or args.json or args.csv:
        emit(args, rows)
    return 0


def _mma_formats(args: argparse.Namespace, a, b) -> tuple:
    """The formats of A and B: the option, else the array's dtype (float16, ml_dtypes), else
    the other operand's, else e4m3. Raw codes (an ml_dtypes array saved with np.save loads
    back as |V1) carry no format: they need the option."""
    import numpy as np

    from ..mma import DTYPE_FORMATS
    for arr, given, option, path in ((a, args.a_format, "--a-format", args.a),
                                     (b, args.b_format or args.a_format, "--b-format", args.b)):
        if arr.dtype.type is np.void and given is None:
            raise FormatError(f"{path}: holds raw {arr.dtype.itemsize}-byte codes (dtype "
                              f"{arr.dtype}: an ml_dtypes array saved with np.save); give "
                              f"{option} to say which format they are")
    a_dtype, b_dtype = (DTYPE_FORMATS.get(x.dtype.name) for x in (a, b))
    a_format = args.a_format or a_dtype or b_dtype or "e4m3"
    b_format = args.b_format or b_dtype or (args.a_format or a_dtype) or "e4m3"
    return a_format, b_format


def add_parser(sub) -> None:
    """Add the ``mma`` command to ``sub`` (the subparsers of ``tcsim``)."""
    p = sub.add_parser("mma", help="D = A*B + C through a modelled matrix unit (.npy in/out)",
                       description="Simulate one matrix multiply-accumulate bit for bit. A, B "
                       "(and C) are .npy arrays (2-D, or 3-D for a batch) of exactly "
                       "representable values: floats, float16 / ml_dtypes arrays (their dtype "
                       "gives the format), or raw codes (ml_dtypes arrays saved with np.save "
                       "load back as |V1: give the format).")
    p.add_argument("a", help="A (M, K) .npy")
    p.add_argument("b", help="B (K, N) .npy")
    p.add_argument("--c", help="C (M, N) .npy, values exactly representable in the "
                               "accumulator format (default: zeros)")
    model_flags(p)
    p.add_argument("--a-format", dest="a_format",
                   help="input format of A (e4m3, e5m2, fp16, bf16, tf32, e2m1, ...; default: "
                        "from A's dtype, else B's, else e4m3)")
    p.add_argument("--b-format", dest="b_format",
                   help="input format of B (default: from B's dtype, else --a-format / A's)")
    p.add_argument("--acc", default="fp32", choices=OUTPUT_FORMATS,
                   help="accumulator (and output) format")
    p.add_argument("--a-scale", dest="a_scale",
                   help="block-scaled paths: A scales (M, K/s) .npy (s = 16 or 32)")
    p.add_argument("--b-scale", dest="b_scale", help="block-scaled paths: B scales (K/s, N) .npy")
    p.add_argument("--scale-format", dest="scale_format", default="ue8m0",
                   choices=SCALE_FORMATS, help="format of the block scales")
    p.add_argument("--out", help="write D as .npy to this file ('.npy' is appended when "
                                 "missing; a folder is refused)")
    output_flags(p)
    p.set_defaults(func=_cmd_mma)
