"""Time Hopper's FP8 ``mma.sync`` (a lowered instruction: two FP16 HMMA steps per k32) against
wgmma on one long dot product, M = N = 1 (issue 15 item 4).

    python benchmarks/bench_lowered.py --k 65536
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tcsim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[1 << 12, 1 << 16])
    ap.add_argument("--m", type=int, default=1)
    ap.add_argument("--n", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    def e4m3(shape):
        return tcsim.formats.decode(tcsim.formats.encode(rng.standard_normal(shape), "e4m3"),
                                    "e4m3")
    warm = e4m3((1, 64))
    for path in ("mma.sync", None):       # compile once, outside the timing
        tcsim.mma(warm, warm.T.copy(), model="h100", path=path, a_format="e4m3",
                  b_format="e4m3")
    for k in args.k:
        a, b = e4m3((args.m, k)), e4m3((k, args.n))
        for path in ("mma.sync", None):
            t0 = time.perf_counter()
            tcsim.mma(a, b, model="h100", path=path, a_format="e4m3", b_format="e4m3")
            print(f"M={args.m} N={args.n} K={k:>8} {path or 'wgmma':>8}: "
                  f"{time.perf_counter() - t0:.3f} s", flush=True)


if __name__ == "__main__":
    main()
