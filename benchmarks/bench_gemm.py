"""Benchmark: a simulated DeepSeek-V3 FP8 GEMM on H100 against numpy float32 matmul.

    python benchmarks/bench_gemm.py [--m 1024 --n 1024 --k 7168 --repeat 2] [--tiny]

Random normal inputs, Recipe.deepseek_v3() (1x128 / 128x128 scaling, promotion every 128) on the
h100 preset. Prints where the time of one more (untimed) run goes: quantisation (scales, then
the values of each promotion chunk), the tensor-core kernel calls, the FP32 promotion epilogue and
the rest of tcsim.gemm; then the time of quantize() of both operands on its own (it builds the
full float64 operands, which gemm does not), and a last line of JSON:
{"macs_per_s": ..., "ratio_vs_numpy_f32": ..., "shape": [M, N, K]}.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

import tcsim
from _timing import GEMM_STAGE_LABELS, best_of, gemm_stages, json_line, shape_args, timed_stages
from tcsim.quant import quantize


def phase_times(run) -> dict:
    """Seconds spent in each stage of tcsim.gemm during run(), by wrapping the stages."""
    times = defaultdict(float)
    with timed_stages(gemm_stages(), times):
        t0 = time.perf_counter()
        run()
        times["total"] = time.perf_counter() - t0
    return times


def main() -> None:
    args = shape_args(__doc__, 1024, 1024, 7168, 2, tiny=(32, 32, 256))
    m, n, k = args.m, args.n, args.k
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    recipe = tcsim.Recipe.deepseek_v3()
    model = tcsim.load_model(args.model)

    tcsim.gemm(x[:32, :256], w[:256, :32], model=model, recipe=recipe)   # warm-up / compile
    run = lambda: tcsim.gemm(x, w, model=model, recipe=recipe, progress=False)  # noqa: E731
    t_sim = best_of(run, args.repeat)
    phases = phase_times(run)
    t_quant = best_of(lambda: (quantize(x, "e4m3", recipe.a_scaling, "a"),
                               quantize(w, "e4m3", recipe.b_scaling, "b")), args.repeat)
    t_blas = best_of(lambda: x @ w, max(args.repeat, 5))
    macs = m * n * k
    print(f"shape M={m} N={n} K={k}, {model.name}, Recipe.deepseek_v3()")
    print(f"tcsim.gemm        {t_sim * 1e3:9.1f} ms  {macs / t_sim / 1e9:7.2f} G MAC/s")
    print(f"  one more run, by stage ({k // 128} promotions per output):")
    staged = 0.0
    for label in GEMM_STAGE_LABELS:
        staged += phases[label]
        print(f"    {label:26s} {phases[label] * 1e3:9.1f} ms  "
              f"{phases[label] / phases['total']:6.1%}")
    rest = phases["total"] - staged
    print(f"    {'rest of tcsim.gemm':26s} {rest * 1e3:9.1f} ms  {rest / phases['total']:6.1%}")
    print(f"quantize() of x and w {t_quant * 1e3:9.1f} ms  (standalone, full float64 operands)")
    print(f"numpy f32 @       {t_blas * 1e3:9.1f} ms  {macs / t_blas / 1e9:7.2f} G MAC/s")
    print(json_line(m, n, k, t_sim, t_blas))


if __name__ == "__main__":
    main()
