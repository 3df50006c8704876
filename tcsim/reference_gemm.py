"""Exact, slow, obviously-correct oracle for whole FP8 GEMMs with promotion and scaling.

This is the GEMM-level companion of :mod:`tcsim.reference`: the tensor-core partial sums come
from :func:`tcsim.reference.dot` (the exact block-FMA oracle), and everything the CUDA cores do
with them (scaling, promotion into the FP32 accumulator, the final bf16 conversion) is computed
here on exact values (Python integers and :class:`fractions.Fraction`), each IEEE operation
rounded once. Python floats appear only at the boundary, and for the non-finite cases (Inf,
NaN), where float arithmetic on those operands alone gives the IEEE answer.

The model of one output (i, j), for a :class:`tcsim.recipe.Recipe` and a
:class:`tcsim.datapath.Datapath`:

1. acc = +0 (an fp32 value).
2. K is cut into chunks: the whole K when ``recipe.promotion_interval`` is None (fast
   accumulation), otherwise [0, P), [P, 2P), ... (the last may be shorter). A chunk never
   straddles two scale groups (checked).
3. Each chunk [k0, k1) gives the tensor-core partial
   p = dot(a[i, k0:k1], b[k0:k1, j], C = +0) (the tensor-core accumulator restarts at 0), and the
   scales sa = a_scales[i, g], sb = b_scales[g, j] of its group g = k0 // G.
4. acc = epilogue(acc, p, sa, sb) in IEEE binary32 with round-to-nearest-even (subnormals kept,
   overflow to Inf, NaN propagating, IEEE signed zeros); an FMA rounds once:

   ==========  ====================================
   "deepgemm"  s = RN(sa*sb);          acc = RN(s*p + acc)
   "1d1d"      t = RN(p*sa);           acc = RN(t*sb + acc)
   "2d1d"      t = RN(p*sb);           acc = RN(t*sa + acc)
   "2d2d"      s = RN(sa*sb);          acc = RN(p*s + acc)
   "mul_add"   t = RN(RN(p*sa)*sb);    acc = RN(acc + t)
   ==========  ====================================

5. The output is acc (fp32), or acc rounded to bfloat16 with RNE (bf16).

Public functions: :func:`gemm`, :func:`promoted_dot` (one output, traced on request),
:func:`fp32_round`, :func:`bf16_round`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

import ml_dtypes
import numpy as np

from . import reference
from .datapath import Datapath
from .errors import FormatError, ShapeError
from .recipe import Recipe

# binary32: 24 significant bits, normal exponents -126..127.
_FP32_P, _FP32_EMIN, _FP32_EMAX = 24, -126, 127
# bfloat16: 8 significant bits, the same exponent range as binary32.
_BF16_P, _BF16_EMIN, _BF16_EMAX = 8, -126, 127

_FP32_NAN_BITS = 0x7FFFFFFF
_BF16_NAN_BITS = 0x7FFF


# ---------------------------------------------------------------------------------------------
# Exact rounding: the oracle's one rounding routine (tcsim.reference.round_pack)
# ---------------------------------------------------------------------------------------------
def _round_rne(q: Fraction, p: int, emin: int, emax: int) -> float:
    """An exact value q rounded to the binary format (p significant bits, exponents emin..emax)
    with round-to-nearest-even: subnormals kept, overflow to +-Inf, a nonzero value that rounds
    to zero keeps its sign, an exact zero is +0."""
    return float(reference.round_pack(Fraction(q), p, emin, emax, "rne"))


def fp32_round(q: Fraction) -> float:
    """IEEE binary32 round-to-nearest-even of an exact value, as a Python float.

    Subnormals are kept, values at or beyond max + half an ulp become Inf, a nonzero value that
    rounds to zero gives a zero of its own sign; an exact 0 gives +0.
    """
    return _round_rne(Fraction(q), _FP32_P, _FP32_EMIN, _FP32_EMAX)


def _check_fp32(x: float, what: str) -> float:
    x = float(x)
    if not math.isnan(x) and float(np.float32(x)) != x:
        raise FormatError(f"{what} = {x!r} is not an fp32 value")
    return x


def bf16_round(x: float) -> float:
    """An fp32 value rounded to bfloat16 with RNE (subnormals kept, overflow to Inf, signed
    zeros and Inf kept, NaN stays NaN), as a Python float."""
    x = _check_fp32(x, "x")
    if math.isnan(x) or math.isinf(x):
        return x
    if x == 0:
        return x  # keeps the sign
    return _round_rne(Fraction(x), _BF16_P, _BF16_EMIN, _BF16_EMAX)


# ---------------------------------------------------------------------------------------------
# IEEE binary32 operations (round to nearest even), on fp32 values held in Python floats
# ---------------------------------------------------------------------------------------------
def _finite(*xs: float) -> bool:
    return all(math.isfinite(x) for x in xs)


def _negative(x: float) -> bool:
    return math.copysign(1.0, x) < 0


def _nan_to_canonical(x: float) -> float:
    return math.nan if math.isnan(x) else x


def _fma(a: float, b: float, c: float) -> float:
    """RN(a * b + c) in binary32 with one rounding (fp32_round of the exact value)."""
    if not _finite(a, b, c):
        # a, b, c are fp32 values, so a finite a*b is exact in float64 (|a*b| < 2^256); the
        # float64 expression then only combines Infs/NaNs the IEEE way (Inf - Inf = NaN).
        return _nan_to_canonical(a * b + c)
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    if exact == 0:
        product_zero = a == 0 or b == 0
        if product_zero and c == 0:
            product_negative = _negative(a) != _negative(b)
            if product_negative and _negative(c):
                return -0.0  # (-0) + (-0) = -0
        return 0.0  # x + (-x) = +0 under round-to-nearest, and +0 + -0 = +0
    return fp32_round(exact)


def _mul(a: float, b: float) -> float:
    """RN(a * b) in binary32: fma(a, b, -0), since x + (-0) = x for every x, zeros included."""
    return _fma(a, b, -0.0)


def _add(a: float, b: float) -> float:
    """RN(a + b) in binary32: fma(a, 1, b)."""
    return _fma(a, 1.0, b)


def _epilogue(kind: str, acc: float, p: float, sa: float, sb: float) -> float:
    """One promotion: the partial p with scales sa, sb added into acc (Recipe.epilogue)."""
    if kind == "deepgemm":
        return _fma(_mul(sa, sb), p, acc)
    if kind == "1d1d":
        return _fma(_mul(p, sa), sb, acc)
    if kind == "2d1d":
        return _fma(_mul(p, sb), sa, acc)
    if kind == "2d2d":
        return _fma(p, _mul(sa, sb), acc)
    if kind == "mul_add":
        return _add(acc, _mul(_mul(p, sa), sb))
    raise ValueError(f"unknown epilogue {kind!r}")


# ---------------------------------------------------------------------------------------------
# The GEMM
# ---------------------------------------------------------------------------------------------
def _chunks(K: int, interval: Optional[int]) -> list[tuple[int, int]]:
    if K == 0:
        return []
    if interval is None:
        return [(0, K)]
    return [(k0, min(k0 + interval, K)) for k0 in range(0, K, interval)]


def _fp32_bits(x: float) -> int:
    if math.isnan(x):
        return _FP32_NAN_BITS
    return int(np.array([x], dtype=np.float32).view(np.uint32)[0])


def _bf16_bits(x: float) -> int:
    if math.isnan(x):
        return _BF16_NAN_BITS
    v = np.array([x], dtype=np.float32).astype(ml_dtypes.bfloat16)  # exact: x is a bf16 value
    assert float(v[0]) == x or (x == 0 and float(v[0]) == 0)
    return int(v.view(np.uint16)[0])


@dataclass(frozen=True)
class Promotion:
    """One promotion of a traced output: the tensor-core partial of K indices [k0, k1) (its
    trace), scaled by sa, sb and added into the FP32 accumulator (Recipe.epilogue)."""

    k0: int
    k1: int
    partial: float
    sa: float
    sb: float
    acc_before: float
    acc_after: float
    trace: Optional[reference.DotTrace] = None


@dataclass(frozen=True)
class PromotedDot:
    """:func:`promoted_dot`'s answer: the FP32 accumulator, every promotion, and (recorded)
    the exact acc0 + sum over chunks of sa sb (a . b over the chunk)."""

    result: float
    promotions: list
    exact: Fraction = Fraction(0)


def promoted_dot(a_row, b_col, chunks, scales, dp: Datapath, a_format: str, b_format: str,
                 epilogue: str = "deepgemm", acc0: float = 0.0, acc: str = "fp32",
                 index=(0, 0, 0), record: bool = False,
                 block_scales: Optional[dict] = None) -> PromotedDot:
    """One output of a promoted GEMM (steps 1-4 of the module docstring): for each chunk
    (k0, k1) with scales (sa, sb), the partial p = dot(a_row[k0:k1], b_col[k0:k1], +0) on
    ``dp.for_chunk(chunk)`` in ``acc``, then acc = epilogue(acc, p, sa, sb) in binary32 from
    ``acc0``. record: each Promotion holds its partial's trace, and the exact value is given.
    block_scales: a block-scaled instruction's scales, as :func:`tcsim.reference.dot` takes
    them (a_scales, b_scales: one per K element; scale_format), cut with the chunks."""
    out, promotions = _check_fp32(acc0, "acc0"), []
    exact = Fraction(out) if record and math.isfinite(out) else Fraction(0)
    for ci, ((k0, k1), (sa, sb)) in enumerate(zip(chunks, scales)):
        bs = {} if block_scales is None else {
            "a_scales": block_scales["a_scales"][k0:k1],
            "b_scales": block_scales["b_scales"][k0:k1],
            "scale_format": block_scales["scale_format"]}
        tr = reference.trace_dot(list(a_row[k0:k1]), list(b_col[k0:k1]), 0.0, dp.for_chunk(ci),
                                 a_format, b_format, acc, index, record=record, first_k=k0,
                                 **bs)
        p = float(tr.result)
        before = out
        out = _epilogue(epilogue, out, p, _check_fp32(sa, "sa"), _check_fp32(sb, "sb"))
        promotions.append(Promotion(k0, k1, p, sa, sb, before, out, tr if record else None))
        if record:
            exact += Fraction(sa) * Fraction(sb) * tr.exact
    return PromotedDot(out, promotions, exact)


def gemm(a_values, a_scales, b_values, b_scales, recipe: Recipe, dp: Datapath) -> np.ndarray:
    """The scaled FP8 GEMM D = (A * sa) @ (B * sb) as ``recipe`` runs it on the datapath ``dp``.

    a_values (M, K), b_values (K, N): values exactly representable in recipe.a_format /
        recipe.b_format (floats or ml_dtypes arrays).
    a_scales (M, nK), b_scales (nK, N): the fp32 dequantisation scale of row i of A / column j of
        B for each of the nK groups along K; every group has G = K // nK elements (nK must
        divide K; nK = 1 for per-tensor or per-channel scaling, with the values repeated).
    Returns a float32 array (recipe.output == "fp32") or an ml_dtypes.bfloat16 array ("bf16");
    NaN carries the canonical bits 0x7FFFFFFF / 0x7FFF.
    """
    a = np.asarray(a_values)
    b = np.asarray(b_values)
    sa_arr = np.asarray(a_scales)
    sb_arr = np.asarray(b_scales)
    if a.ndim != 2 or b.ndim != 2 or sa_arr.ndim != 2 or sb_arr.ndim != 2:
        raise ShapeError("a_values, a_scales, b_values, b_scales must all be 2-D")
    M, K = a.shape
    if b.shape[0] != K:
        raise ShapeError(f"a_values is {a.shape} and b_values is {b.shape}: inner dimensions "
                         f"differ")
    N = b.shape[1]
    nK = sa_arr.shape[1]
    if sa_arr.shape != (M, nK) or sb_arr.shape != (nK, N):
        raise ShapeError(f"a_scales is {sa_arr.shape} and b_scales is {sb_arr.shape}; expected "
                         f"({M}, nK) and (nK, {N})")
    if K > 0 and (nK < 1 or K % nK):
        raise ShapeError(f"{nK} scale groups do not divide K = {K}")
    G = K // nK if nK else 0

    a = a.astype(np.float64)
    b = b.astype(np.float64)
    SA = [[_check_fp32(sa_arr[i, g], f"a_scales[{i}, {g}]") for g in range(nK)]
          for i in range(M)]
    SB = [[_check_fp32(sb_arr[g, j], f"b_scales[{g}, {j}]") for j in range(N)]
          for g in range(nK)]

    chunks = _chunks(K, recipe.promotion_interval)
    for k0, k1 in chunks:
        if k0 // G != (k1 - 1) // G:
            raise ShapeError(f"the chunk [{k0}, {k1}) straddles scale groups {k0 // G} and "
                             f"{(k1 - 1) // G} (group size {G}); the promotion interval must "
                             f"divide the group size")

    out_fp32 = recipe.output == "fp32"
    bits = np.zeros((M, N), dtype=np.uint32 if out_fp32 else np.uint16)
    for i in range(M):
        for j in range(N):
            scales = [(SA[i][k0 // G], SB[k0 // G][j]) for k0, _ in chunks]
            acc = promoted_dot(a[i].tolist(), b[:, j].tolist(), chunks, scales, dp,
                               recipe.a_format, recipe.b_format, recipe.epilogue,
                               index=(0, i, j)).result
            bits[i, j] = _fp32_bits(acc) if out_fp32 else _bf16_bits(bf16_round(acc))
    return bits.view(np.float32 if out_fp32 else ml_dtypes.bfloat16)
