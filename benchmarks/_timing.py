"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import json
import time


def best_of(fn, repeat: int) -> float:
    """The fastest of ``repeat`` runs of fn(), in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def shape_args(doc: str, m: int, n: int, k: int, repeat: int) -> argparse.Namespace:
    """--m --n --k --model --repeat, with the given defaults."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--m", type=int, default=m)
    ap.add_argument("--n", type=int, default=n)
    ap.add_argument("--k", type=int, default=k)
    ap.add_argument("--model", default="h100")
    ap.add_argument("--repeat", type=int, default=repeat)
    return ap.parse_args()


def json_line(m: int, n: int, k: int, t_sim: float, t_blas: float) -> str:
    """The last line every benchmark prints."""
    return json.dumps({"macs_per_s": m * n * k / t_sim, "ratio_vs_numpy_f32": t_blas / t_sim,
                       "shape": [m, n, k]})
