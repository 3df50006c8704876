"""Benchmark: the block-scaled and AMD paths against the plain H100 FP8 path and numpy.

    python benchmarks/bench_units.py [--m 256 --n 256 --k 2048 --repeat 3] [--tiny]

For each path: simulated MAC/s, the ratio to numpy's float32 matmul on the same shape, and the
ratio to the h100 wgmma e4m3 path (the issue's target: within a factor of two of it). Random
normal inputs cast to each path's input format; scales random powers of two (ue8m0) or e4m3
values (ue4m3). The last line is JSON with every figure.
"""

from __future__ import annotations

import json

import numpy as np

import tcsim
from _timing import best_of, shape_args
from tcsim.formats.conversion import round_to_format

CASES = [  # (label, model, path, input format, scale format, scale block)
    ("h100 wgmma e4m3 (reference)", "h100", None, "e4m3", None, 0),
    ("b200 tcgen05 e4m3", "b200", "tcgen05", "e4m3", None, 0),
    ("b200 mxf8f6f4 e4m3 ue8m0/32", "b200", "mxf8f6f4", "e4m3", "ue8m0", 32),
    ("b200 mxf4nvf4 e2m1 ue4m3/16", "b200", "mxf4nvf4", "e2m1", "ue4m3", 16),
    ("b200 mxf4 e2m1 ue8m0/32", "b200", "mxf4", "e2m1", "ue8m0", 32),
    ("mi300 fp16 (asymmetric join)", "mi300", None, "fp16", None, 0),
    ("mi300 e4m3fnuz (even/odd lanes)", "mi300", None, "e4m3fnuz", None, 0),
    ("mi250 fp16 (pairwise, FTZ)", "mi250", None, "fp16", None, 0),
    ("mi100 bf16 (pairwise)", "mi100", None, "bf16", None, 0),
]


def _values(rng, fmt, shape):
    x = rng.standard_normal(shape)
    return round_to_format(x, fmt, rounding="rne", overflow="saturate")


def _scales(rng, fmt, shape):
    if fmt == "ue8m0":
        return np.ldexp(1.0, rng.integers(-4, 5, shape))
    return round_to_format(rng.uniform(0.5, 4.0, shape), "e4m3")


def main() -> None:
    args = shape_args(__doc__, 256, 256, 2048, 3, tiny=(8, 8, 128))
    m, n, k = args.m, args.n, args.k
    rng = np.random.default_rng(0)
    macs = m * n * k
    t_blas = best_of(lambda: rng.standard_normal((m, k)).astype(np.float32)
                     @ rng.standard_normal((k, n)).astype(np.float32), 5)
    a32 = rng.standard_normal((m, k)).astype(np.float32)
    b32 = rng.standard_normal((k, n)).astype(np.float32)
    t_blas = best_of(lambda: a32 @ b32, 5)
    print(f"shape M={m} N={n} K={k}; numpy f32 @ {t_blas * 1e3:.1f} ms "
          f"({macs / t_blas / 1e9:.1f} G MAC/s)")
    rows = []
    ref_rate = None
    for label, model, path, fmt, sfmt, blk in CASES:
        a, b = _values(rng, fmt, (m, k)), _values(rng, fmt, (k, n))
        kw = dict(model=model, path=path, a_format=fmt, b_format=fmt)
        if sfmt:
            kw.update(a_scale=_scales(rng, sfmt, (m, k // blk)),
                      b_scale=_scales(rng, sfmt, (k // blk, n)), scale_format=sfmt)
        small = dict(kw)
        if sfmt:
            small.update(a_scale=kw["a_scale"][:4, :128 // blk], b_scale=kw["b_scale"][:128 // blk, :4])
        tcsim.mma(a[:4, :128], b[:128, :4], **small)    # compile / load
        t = best_of(lambda: tcsim.mma(a, b, **kw), args.repeat)
        rate = macs / t
        ref_rate = ref_rate or rate
        rows.append(dict(path=label, ms=t * 1e3, macs_per_s=rate, ratio_vs_numpy_f32=t_blas / t,
                         ratio_vs_h100=rate / ref_rate))
        print(f"{label:34s} {t * 1e3:9.1f} ms  {rate / 1e9:6.2f} G MAC/s  "
              f"ratio vs numpy {t_blas / t:6.3f}  vs h100 {rate / ref_rate:5.2f}")
    print(json.dumps({"shape": [m, n, k], "paths": rows}))


if __name__ == "__main__":
    main()
