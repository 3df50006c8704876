"""Benchmark: the fused float32 kernel (tcsim._kernels.fused) against the staged kernel's tile
(tcsim._kernels.staged, the general route) on the same prepared operands, back to back, and
numpy float32.

    python benchmarks/bench_fused.py [--m 512 --n 512 --k 4096 --model h100 --repeat 3]
                                     [--format e4m3] [--acc fp32] [--tiny]

Both kernels get identical inputs (random normal values cast to the format) and their results
are compared bit for bit before timing. Prints one line per kernel and a last line of JSON:
{"fused_macs_per_s", "staged_macs_per_s", "speedup" (wall), "cpu_speedup" (process CPU
time, steadier on a loaded machine), "ratio_vs_numpy_f32", "bits_equal", "shape"}.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import tcsim
from _timing import best_of, parse_with_tiny
from tcsim._kernels import fused
from tcsim._kernels.prep import prepare_operand
from tcsim._kernels.staged import staged_kernel
from tcsim.formats.catalog import get_format
from tcsim.formats.conversion import round_to_format
from tcsim.kernel_constants import NO_TERM
from tcsim.params import kernel_params


def _prepared(x: np.ndarray, fmt: str):
    vals = np.empty(x.shape, np.float32)
    exps = np.empty(x.shape, np.int16)
    prepare_operand(x, get_format(fmt).emin, NO_TERM, vals, exps)
    return vals, exps


def cpu_best_of(fn, repeat: int) -> float:
    """The smallest process CPU time of ``repeat`` runs of fn(), in seconds: on a loaded
    machine closer to the work done than wall time (all threads' CPU time added)."""
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("m", 512), ("n", 512), ("k", 4096), ("repeat", 3)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--model", default="h100")
    ap.add_argument("--format", default="e4m3")
    ap.add_argument("--acc", default="fp32")
    args = parse_with_tiny(ap, m=16, n=16, k=128, repeat=1)
    m, n, k, fmt, acc = args.m, args.n, args.k, args.format, args.acc

    dp = tcsim.load_model(args.model).find_path(fmt, fmt, acc)
    rng = np.random.default_rng(0)
    av = round_to_format(rng.standard_normal((1, m, k)), fmt, overflow="saturate")
    bv = round_to_format(rng.standard_normal((1, k, n)), fmt, overflow="saturate")
    cv = np.zeros((1, m, n))
    (a32, pa), (b32, pb) = _prepared(av, fmt), _prepared(bv, fmt)
    accf = get_format(acc)
    p = dp.output_precision or accf.precision
    prm = kernel_params(dp, acc, k, False, 0, fmt, fmt)
    a64, b64 = a32.astype(np.float64), b32.astype(np.float64)
    ones_a, ones_b = np.ones((1, m, 1)), np.ones((1, 1, n))
    zeros_a, zeros_b = np.zeros((1, m, 1), np.int64), np.zeros((1, 1, n), np.int64)

    def dummy(dtype):       # transposed B: read by the output-by-output route only
        return np.zeros((1, 1, 1), dtype)

    def run_fused():
        return fused.run(a32, b32, pa, pb, cv, prm)

    def run_staged():
        return staged_kernel(a64, b64, av, bv, dummy(np.float64), pa, pb, cv, ones_a, zeros_a,
                             ones_b, zeros_b, a32, b32, prm)

    assert prm.tiled, "the staged kernel's tiled route does not serve this datapath"
    same = np.array_equal(run_fused().view(np.uint32),
                          run_staged().astype(np.float32).view(np.uint32))
    t_fused = best_of(run_fused, args.repeat)
    t_staged = best_of(run_staged, args.repeat)
    c_fused = cpu_best_of(run_fused, args.repeat)
    c_staged = cpu_best_of(run_staged, args.repeat)
    x, y = a32[0], b32[0]
    t_blas = best_of(lambda: x @ y, max(args.repeat, 5))
    macs = m * n * k
    print(f"shape M={m} N={n} K={k}, {args.model} {fmt} -> {acc} (n={dp.block_size}, "
          f"f={dp.fraction_bits}, p={p}, {dp.output_rounding}); bits equal: {same}")
    for name, t, c in (("fused kernel", t_fused, c_fused), ("staged tile", t_staged, c_staged),
                       ("numpy f32 @", t_blas, None)):
        cpu = "" if c is None else f"   CPU {c * 1e3:9.1f} ms  {macs / c / 1e9:7.2f} G MAC/s"
        print(f"{name:13s} {t * 1e3:9.1f} ms  {macs / t / 1e9:7.2f} G MAC/s{cpu}")
    print(json.dumps({"fused_macs_per_s": macs / t_fused, "staged_macs_per_s": macs / t_staged,
                      "speedup": t_staged / t_fused,
                      "cpu_speedup": c_staged / c_fused, "ratio_vs_numpy_f32": t_blas / t_fused,
                      "bits_equal": bool(same), "shape": [m, n, k]}))


if __name__ == "__main__":
    main()
