"""Benchmark: Hopper's FP8 ``mma.sync`` (a lowered instruction: two FP16 HMMA steps per k32)
against wgmma on one long dot product, M = N = 1.

    python benchmarks/bench_lowered.py [--k 4096 65536] [--m 1 --n 1] [--tiny]

Prints one line per K and path (seconds of one call, after a warm-up that compiles both paths)
and a last line of JSON: {"m": M, "n": N, "runs": [{"k": K, "mma_sync_s": ..., "wgmma_s": ...,
"ratio": mma_sync_s / wgmma_s}, ...]}.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import tcsim
from _timing import parse_with_tiny
from tcsim.formats.conversion import decode, encode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, nargs="+", default=[1 << 12, 1 << 16])
    ap.add_argument("--m", type=int, default=1)
    ap.add_argument("--n", type=int, default=1)
    args = parse_with_tiny(ap, k=[128])
    rng = np.random.default_rng(0)
    def e4m3(shape):
        return decode(encode(rng.standard_normal(shape), "e4m3"), "e4m3")
    warm = e4m3((1, 64))
    for path in ("mma.sync", None):       # compile once, outside the timing
        tcsim.mma(warm, warm.T.copy(), model="h100", path=path, a_format="e4m3",
                  b_format="e4m3")
    runs = []
    for k in args.k:
        a, b = e4m3((args.m, k)), e4m3((k, args.n))
        seconds = {}
        for path in ("mma.sync", None):
            t0 = time.perf_counter()
            tcsim.mma(a, b, model="h100", path=path, a_format="e4m3", b_format="e4m3")
            seconds[path] = time.perf_counter() - t0
            print(f"M={args.m} N={args.n} K={k:>8} {path or 'wgmma':>8}: "
                  f"{seconds[path]:.3f} s", flush=True)
        runs.append({"k": k, "mma_sync_s": seconds["mma.sync"], "wgmma_s": seconds[None],
                     "ratio": seconds["mma.sync"] / seconds[None]})
    print(json.dumps({"m": args.m, "n": args.n, "runs": runs}))


if __name__ == "__main__":
    main()
