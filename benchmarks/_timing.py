"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import importlib
import json
import time
from contextlib import contextmanager

TINY_HELP = ("run at a tiny size (seconds): a smoke test that the script still works, as the "
             "test suite runs it; its timings mean nothing")


def best_of(fn, repeat: int) -> float:
    """The fastest of ``repeat`` runs of fn(), in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def parse_with_tiny(ap: argparse.ArgumentParser, **tiny) -> argparse.Namespace:
    """Add --tiny to ``ap`` and parse the command line: with --tiny the arguments named in
    ``tiny`` default to the values given there (an argument on the command line still wins)."""
    ap.add_argument("--tiny", action="store_true", help=TINY_HELP)
    if ap.parse_known_args()[0].tiny:
        ap.set_defaults(**tiny)
    return ap.parse_args()


def shape_args(doc: str, m: int, n: int, k: int, repeat: int,
               tiny: tuple[int, int, int]) -> argparse.Namespace:
    """--m --n --k --model --repeat, with the given defaults, and --tiny: M, N, K = ``tiny``
    and one repeat."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--m", type=int, default=m)
    ap.add_argument("--n", type=int, default=n)
    ap.add_argument("--k", type=int, default=k)
    ap.add_argument("--model", default="h100")
    ap.add_argument("--repeat", type=int, default=repeat)
    return parse_with_tiny(ap, m=tiny[0], n=tiny[1], k=tiny[2], repeat=1)


def json_line(m: int, n: int, k: int, t_sim: float, t_blas: float) -> str:
    """The last line every benchmark prints."""
    return json.dumps({"macs_per_s": m * n * k / t_sim, "ratio_vs_numpy_f32": t_blas / t_sim,
                       "shape": [m, n, k]})


# The stages of tcsim.gemm, by label, in the order they are reported.
GEMM_STAGE_LABELS = ("quantisation", "tensor-core kernel calls", "promotion epilogue")


def gemm_stages() -> list:
    """(owner, attribute, label) of the functions tcsim.gemm's stages run through. Looked up by
    name: when one moves, wrapping it fails loudly (the test suite runs every benchmark)."""
    gemm = importlib.import_module("tcsim.gemm")    # (tcsim.gemm the name is the function)
    quant = importlib.import_module("tcsim.quant")
    epilogue = importlib.import_module("tcsim._kernels.epilogue")  # gemm imports it per call
    return [(gemm, "quantize_plan", "quantisation"),          # the scales
            (quant.QuantPlan, "fill", "quantisation"),        # the values, chunk by chunk
            (gemm, "run_datapath", "tensor-core kernel calls"),
            (epilogue, "promote", "promotion epilogue")]


@contextmanager
def timed_stages(stages, times: dict):
    """Within the block, each (owner, attribute, label) of ``stages`` is wrapped so that its
    seconds add up in times[label]; the originals are put back afterwards."""
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in stages]

    def wrap(fn, label):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[label] += time.perf_counter() - t0
        return timed

    for (owner, name, label), (_, _, fn) in zip(stages, originals):
        setattr(owner, name, wrap(fn, label))
    try:
        yield times
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)
