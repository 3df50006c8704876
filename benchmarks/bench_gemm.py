"""Benchmark: a simulated DeepSeek-V3 FP8 GEMM on H100 against numpy float32 matmul.

    python benchmarks/bench_gemm.py [--m 1024 --n 1024 --k 7168 --repeat 2]

Random normal inputs, Recipe.deepseek_v3() (1x128 / 128x128 scaling, promotion every 128) on the
h100 preset. Prints the time of each stage (quantisation, tensor-core partials + promotion) and a
last line of JSON: {"macs_per_s": ..., "ratio_vs_numpy_f32": ..., "shape": [M, N, K]}.
"""

from __future__ import annotations

import numpy as np

import tcsim
from _timing import best_of, json_line, shape_args
from tcsim.quant import quantize


def main() -> None:
    args = shape_args(__doc__, 1024, 1024, 7168, 2)
    m, n, k = args.m, args.n, args.k
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    recipe = tcsim.Recipe.deepseek_v3()
    model = tcsim.load_model(args.model)

    tcsim.gemm(x[:32, :256], w[:256, :32], model=model, recipe=recipe)   # warm-up / compile
    t_sim = best_of(lambda: tcsim.gemm(x, w, model=model, recipe=recipe, progress=False),
                    args.repeat)
    t_quant = best_of(lambda: (quantize(x, "e4m3", recipe.a_scaling, "a"),
                               quantize(w, "e4m3", recipe.b_scaling, "b")), args.repeat)
    t_blas = best_of(lambda: x @ w, max(args.repeat, 5))
    macs = m * n * k
    print(f"shape M={m} N={n} K={k}, {model.name}, Recipe.deepseek_v3()")
    print(f"tcsim.gemm        {t_sim * 1e3:9.1f} ms  {macs / t_sim / 1e9:7.2f} G MAC/s")
    print(f"  quantisation    {t_quant * 1e3:9.1f} ms")
    print(f"  TC + promotion  {(t_sim - t_quant) * 1e3:9.1f} ms  ({k // 128} promotions per output)")
    print(f"numpy f32 @       {t_blas * 1e3:9.1f} ms  {macs / t_blas / 1e9:7.2f} G MAC/s")
    print(json_line(m, n, k, t_sim, t_blas))


if __name__ == "__main__":
    main()
