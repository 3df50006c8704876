"""Benchmark: peak memory of a simulated DeepSeek-V3 FP8 GEMM (goal: <= 0.8 GB at 4096x7168x7168).

    python benchmarks/bench_memory.py [--m 4096 --n 7168 --k 7168] [--stage gemm|quantize]
                                      [--tiny]

One process per measurement (the peak RSS of a process only grows): this script runs itself in
a child process, which makes float32 inputs (generated as float32: no float64 temporary),
warms the kernels up on a small GEMM, then runs ``--stage``: "gemm" (tcsim.gemm, h100,
Recipe.deepseek_v3()) or "quantize" (tcsim.quant.quantize of both operands, the first step of
the GEMM, kept as the full float64 Quantized operands). Reports the peak RSS of the process
(getrusage ru_maxrss), the RSS just before the stage, the inputs' bytes, and tracemalloc's peak
of the numpy allocations during the stage (arrays the numba kernels allocate are not traced; RSS
covers them). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _timing import parse_with_tiny

GB = 1e9


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(args) -> dict:
    import resource
    import tracemalloc

    import numpy as np

    import tcsim
    from tcsim.quant import quantize

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.m, args.k), dtype=np.float32)
    w = rng.standard_normal((args.k, args.n), dtype=np.float32)
    recipe = tcsim.Recipe.deepseek_v3()
    model = tcsim.load_model("h100")
    tcsim.gemm(x[:32, :256], w[:256, :32], model=model, recipe=recipe)   # warm-up / compile
    quantize(x[:32, :256], "e4m3", recipe.a_scaling, "a")
    quantize(w[:256, :32], "e4m3", recipe.b_scaling, "b")
    before = _rss_now()
    tracemalloc.start()
    t0 = time.perf_counter()
    if args.stage == "gemm":
        tcsim.gemm(x, w, model=model, recipe=recipe, progress=False)
    else:
        qa = quantize(x, "e4m3", recipe.a_scaling, "a")
        qb = quantize(w, "e4m3", recipe.b_scaling, "b")
        del qa, qb
    seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024     # KiB on Linux
    return {"stage": args.stage, "shape": [args.m, args.n, args.k], "seconds": seconds,
            "peak_rss_bytes": peak, "rss_before_bytes": before,
            "inputs_bytes": x.nbytes + w.nbytes, "numpy_traced_peak_bytes": traced_peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=4096)
    ap.add_argument("--n", type=int, default=7168)
    ap.add_argument("--k", type=int, default=7168)
    ap.add_argument("--stage", choices=("gemm", "quantize"), default="gemm")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parse_with_tiny(ap, m=32, n=32, k=256)
    if args.child:
        print(json.dumps(_child(args)))
        return
    run = subprocess.run([sys.executable, __file__, "--child", "--m", str(args.m), "--n",
                          str(args.n), "--k", str(args.k), "--stage", args.stage],
                         capture_output=True, text=True)
    if run.returncode:
        sys.exit(f"bench_memory: the child process failed:\n{run.stderr[-3000:]}")
    r = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"{r['stage']} M={args.m} N={args.n} K={args.k}: {r['seconds']:.1f} s")
    print(f"  peak RSS of the process      {r['peak_rss_bytes'] / GB:6.3f} GB")
    print(f"  RSS before the stage         {r['rss_before_bytes'] / GB:6.3f} GB "
          f"(of which the float32 inputs {r['inputs_bytes'] / GB:.3f} GB)")
    grown = r["peak_rss_bytes"] - r["rss_before_bytes"]
    print(f"  peak RSS - RSS before        {grown / GB:6.3f} GB")
    print(f"  numpy allocations, peak      {r['numpy_traced_peak_bytes'] / GB:6.3f} GB "
          f"(tracemalloc)")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
