"""Scales at promotion (Hopper + DeepGEMM) versus scales inside the MMA (Blackwell), same data.

    python -m tcsim.native_scaling [--m 64 --n 64 --ks 1024,4096,16384]

For each K, one x (M, K) and w (K, N) drawn from U(0, 1) (all positive: the case where a
truncating accumulator loses most) are run through:

* h100 + DeepSeek-V3 recipe: 1x128 / 128x128 fp32 scales applied at promotion every 128;
* h100 + MXFP8 at promotion: ue8m0 per 32, promotion (and scaling) every 32;
* h100 fast accumulation, per-tensor scales (no promotion);
* b200 tcgen05 + MXFP8 at promotion every 32;
* b200 kind::mxf8f6f4 + MXFP8 natively in the MMA, no promotion (Recipe.mxfp8_native);
* a proposal: h100's 13-bit accumulator with native MX scaling (block_scale = "exponent").

Two errors per run (relative Frobenius norm): "accumulation", against the exact product of the
run's own quantised operands (what the datapath adds), and "total", against x @ w in float64.
"""

from __future__ import annotations

import argparse

import numpy as np

from .datapath import Datapath
from .gemm import gemm
from .recipe import Recipe

H100_NATIVE = Datapath(block_size=32, fraction_bits=13, output_precision=14, output_rounding="rz",
                       block_scale="exponent")
RUNS = [
    ("h100 DeepSeek-V3 (scales at promotion, 128)", "h100", Recipe.deepseek_v3()),
    ("h100 MXFP8 (scales at promotion, 32)", "h100", Recipe.mxfp8()),
    ("h100 fast accumulation (per tensor)", "h100", Recipe.cublas_fast_accum()),
    ("b200 MXFP8 (scales at promotion, 32)", "b200", Recipe.mxfp8()),
    ("b200 mxf8f6f4 (scales in the MMA)", "b200", Recipe.mxfp8_native()),
    ("proposal: h100 13-bit + scales in the MMA", H100_NATIVE, Recipe.mxfp8_native()),
]


def _rel(y, ref):
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


def compare(m: int, n: int, ks, seed: int = 0, runs=None) -> list[dict]:
    """One row per (K, run): the accumulation and total relative errors (runs: (label, model,
    recipe) triples, default RUNS)."""
    rows = []
    for k in ks:
        rng = np.random.default_rng(seed)
        x = rng.uniform(0, 1, (m, k))
        w = rng.uniform(0, 1, (k, n))
        exact = x @ w
        for label, model, recipe in runs or RUNS:
            y, det = gemm(x, w, model=model, recipe=recipe, return_details=True,
                                progress=False)
            deq = (det.a.values * np.repeat(det.a.k_scales(), k // det.a.k_scales().shape[1], 1)) \
                @ (det.b.values * np.repeat(det.b.k_scales(), k // det.b.k_scales().shape[0], 0))
            rows.append(dict(k=k, run=label, accumulation=_rel(y, deq), total=_rel(y, exact)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--ks", default="1024,4096,16384")
    args = ap.parse_args()
    rows = compare(args.m, args.n, [int(k) for k in args.ks.split(",")])
    print(f"{'K':>6}  {'run':46s} {'accumulation':>13s} {'total':>10s}")
    for r in rows:
        print(f"{r['k']:6d}  {r['run']:46s} {r['accumulation']:13.3e} {r['total']:10.3e}")


if __name__ == "__main__":
    main()
