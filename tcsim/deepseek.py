"""Reproduce DeepSeek-V3's accumulation-precision claims (arXiv 2412.19437 s3.3.2).

The paper: Hopper's FP8 tensor cores keep "around 14 bits"; a GEMM of two random matrices with
K = 4096 has "a maximum relative error of nearly 2%" without promotion; promoting every
N_C = 128 elements into FP32 fixes it. The distribution and metric are not given, so this module
tabulates several metrics for several distributions and K, and shows which settings reach
2% (a fraction of 2e-2).

    python -m tcsim.deepseek [--ks 256 1024 4096 16384] [--dists uniform normal] [--csv]
    python -m tcsim.deepseek --promotion --ks 4096 --dists biased   # promotion 128 ... K
    python -m tcsim.deepseek --operands layer.npz                    # captured x, w

Distributions (tcsim.workloads): zero-mean inputs (normal, heavy, outliers) let truncation
errors cancel; all-positive U(0, 1) reaches 1-3% already at K ~ 1024 and ~8% at 4096; the
sign-biased N(0.75, 1) x N(0.75, 1) gives about 2% at K = 4096 on h100 fast accumulation, the
paper's figure at the paper's K (the paper states neither distribution nor metric).

Errors are measured two ways (tcsim.metrics): "acc" against the exact product of the
*quantised* inputs (the accumulation error alone: what the paper's 14-bit claim is about) and
"e2e" (total) against the float64 product of the original inputs (adds the FP8 quantisation
error). Each with the robust metrics of tcsim.metrics, as fractions: relative Frobenius error
(rel_fro), max |err| / max |ref| (max_scaled) and the 99th percentile of |err| / row RMS
(p99_row); the raw max elementwise relative error (max_rel) only with elementwise=True
(``--raw-max``), since outputs near zero dominate it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterable, Optional

import numpy as np

from .gemm import gemm
from .metrics import flat, fmt, gemm_errors
from .recipe import Recipe
from .workloads import DISTRIBUTIONS, make_inputs

# name -> (model, recipe): the settings compared
CONFIGS = {
    "h100 fast accum (per-tensor)": ("h100", Recipe.cublas_fast_accum()),
    "h100 promote/128 (per-tensor)": ("h100", Recipe.cublas_split_accum()),
    "h100 DeepSeek-V3 (1x128, 128x128, promote/128)": ("h100", Recipe.deepseek_v3()),
    "b200 fast accum (per-tensor)": ("b200", Recipe.cublas_fast_accum()),
    "ideal (exact sum, one rounding)": ("ideal", Recipe.cublas_fast_accum()),
}
DEFAULT_KS = (256, 512, 1024, 2048, 4096, 8192, 16384)


def run_config(x, w, model, recipe, elementwise: bool = False) -> dict:
    """Simulate one GEMM and measure it against both references (flat acc_* / e2e_* keys)."""
    y, det = gemm(x, w, model=model, recipe=recipe, return_details=True, progress=False)
    return flat(gemm_errors(x, w, y, det, elementwise))


def error_table(ks: Iterable[int] = DEFAULT_KS, dists: Iterable[str] = ("uniform", "normal"),
                configs: Optional[dict] = None, m: int = 64, n: int = 64, seed: int = 0,
                progress: bool = False, elementwise: bool = False) -> list[dict]:
    """One row per (distribution, K, configuration) with the error figures of run_config."""
    configs = configs or CONFIGS
    rows = []
    ks, dists = list(ks), list(dists)
    total, done = len(ks) * len(dists) * len(configs), 0
    for dist in dists:
        for k in ks:
            x, w = make_inputs(dist, m, k, n, seed)
            for name, (model, recipe) in configs.items():
                if progress:
                    print(f"\r[{done + 1}/{total}] {dist} K={k} {name:<50}", end="",
                          file=sys.stderr, flush=True)
                rows.append({"dist": dist, "K": k, "config": name} |
                            run_config(x, w, model, recipe, elementwise))
                done += 1
    if progress:
        print(file=sys.stderr)
    return rows


def promotion_intervals(k: int, smallest: int = 128) -> list:
    """128, 256, ... up to K (powers of two times ``smallest``), then None (no promotion)."""
    out, p = [], smallest
    while p < k:
        out.append(p)
        p *= 2
    return out + [None]


def promotion_table(ks: Iterable[int] = (1024, 4096), dists: Iterable[str] = ("biased",),
                    model: str = "h100", m: int = 64, n: int = 64, seed: int = 0,
                    intervals: Optional[Iterable] = None) -> list[dict]:
    """One row per (distribution, K, promotion interval): per-tensor scales (cuBLAS-style
    promotion) with the interval from 128 up to K, and None (fast accumulation); the
    configuration column says which. ``intervals``: the intervals to try (default
    :func:`promotion_intervals` of each K)."""
    rows = []
    for dist in dists:
        for k in ks:
            x, w = make_inputs(dist, m, k, n, seed)
            for p in (list(intervals) if intervals is not None else promotion_intervals(k)):
                recipe = Recipe.cublas_split_accum(promotion_interval=p)
                name = f"{model} promote/{p}" if p is not None else f"{model} fast accum"
                rows.append({"dist": dist, "K": k, "config": name, "promotion_interval": p}
                            | run_config(x, w, model, recipe))
    return rows


def operands_table(x, w, name: str = "captured", configs: Optional[dict] = None) -> list[dict]:
    """The configurations (default CONFIGS) on given operands x (M, K), w (K, N), e.g. a
    layer's operands captured from a training run (tcsim.torch.OperandRecorder)."""
    x, w = np.asarray(x, np.float32), np.asarray(w, np.float32)
    return [{"dist": name, "K": x.shape[1], "config": c} | run_config(x, w, model, recipe)
            for c, (model, recipe) in (configs or CONFIGS).items()]


# the columns of format_rows: (key, header), accumulation error first
COLUMNS = (("acc_rel_fro", "acc fro"), ("acc_max_scaled", "acc max"), ("acc_p99_row", "acc p99"),
           ("e2e_rel_fro", "tot fro"), ("e2e_max_scaled", "tot max"), ("e2e_p99_row", "tot p99"))


def format_rows(rows: list[dict], legend: bool = True, raw: bool = False) -> str:
    """The rows as a text table: fractions with 3 significant digits (1e-2 = 1%); raw=True
    adds the raw max elementwise relative errors (rows from error_table(elementwise=True))."""
    cols = list(COLUMNS) + ([("acc_max_rel", "acc raw"), ("e2e_max_rel", "tot raw")] if raw
                            else [])
    head = f"{'dist':<9}{'K':>6}  {'configuration':<48}" + "".join(f"{h:>10}" for _, h in cols)
    out = [head, "-" * len(head)]
    for r in rows:
        out.append(f"{r['dist']:<9}{r['K']:>6}  {r['config']:<48}"
                   + "".join(f"{fmt(r[k]):>10}" for k, _ in cols))
    if legend:
        out += ["", "acc = accumulation error (vs the exact product of the FP8 inputs), tot = "
                    "total error (vs x @ w in float64); fractions (1e-2 = 1%)",
                "fro = ||err||_F/||ref||_F, max = max|err|/max|ref|, p99 = 99th percentile of "
                "|err|/(RMS of its output row)"
                + (", raw = max |err|/|ref| (outputs near 0 dominate it)" if raw else "")]
    return "\n".join(out)


def near_two_percent(rows: list[dict], low: float = 0.01, high: float = 0.03) -> list[str]:
    """Which (distribution, K, configuration, metric) give 1e-2 to 3e-2: the paper's 'nearly 2%'
    (reported for K = 4096; every K is scanned, since the paper's inputs are not known).
    Scans every acc_* / e2e_* metric the rows hold."""
    hits = []
    for r in rows:
        for metric in (k for k in r if k.startswith(("acc_", "e2e_"))):
            if low <= r[metric] <= high:
                hits.append(f"{r['dist']}, K = {r['K']}, {r['config']}: {metric} = "
                            f"{fmt(r[metric])}")
    return hits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tcsim.deepseek", description=__doc__.split("\n")[0])
    ap.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS))
    ap.add_argument("--dists", nargs="+", default=list(DISTRIBUTIONS), choices=DISTRIBUTIONS)
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--raw-max", dest="raw_max", action="store_true",
                    help="also the raw max elementwise relative error (acc_max_rel, e2e_max_rel)")
    ap.add_argument("--promotion", action="store_true",
                    help="sweep the promotion interval (128 ... K, and none) on h100 instead")
    ap.add_argument("--operands", help=".npz file with arrays x (M, K) and w (K, N), e.g. "
                    "captured from a training run: run the configurations on them")
    output = ap.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true")
    output.add_argument("--csv", action="store_true")
    args = ap.parse_args(argv)
    if args.operands:
        data = np.load(args.operands)
        missing = {"x", "w"} - set(data.files)
        if missing:
            print(f"python -m tcsim.deepseek: error: {args.operands}: no array(s) "
                  f"{', '.join(sorted(missing))}", file=sys.stderr)
            return 2
        rows = operands_table(data["x"], data["w"], name=os.path.basename(args.operands))
    elif args.promotion:
        rows = promotion_table(args.ks, args.dists, m=args.m, n=args.n, seed=args.seed)
    else:
        rows = error_table(args.ks, args.dists, m=args.m, n=args.n, seed=args.seed,
                           progress=True, elementwise=args.raw_max)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.csv:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        print(",".join(keys))
        for r in rows:
            print(",".join(str(r.get(k, "")) for k in keys))
    else:
        print(format_rows(rows, raw=args.raw_max))
        hits = near_two_percent(rows)
        print("\nSettings giving 'nearly 2%' (1e-2 to 3e-2):")
        print("\n".join("  " + h for h in hits) if hits else "  none")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
