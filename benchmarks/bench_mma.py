"""Benchmark: simulated H100 FP8 (e4m3 -> fp32) MMA against numpy float32 matmul.

    python benchmarks/bench_mma.py [--m 512 --n 512 --k 4096 --repeat 3] [--tiny]

Random normal inputs cast to e4m3 (ml_dtypes). Prints the timings, where the time goes (input
checks and preparation vs the kernel), and a last line of JSON:
{"macs_per_s": ..., "ratio_vs_numpy_f32": ..., "shape": [M, N, K]}.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

import tcsim
from _timing import best_of, json_line, shape_args
from tcsim.mma import input_values


def main() -> None:
    args = shape_args(__doc__, 512, 512, 4096, 3, tiny=(16, 16, 128))
    m, n, k = args.m, args.n, args.k

    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(ml_dtypes.float8_e4m3fn)
    b = rng.standard_normal((k, n)).astype(ml_dtypes.float8_e4m3fn)
    c = np.zeros((m, n), dtype=np.float32)
    model = tcsim.load_model(args.model)

    # warm-up: compiles (or loads from cache) the kernels for this signature
    tcsim.mma(a[:8, :64].copy(), b[:64, :8].copy(), c[:8, :8].copy(), model=model)

    t_sim = best_of(lambda: tcsim.mma(a, b, c, model=model), args.repeat)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    t_blas = best_of(lambda: a32 @ b32, max(args.repeat, 5))

    # where the time goes: input checks + preparation vs the kernel itself
    t_check = best_of(lambda: (input_values(a, "e4m3", "a"),
                               input_values(b, "e4m3", "b")), args.repeat)
    macs = m * n * k
    print(f"shape M={m} N={n} K={k}, model {model.name} e4m3 -> fp32")
    print(f"tcsim.mma      {t_sim * 1e3:9.1f} ms  {macs / t_sim / 1e9:7.2f} G MAC/s")
    print(f"  input checks {t_check * 1e3:9.1f} ms  (decode + representability of a and b)")
    print(f"  kernel+prep  {(t_sim - t_check) * 1e3:9.1f} ms")
    print(f"numpy f32 @    {t_blas * 1e3:9.1f} ms  {macs / t_blas / 1e9:7.2f} G MAC/s")
    print(json_line(m, n, k, t_sim, t_blas))


if __name__ == "__main__":
    main()
