"""Error bounds of the truncating block FMA, as functions of K, n, f, p and the promotion interval.

Notation: one output y = sum_k s_k a_k b_k + c with T = sum_k |s_k a_k b_k| + |c| (s_k the
product of the dequantisation scales of the K-group holding k; 1 without scaling). A block of
n products plus its incoming C puts every term on the grid g = 2^(E - f) (E = the block's largest
exponent) and rounds the sum once to p significant bits.

Worst case (a proof sketch; normal values, no exponent clamp at work):
* a term on the grid errs by less than u_t * g, u_t = 1 for truncation and floor, 1/2 for RNE;
  every term's significand is >= 1 (normal inputs, unnormalised or normalised products), so
  g <= 2^-f * max|term| <= 2^-f * M, with M the largest magnitude any running sum reaches;
* the output rounding errs by at most u_o * 2^(1-p) * |sum|, u_o = 1 for RZ, 1/2 for RNE;
* sign-magnitude truncation and RZ never increase a magnitude, so M <= T; the nearest modes may
  grow it by at most the factor G = (1 + (n + 1) 2^-f / 2 + 2^-p)^B, applied to T;
* one block therefore errs by at most ((n + 1) u_t 2^-f + u_o 2^(1-p)) * M, and B = ceil(K / n)
  chained blocks by B times that.
With promotion every P elements the chain restarts at 0 for each chunk: a chunk of T_j errs by
at most ceil(P / n) ((n + 1) u_t 2^-f + u_o 2^(1-p)) G T_j, and sum_j T_j <= T; each promotion adds
the FP32 roundings of the scale product and of the FMA, at most 2^-23 * T each (both <= half an
FP32 ulp of a value bounded by T, counted generously).

Expected error (:func:`expected`, a model, not a bound): the truncation bias of same-sign inputs,
where every block loses about half a grid unit per product. Zero-mean inputs lose far less (the
truncations cancel), and no closed form is offered for them: simulate.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .datapath import Datapath


def _units(dp: Datapath) -> tuple[float, float]:
    u_t = 0.5 if dp.term_rounding == "rne" else 1.0
    u_o = 0.5 if dp.output_rounding == "rne" else 1.0
    return u_t, u_o


def block_error(dp: Datapath, p: int) -> float:
    """Worst-case error of one block relative to the largest magnitude in it."""
    if dp.fraction_bits is None:
        align = 0.0
    else:
        u_t, _ = _units(dp)
        align = (dp.block_size + 1) * u_t * 2.0 ** -dp.fraction_bits
    return align + _units(dp)[1] * 2.0 ** (1 - p)


def worst_case(k: int, dp: Datapath, p: int, promotion: Optional[int] = None) -> float:
    """Bound on |y - exact| / T for depth K (see the module docstring)."""
    n = dp.block_size or k
    chunk = promotion or k
    blocks = math.ceil(chunk / n)
    growth = 1.0
    if dp.term_rounding == "rne" or dp.output_rounding == "rne":
        f = dp.fraction_bits if dp.fraction_bits is not None else 60
        growth = (1 + (n + 1) * 2.0 ** -f / 2 + 2.0 ** -p) ** blocks
    bound = blocks * block_error(dp, p) * growth
    if promotion is not None:
        bound += 2 * math.ceil(k / promotion) * 2.0 ** -23
    return bound


def expected(k: int, dp: Datapath, p: int, promotion: Optional[int] = None) -> float:
    """A model of the typical |y - exact| / T for same-sign inputs (the truncation bias).

    Each block truncates its n products on the grid 2^(E-f); a product with many bits below the
    grid loses half a grid unit on average (none on average under RNE), and the RZ output rounding
    half an ulp of p bits (none under RNE). The running sum S grows linearly over a chunk, so it
    averages half the chunk's share of T, and 2^E averages 1/(2 ln 2) = 0.721 of S (S's
    significand log-uniform in [1, 2)). Summed over the B = ceil(P / n) blocks of each chunk:
    B * 0.721 * (1/2) * (n/2 * 2^-f [truncate/floor] + 2^-p [RZ]) of T.

    It is asymptotic: a product with m significant bits (8 for FP8 x FP8) loses nothing until
    the running sum is about 2^(f - m) times larger than it, so short chunks lose less than
    modelled (measured on U(0, 1) e4m3 inputs, h100: 1.4-1.5x over for fast accumulation at
    K >= 2048, 6x over with promotion every 128). That lag is part of why promotion every 128
    helps more than the ratio K / 128 alone suggests.
    """
    n = dp.block_size or k
    blocks = math.ceil((promotion or k) / n)
    term = 0.0 if dp.term_rounding == "rne" or dp.fraction_bits is None else \
        n / 2 * 2.0 ** -dp.fraction_bits
    out = 2.0 ** -p if dp.output_rounding == "rz" else 0.0
    return blocks * (1 / (2 * math.log(2))) * 0.5 * (term + out)


def magnitude_sum(a: np.ndarray, b: np.ndarray, c: np.ndarray, scale=None) -> np.ndarray:
    """T = |a| @ |b| * scale + |c| per output (float64; the scale broadcast per output)."""
    t = np.abs(a) @ np.abs(b)
    if scale is not None:
        t = t * scale
    return t + np.abs(c)


def simulate_relative_errors(model: str = "h100", ks=(256, 512, 1024, 2048, 4096, 8192),
                             promotion: Optional[int] = None, dist: str = "uniform",
                             m: int = 16, seed: int = 0) -> list[dict]:
    """|y - exact| / T of simulated GEMMs (power-of-two scales, so scaling adds no error)
    beside the worst-case bound and the expected model, for each K."""
    from .gemm import gemm
    from .presets import load_model
    from .recipe import Recipe, Scaling
    from .workloads import make_inputs
    path = load_model(model).find_path("e4m3", "e4m3", "fp32")
    dp, p = path.datapath(), path.effective_output_precision()
    sc = Scaling(scale_dtype="pow2")
    recipe = Recipe(a_scaling=sc, b_scaling=sc, promotion_interval=promotion, epilogue="2d2d")
    rows = []
    for k in ks:
        x, w = make_inputs(dist, m, k, m, seed=seed)
        y, det = gemm(x, w, model=model, recipe=recipe, return_details=True, progress=False)
        a, b = det.a.values, det.b.values
        s = det.a.scales[0, 0] * det.b.scales[0, 0]
        err = np.abs(y - (a @ b) * s) / magnitude_sum(a, b, 0.0, s)
        rows.append({"K": k, "max": float(err.max()), "mean": float(err.mean()),
                     "worst_case": worst_case(k, dp, p, promotion),
                     "expected": expected(k, dp, p, promotion)})
    return rows


def plot(path, model: str = "h100", dist: str = "uniform",
         ks=(256, 512, 1024, 2048, 4096, 8192), m: int = 16) -> Optional[str]:
    """Simulated errors beside the bound and the model, fast accumulation and promotion every
    128 (PNG). None when matplotlib is missing."""
    try:
        import matplotlib.pyplot as plt  # no backend forced: headless picks Agg itself
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for promotion, color in ((None, "tab:red"), (128, "tab:blue")):
        rows = simulate_relative_errors(model, ks=ks, promotion=promotion, dist=dist, m=m)
        ks = [r["K"] for r in rows]
        label = "fast accumulation" if promotion is None else f"promotion every {promotion}"
        ax.loglog(ks, [r["mean"] for r in rows], "o-", color=color, label=f"{label}: simulated")
        ax.loglog(ks, [r["worst_case"] for r in rows], "--", color=color, label="worst case")
        ax.loglog(ks, [r["expected"] for r in rows], ":", color=color, label="expected (model)")
    ax.set_xlabel("K")
    ax.set_ylabel("|error| / sum |a b|")
    ax.set_title(f"{model} e4m3 GEMM, {dist} inputs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
