"""Error metrics of a simulated GEMM, and the two references it is measured against.

A simulated FP8 GEMM ``y = tcsim.gemm(x, w, ...)`` differs from the float64 product ``x @ w``
for two reasons: the inputs were quantised to FP8 (with scales), and the quantised products
were summed by the modelled matrix unit (alignment, truncation, promotion into FP32). tcsim is
about the second, so there are two errors:

* **accumulation error**: y against the *exact* product of the quantised operands
  (:func:`exact_product`), the summation alone;
* **total error**: y against the float64 product of the original (unquantised) inputs,
  quantisation plus accumulation.

:func:`gemm_errors` gives both in one call. Every metric is a plain fraction (1e-3 is 0.1%),
never a percentage, and every default metric divides an error by a *scale* of the output, not
by single outputs, so outputs that happen to lie near zero cannot dominate it:

* ``rel_fro``: ||y - ref||_F / ||ref||_F;
* ``max_scaled``: max |y - ref| / max |ref|;
* ``p99_row``: the 99th percentile over outputs of |y_ij - ref_ij| / rms_j(ref_ij), each error
  in units of the RMS of its own output row (rows of different scale, e.g. outlier tokens,
  each count on their own scale).

The raw maximum elementwise relative error, max |y - ref| / |ref|, is there only when asked
(``elementwise=True``, key ``max_rel``): a single output near zero can make it arbitrarily
large (thousands of % on zero-mean inputs) while the accumulator is fine.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .gemm import GemmDetails
    from .quant import Quantized

METRICS = ("rel_fro", "max_scaled", "p99_row")
"""The default metrics, in the order they are reported."""

METRIC_LABELS = {"rel_fro": "rel. Frobenius", "max_scaled": "max/max|ref|",
                 "p99_row": "p99/row RMS", "max_rel": "raw max rel."}
METRIC_LEGEND = {"rel_fro": "rel. Frobenius = ||err||_F / ||ref||_F",
                 "max_scaled": "max/max|ref| = max |err| / max |ref|",
                 "p99_row": "p99/row RMS = 99th percentile of |err| / RMS of its output row",
                 "max_rel": "raw max rel. = max |err| / |ref| (outputs near 0 dominate it)"}


def _pair(y, ref) -> tuple[np.ndarray, np.ndarray]:
    y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
    if y.shape != ref.shape:
        raise ValueError(f"y is {y.shape} but the reference is {ref.shape}")
    return y, ref


def _ratio(num: float, den: float) -> float:
    """num / den, with 0/0 = 0 (no error on a zero output) and x/0 = inf for x > 0."""
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return float(num / den)


def relative_frobenius_error(y, ref) -> float:
    """||y - ref||_F / ||ref||_F (0 when both are zero, inf for an error on a zero reference,
    NaN for empty arrays or a NaN in y)."""
    y, ref = _pair(y, ref)
    if y.size == 0:
        return math.nan
    return _ratio(np.linalg.norm(y - ref), np.linalg.norm(ref))


def max_scaled_error(y, ref) -> float:
    """max |y - ref| / max |ref|: the largest error in units of the output's largest value."""
    y, ref = _pair(y, ref)
    if y.size == 0:
        return math.nan
    return _ratio(np.max(np.abs(y - ref)), np.max(np.abs(ref)))


def row_scaled_percentile(y, ref, q: float = 99.0) -> float:
    """The q-th percentile over all outputs of |y_ij - ref_ij| / rms_j(ref_ij).

    Each error is divided by the RMS of its output row (axis -1; 1-D inputs are one row). A row
    whose reference is all zero counts as 0 where y is exact there and as inf elsewhere."""
    y, ref = _pair(y, ref)
    if y.size == 0:
        return math.nan
    y2, ref2 = np.atleast_2d(y), np.atleast_2d(ref)
    err = np.abs(y2 - ref2)
    rms = np.sqrt(np.mean(ref2 * ref2, axis=-1, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(err == 0, 0.0, err / rms)
    return float(np.percentile(scaled, q))


def max_relative_error(y, ref) -> float:
    """Raw max over outputs of |y - ref| / |ref| (outputs with ref == 0 skipped).

    Not robust: an output near zero dominates it. Reported only where asked for."""
    y, ref = _pair(y, ref)
    nz = ref != 0
    return float(np.max(np.abs(y[nz] - ref[nz]) / np.abs(ref[nz]))) if nz.any() else 0.0


def errors(y, ref, elementwise: bool = False) -> dict:
    """The default metrics of y against ref, as fractions: keys "rel_fro", "max_scaled",
    "p99_row" (see the module docstring); with elementwise=True also the raw "max_rel"."""
    out = {"rel_fro": relative_frobenius_error(y, ref), "max_scaled": max_scaled_error(y, ref),
           "p99_row": row_scaled_percentile(y, ref)}
    if elementwise:
        out["max_rel"] = max_relative_error(y, ref)
    return out


# ---------------------------------------------------------------------------------------------
# The exact product of quantised operands
# ---------------------------------------------------------------------------------------------
# Why not ``a.dequantize() @ b.dequantize()`` in float64: a dequantised element is an FP8 value
# (<= 4 significant bits) times an fp32 scale (24 bits), so one product can need 56 bits, and
# a sum of K of them with different exponents needs far more; float64 keeps 53. The method
# below is exact where it matters and compensated where it combines:
#
# 1. K is cut into chunks over which both operands' scales are constant (the gcd of their
#    scale group lengths; the whole K for per-tensor or per-channel scales).
# 2. Within a chunk, the FP8 values are integers times a power of two q (q = the lowest set bit
#    over all nonzero values): A = qA * IA, B = qB * IB with IA, IB integers. Each integer is
#    split into base-2^w signed digits, |digit| < 2^w, with G * 2^(2w) <= 2^53 for a chunk of
#    G elements. Then every partial sum of sum_k IA_s[i,k] * IB_t[k,j] is an integer below
#    G * (2^w - 1)^2 < 2^53 in magnitude, hence exact in float64 in any order of summation,
#    with or without FMA: a float64 matmul per digit pair gives the chunk's integer sums
#    exactly. (FP8 integers need 18 (e4m3) or 32 (e5m2) bits: one or two digits.)
# 3. Each exact digit-pair sum times 2^(shift) * qA * qB (a power of two: exact) times the
#    chunk's scale product sa*sb (itself split exactly into s_hi + s_lo by TwoProduct; s_lo is
#    0 for two fp32 scales) is split by Dekker's TwoProduct into hi + lo, exactly, and all hi
#    and lo terms of all chunks are summed
#    in double-double arithmetic (TwoSum cascade, Ogita-Rump-Oishi "Sum2", SIAM J. Sci. Comput.
#    26 (2005)): the result is as if summed in 106-bit precision, |res - exact| <= 2^-53 |exact|
#    + (n 2^-53)^2 sum |terms| for n terms per output; then rounded once to float64.
# For the GEMMs tcsim simulates that is about 1e-25 of the output scale: 18 orders of
# magnitude below the fp32 rounding of the simulated result.

_SPLITTER = float(2 ** 27 + 1)   # Veltkamp: splits a float64 into two 26-bit halves


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s + e = a + b exactly, s = fl(a + b) (Knuth's TwoSum; no branches, any order)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def _two_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p + e = a * b exactly, p = fl(a * b) (Dekker; exact unless over/underflow)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, al * bl - (((p - ah * bh) - al * bh) - ah * bl)


def _quantum_exponent(v: np.ndarray) -> int:
    """The exponent of the lowest set bit over all nonzero entries of v: v = 2^e * integers."""
    nz = np.abs(v[v != 0])
    if nz.size == 0:
        return 0
    mant, exp = np.frexp(nz)                              # nz = mant * 2^exp, mant in [0.5, 1)
    ints = (mant * 2.0 ** 53).astype(np.int64)            # exact: 53-bit integers
    low = ints & -ints                                    # the lowest set bit, a power of two
    tz = np.frexp(low.astype(np.float64))[1] - 1          # its exponent
    return int(np.min(exp - 53 + tz))


def _digits(ints: np.ndarray, w: int, count: int) -> list[np.ndarray]:
    """Signed base-2^w digits of integer-valued float64 ints: ints = sum_t d_t * 2^(t w)."""
    sign, mag = np.sign(ints), np.abs(ints)
    out = []
    for _ in range(count):
        rest = np.floor(mag / 2.0 ** w)                   # exact: power-of-two division, floor
        out.append(sign * (mag - rest * 2.0 ** w))
        mag = rest
    return out


def _chunk_sums(a: np.ndarray, b: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Exact a @ b for float64 arrays of dyadic values with < 2^53 range, as a list of
    (float64 array of exact integer sums, power-of-two exponent): a @ b = sum arr * 2^exp."""
    g = a.shape[1]
    ea, eb = _quantum_exponent(a), _quantum_exponent(b)
    ia, ib = np.ldexp(a, -ea), np.ldexp(b, -eb)           # exact integers
    bits = [int(np.max(np.abs(x))).bit_length() if x.size else 0 for x in (ia, ib)]
    if max(bits) > 53:
        raise ValueError("operand values span more than 53 bits: not FP8/FP16-like codes")
    w = (53 - max(g - 1, 1).bit_length()) // 2            # g * 2^(2w) <= 2^53
    nd = [max(1, -(-nb // w)) for nb in bits]
    da, db = _digits(ia, w, nd[0]), _digits(ib, w, nd[1])
    return [(x @ y, ea + eb + w * (s + t)) for s, x in enumerate(da) for t, y in enumerate(db)]


def exact_product(a: "Quantized", b: "Quantized") -> np.ndarray:
    """The exact product of two quantised GEMM operands (x ~ a, w ~ b), rounded to float64.

    sum_k a.values[i,k] * sa[i,k] * b.values[k,j] * sb[k,j] with every element's own scale
    (tcsim.quant.Quantized.k_scales), computed without rounding error in the chunk sums and in
    double-double when combining chunks (see the comment above this function for the method
    and its error bound, far below any fp32 rounding). This is the reference of the
    *accumulation error*: what remains of y - exact_product(a, b) is the matrix unit's doing.
    """
    av, bv = np.asarray(a.values, np.float64), np.asarray(b.values, np.float64)
    (m, k), n = av.shape, bv.shape[1]
    sa, sb = a.k_scales(), b.k_scales()                   # (M, nKa), (nKb, N) fp32 values
    if not (np.isfinite(av).all() and np.isfinite(bv).all()):
        # NaN/Inf codes (pre-quantised operands): those outputs are what float64 gives
        # (NaN/Inf propagate); every other output is the exact sum of the finite products
        with np.errstate(invalid="ignore", over="ignore"):
            naive = a.dequantize() @ b.dequantize()
        finite = exact_product(_replace_values(a, np.where(np.isfinite(av), av, 0.0)),
                               _replace_values(b, np.where(np.isfinite(bv), bv, 0.0)))
        return np.where(np.isfinite(naive), finite, naive)
    ga, gb = k // sa.shape[1], k // sb.shape[0]
    step = math.gcd(ga, gb) or k
    hi, lo = np.zeros((m, n)), np.zeros((m, n))
    for k0 in range(0, k, step):
        # the scale product as s_hi + s_lo exactly (fp32 x fp32 fits in s_hi alone; NVFP4's
        # ue4m3 x fp32 tensor scales have up to 28 bits each and need s_lo too)
        s_hi, s_lo = _two_product(np.broadcast_to(sa[:, k0 // ga][:, None], (m, n)),
                                  np.broadcast_to(sb[k0 // gb][None, :], (m, n)))
        scales = (s_hi, s_lo) if np.any(s_lo) else (s_hi,)
        for sums, exp in _chunk_sums(av[:, k0:k0 + step], bv[k0:k0 + step]):
            exact_sums = np.ldexp(sums, exp)
            for s in scales:
                p, e = _two_product(exact_sums, s)
                for term in (p, e):
                    hi, err = _two_sum(hi, term)
                    lo = lo + err
    return hi + lo


def _replace_values(q: "Quantized", values: np.ndarray) -> "Quantized":
    import dataclasses
    return dataclasses.replace(q, values=values)


def gemm_errors(x, w, y, details: "GemmDetails", elementwise: bool = False) -> dict:
    """Accumulation and total error of a simulated GEMM, in one call.

        y, det = tcsim.gemm(x, w, model="h100", recipe=..., return_details=True)
        errs = tcsim.metrics.gemm_errors(x, w, y, det)
        errs["accumulation"]["rel_fro"], errs["total"]["rel_fro"]

    "accumulation": y against :func:`exact_product` of the quantised operands in ``details``
    (what the matrix unit and the promotion lose); "total": y against x @ w in float64 (adds
    the quantisation error); each a dict of :func:`errors` (fractions). When x and w are None
    or the pre-quantised operands the GEMM was given, "total" is left out. The float64 x @ w
    rounds, by about K * 2^-53 of sum |x w|: negligible beside the FP8 quantisation error.
    """
    out = {"accumulation": errors(y, details.exact_product(), elementwise)}
    from .quant import Quantized
    if x is not None and w is not None and not isinstance(x, Quantized) \
            and not isinstance(w, Quantized):
        total_ref = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
        out["total"] = errors(y, total_ref, elementwise)
    return out


def flat(errs: dict) -> dict:
    """gemm_errors' nested dict as flat columns: acc_<metric>, e2e_<metric> (e2e = total)."""
    prefix = {"accumulation": "acc", "total": "e2e"}
    return {f"{prefix[kind]}_{name}": v for kind, d in errs.items() for name, v in d.items()}


def fmt(v: float) -> str:
    """A fraction with 3 significant digits (1.28e-04), so that 1e-6 never prints as 0."""
    return f"{v:.2e}"


ERROR_KINDS = {"accumulation": "accumulation (vs exact quantised x @ w)",
               "total": "total (vs float64 x @ w)"}


def error_table(errs: dict, legend: bool = True) -> str:
    """gemm_errors' result as a small text table, accumulation error first, fractions with
    3 significant digits; with legend=True, followed by what each column is."""
    names = list(next(iter(errs.values())))
    width = max(len(v) for v in ERROR_KINDS.values())
    head = f"{'errors as fractions (1e-2 = 1%)':<{width}}" + \
        "".join(f"  {METRIC_LABELS[n]:>14}" for n in names)
    lines = [head, "-" * len(head)]
    for kind, d in errs.items():
        lines.append(f"{ERROR_KINDS[kind]:<{width}}" + "".join(f"  {fmt(d[n]):>14}"
                                                              for n in names))
    if legend:
        lines += ["", "accumulation: what the matrix unit and the promotion lose; total: plus "
                      "the FP8 quantisation of x and w"] + ["  " + METRIC_LEGEND[n] for n in names]
    return "\n".join(lines)
