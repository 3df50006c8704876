"""Exact, slow, obviously-correct reference model of a block-FMA datapath.

This module is the independent oracle against which the fast kernels are tested. It is written
from the datapath specification (see :class:`tcsim.config.Datapath` and
``docs/hardware.md#block-fma``), not from any kernel code, and it does every computation on values
with Python integers and :class:`fractions.Fraction`. Python floats appear only at the boundary:
inputs are converted to ``Fraction`` (exact) and results back to ``float`` (exact, since every
result is an fp32/fp16 value).

The model of one block (n products plus the incoming accumulator C), step by step:

0. Flushing: with ``subnormal_inputs == "flush"`` a subnormal a_k or b_k becomes a zero of the
   same sign; with ``subnormal_outputs == "flush"`` a subnormal C (w.r.t. the accumulator
   format F) becomes a zero of the same sign.
1. Special values: any NaN gives NaN; Inf * 0 gives NaN; Inf products (sign sign(a)*sign(b))
   and an Inf C: both signs present gives NaN, otherwise that Inf.
2. Terms: each product with two nonzero factors, exact value a*b, exponent exp(a)+exp(b)
   ("unnormalized") or floor(log2|a*b|) ("normalized"); with ``c_placement == "inside"`` a
   nonzero C is a term with exponent max(floor(log2|C|), F.emin).
3. E = the largest term exponent, clamped from below at ``min_exp_limit``.
4. With ``fraction_bits`` f, each term is put on the grid 2^(E-f) (truncate / floor / rne).
5. S = exact sum of the terms. With ``c_placement == "after"`` the products are summed alone,
   that sum is rounded to ``product_sum_precision`` bits (unbounded exponent range) and then C
   is added exactly.
6. S is rounded once to p = ``output_precision`` (or F's precision) significant bits on the
   grid 2^(max(e_S, F.emin) - (p-1)), with overflow, flush-to-zero and zero-sign rules.
7. A longer K is a chain of blocks, each result being the next block's C.

Public functions: :func:`block_fma`, :func:`dot`, :func:`mma`, :func:`result_bits`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Optional, Sequence

import numpy as np

from .config import Datapath
from .errors import ConfigError, FormatError, ShapeError
from .formats import FloatFormat, get_format

ACC_FORMATS = ("fp32", "fp16")


# ---------------------------------------------------------------------------------------------
# Exact helpers on Fractions and integers
# ---------------------------------------------------------------------------------------------
def _pow2(e: int) -> Fraction:
    """2^e exactly (e may be negative)."""
    return Fraction(2) ** e


def _floor_log2(q: Fraction) -> int:
    """floor(log2(q)) for a Fraction q > 0, exactly."""
    assert q > 0
    e = q.numerator.bit_length() - q.denominator.bit_length()
    # q lies in (2^(e-1), 2^(e+1)), so floor(log2 q) is e or e-1.
    if q < _pow2(e):
        e -= 1
    assert _pow2(e) <= q < _pow2(e + 1)
    return e


def _round_to_integer(x: Fraction, mode: str) -> int:
    """Round a Fraction x >= 0 to an integer: "rz" toward zero, "rne" nearest, ties to even."""
    assert x >= 0
    down = math.floor(x)
    if mode == "rz":
        return down
    if mode == "rne":
        remainder = x - down
        if remainder > Fraction(1, 2):
            return down + 1
        if remainder < Fraction(1, 2):
            return down
        return down if down % 2 == 0 else down + 1  # a tie: the even neighbour
    raise ValueError(f"unknown rounding mode {mode!r}")


def _round_significant(mag: Fraction, p: int, emin: Optional[int], mode: str,
                       sr: Optional[tuple] = None) -> Fraction:
    """Round mag > 0 to p significant bits: grid 2^(max(floor(log2 mag), emin) - (p-1)).

    emin None means an unbounded exponent range (no subnormal grid). The result may be 0 (a tiny
    value below the subnormal grid) or 2^(e+1) (a carry out of the top bit).
    mode "sr": stochastic, with sr = (R, r): the magnitude rounds up exactly when the random
    integer R is below D = floor(frac(mag / grid) * 2^r), the first r discarded bits.
    """
    assert mag > 0
    e = _floor_log2(mag)
    if emin is not None:
        e = max(e, emin)
    grid = _pow2(e - (p - 1))
    if mode == "sr":
        x = mag / grid
        down = math.floor(x)
        rand, bits = sr
        return (down + (1 if rand < math.floor((x - down) * 2 ** bits) else 0)) * grid
    return _round_to_integer(mag / grid, mode) * grid


_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    """The splitmix64 finaliser on a 64-bit integer (Steele, Lea and Flood, 2014)."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def sr_random(seed: int, bi: int, i: int, j: int, kb: int, bits: int) -> int:
    """The random integer of stochastic output rounding for output (bi, i, j) at block kb: the
    top ``bits`` bits of splitmix64 chained over (seed, bi, i, j, kb) (Datapath.sr_seed)."""
    z = _splitmix64(seed & _MASK64)
    for x in (bi, i, j, kb):
        z = _splitmix64((z + x) & _MASK64)
    return z >> (64 - bits)


def _put_on_grid(v: Fraction, grid: Fraction, mode: str, sr: Optional[tuple] = None) -> Fraction:
    """Put a (signed) term v on the grid: "truncate", "floor", "rne" (ties to even) or "sr"
    (stochastic in sign-magnitude, sr = (R, bits): |v| rounds up when R is below the first
    ``bits`` discarded bits)."""
    x = v / grid
    if mode == "sr":
        rand, bits = sr
        down = math.floor(abs(x))
        n = down + (1 if rand < math.floor((abs(x) - down) * 2 ** bits) else 0)
        return (n if x >= 0 else -n) * grid
    if mode == "truncate":  # toward zero in sign-magnitude
        n = math.floor(abs(x))
        return (n if x >= 0 else -n) * grid
    if mode == "floor":  # toward -inf (two's-complement arithmetic shift)
        return math.floor(x) * grid
    if mode == "rne":  # nearest, ties to even; symmetric in the sign
        n = _round_to_integer(abs(x), "rne")
        return (n if x >= 0 else -n) * grid
    raise ValueError(f"unknown term rounding {mode!r}")


def _max_p_bit_value(p: int, emax: int) -> Fraction:
    """Largest value with p significant bits and exponent <= emax: (2 - 2^(1-p)) * 2^emax."""
    return (2 - _pow2(1 - p)) * _pow2(emax)


# ---------------------------------------------------------------------------------------------
# Decoded values
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Num:
    """A decoded value: NaN, a signed Inf, or a finite value (zeros keep their sign)."""

    kind: str  # "nan", "inf" or "finite"
    negative: bool = False
    magnitude: Fraction = Fraction(0)  # |value| when finite, 0 otherwise

    @property
    def is_nan(self) -> bool:
        return self.kind == "nan"

    @property
    def is_inf(self) -> bool:
        return self.kind == "inf"

    @property
    def is_zero(self) -> bool:
        return self.kind == "finite" and self.magnitude == 0

    @property
    def value(self) -> Fraction:
        """The exact signed value of a finite number (a signed zero gives 0)."""
        assert self.kind == "finite"
        return -self.magnitude if self.negative else self.magnitude


_NAN = _Num("nan")


def _inf(negative: bool) -> _Num:
    return _Num("inf", negative)


def _finite(negative: bool, magnitude: Fraction) -> _Num:
    return _Num("finite", negative, magnitude)


def _decode(x) -> _Num:
    """A Python/numpy float -> _Num, exactly."""
    x = float(x)
    if math.isnan(x):
        return _NAN
    negative = math.copysign(1.0, x) < 0
    if math.isinf(x):
        return _inf(negative)
    return _finite(negative, abs(Fraction(x)))


def _to_float(num: _Num) -> float:
    """A _Num -> Python float (exact for every fp32/fp16 value)."""
    if num.is_nan:
        return float("nan")
    if num.is_inf:
        return -math.inf if num.negative else math.inf
    x = float(num.magnitude)
    assert Fraction(x) == num.magnitude, "result not exactly representable as a float"
    return -x if num.negative else x


def _is_subnormal(num: _Num, fmt: FloatFormat) -> bool:
    """0 < |x| < 2^emin."""
    return num.kind == "finite" and 0 < num.magnitude < _pow2(fmt.emin)


def _exponent(num: _Num, fmt: FloatFormat) -> int:
    """exp(x): floor(log2|x|) for a normal x, fmt.emin for a subnormal x."""
    assert num.kind == "finite" and num.magnitude > 0
    return max(_floor_log2(num.magnitude), fmt.emin)


def _representable(num: _Num, fmt: FloatFormat) -> bool:
    """Whether fmt can hold this value exactly."""
    if num.is_nan:
        return fmt.has_nan
    if num.is_inf:
        return fmt.has_inf
    if num.magnitude == 0:
        return not num.negative or fmt.has_negative_zero
    if num.magnitude > Fraction(fmt.max_finite):
        return False
    if num.negative and not fmt.signed:
        return False
    quantum = _pow2(_exponent(num, fmt) - fmt.mantissa_bits)
    return (num.magnitude / quantum).denominator == 1


def _check_representable(num: _Num, fmt: FloatFormat, what: str, raw) -> None:
    if not _representable(num, fmt):
        raise FormatError(f"{what} = {raw!r} is not exactly representable in {fmt.name}")


def _flush(num: _Num, fmt: FloatFormat) -> _Num:
    """A subnormal (w.r.t. fmt) becomes a zero of the same sign; anything else is unchanged."""
    if _is_subnormal(num, fmt):
        return _finite(num.negative, Fraction(0))
    return num


def _acc_format(acc: str) -> FloatFormat:
    fmt = get_format(acc)
    if fmt.name not in ACC_FORMATS:
        raise FormatError(f"unknown accumulator format {acc!r}; known: {', '.join(ACC_FORMATS)}")
    return fmt


def _bring_c_into_acc(c, F: FloatFormat) -> _Num:
    """Decode C: it must be an fp32 value; it is then rounded to F with IEEE RNE.

    This is ``Datapath.c_precision_rounding`` ("rne"): an fp32 C on an fp16-output path is first
    rounded to fp16 (round to nearest even, subnormals kept, overflow to Inf). For a C that F
    already holds this is the identity.
    """
    num = _decode(c)
    _check_representable(num, get_format("fp32"), "c", c)
    if num.kind != "finite" or num.magnitude == 0:
        return num
    r = _round_significant(num.magnitude, F.precision, F.emin, "rne")
    if r > _max_p_bit_value(F.precision, F.emax):
        return _inf(num.negative)
    return _finite(num.negative, r)


def _output_precision(dp: Datapath, F: FloatFormat) -> int:
    p = dp.output_precision if dp.output_precision is not None else F.precision
    if p > F.precision:
        raise ConfigError(f"output_precision: {p} exceeds the {F.name} precision ({F.precision})")
    return p


# ---------------------------------------------------------------------------------------------
# One block
# ---------------------------------------------------------------------------------------------
def _aligned_sum(terms: Sequence[tuple[Fraction, int]], dp: Datapath) -> Fraction:
    """Steps 3-5: align the (value, exponent) terms at E, put them on the grid, sum exactly."""
    if not terms:
        return Fraction(0)
    E = max(e for _, e in terms)
    if dp.min_exp_limit is not None:
        E = max(E, dp.min_exp_limit)
    if dp.fraction_bits is None:
        return sum((v for v, _ in terms), Fraction(0))
    grid = _pow2(E - dp.fraction_bits)
    return sum((_put_on_grid(v, grid, dp.term_rounding) for v, _ in terms), Fraction(0))


def _block(a: Sequence[_Num], b: Sequence[_Num], c: _Num, dp: Datapath,
           fa: FloatFormat, fb: FloatFormat, F: FloatFormat, sr: Optional[tuple] = None,
           scales: Optional[tuple] = None, where: tuple = ((0, 0, 0), 0, 0)) -> _Num:
    """One block FMA on decoded operands (C already in the accumulator format). sr: the
    (random integer, bits) of stochastic output rounding. scales: (sa, sb), one _Scale per
    product, for the block-scaled datapaths. where: ((batch, row, column), first K index,
    block index) of this block, for stochastic term rounding."""
    assert len(a) == len(b)
    p = _output_precision(dp, F)
    if scales is not None and any(x.nan for x in scales[0] + scales[1]):
        return _NAN

    # 0. Flushing.
    if dp.subnormal_inputs == "flush":
        a = [_flush(x, fa) for x in a]
        b = [_flush(x, fb) for x in b]
    if dp.subnormal_outputs == "flush":
        c = _flush(c, F)

    if dp.product_sum == "pairwise":    # IEEE nodes: Inf and NaN take the tree's own course
        return _pairwise_tree(a, b, c, dp, F)

    # 1. Special values.
    if any(x.is_nan for x in a) or any(x.is_nan for x in b) or c.is_nan:
        return _NAN
    inf_signs = set()
    for x, y in zip(a, b):
        if x.is_inf or y.is_inf:
            if x.is_zero or y.is_zero:
                return _NAN  # Inf * 0
            inf_signs.add(x.negative != y.negative)
    if c.is_inf:
        inf_signs.add(c.negative)
    if len(inf_signs) == 2:
        return _NAN  # +Inf and -Inf
    if len(inf_signs) == 1:
        return _inf(inf_signs.pop())
    if dp.product_overflow == "inf":
        # a product reaching 2^(emax + 1) is Inf before any sum (MMA-Sim amd_fused_dot_rd_add)
        top = _pow2(F.emax + 1)
        ovf_signs = {x.negative != y.negative for x, y in zip(a, b)
                     if x.magnitude * y.magnitude >= top}
        if ovf_signs:
            return _NAN if len(ovf_signs) == 2 else _inf(ovf_signs.pop())
    if dp.staged():     # group terms, lanes, the asymmetric join, a pairwise tree
        return _staged_block(a, b, c, dp, fa, fb, F, sr, scales, where)

    # 2. Terms (everything is finite from here on).
    product_terms = _product_terms(a, b, dp, fa, fb, scales)

    # 3.-5. Alignment, grid, exact sum.
    if dp.c_placement == "inside":
        terms = list(product_terms)
        if not c.is_zero:
            terms.append((c.value, max(_floor_log2(c.magnitude), F.emin)))
        S = _aligned_sum(terms, dp)
    else:  # "after"
        S_products = _aligned_sum(product_terms, dp)
        if S_products == 0:
            P = Fraction(0)
        else:
            P = _round_significant(abs(S_products), dp.product_sum_precision, None,
                                   dp.product_sum_rounding)
            P = P if S_products > 0 else -P
        S = P + c.value

    # 6. Final rounding.
    return _final_rounding(S, a, b, c, dp, F, p, sr)


def _final_rounding(S: Fraction, a, b, c: _Num, dp: Datapath, F: FloatFormat, p: int,
                    sr: Optional[tuple]) -> _Num:
    """Step 6: the exact block value S rounded once to p bits in F (overflow, flush-to-zero and
    the sign of an exact zero as the datapath says)."""
    if S == 0:
        all_negative_zeros = (
            all((x.negative != y.negative) and (x.is_zero or y.is_zero) for x, y in zip(a, b))
            and c.is_zero and c.negative
        )
        return _finite(dp.zero_sign == "ieee" and all_negative_zeros, Fraction(0))

    negative = S < 0
    r = _round_significant(abs(S), p, F.emin, dp.output_rounding, sr)
    largest = _max_p_bit_value(p, F.emax)
    if r > largest:
        if dp.overflow == "inf" or (dp.overflow == "ieee" and dp.output_rounding != "rz"):
            return _inf(negative)
        return _finite(negative, largest)  # "saturate", or "ieee" with round-toward-zero
    if dp.subnormal_outputs == "flush" and 0 < r < _pow2(F.emin):
        return _finite(negative, Fraction(0))
    return _finite(negative, r)  # r may be 0: a zero with the sign of S


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def _product_terms(a, b, dp: Datapath, fa: FloatFormat, fb: FloatFormat,
                   scales: Optional[tuple]) -> list:
    """(value, exponent) of each product, or None for a product that is no term. With
    block_scale "exponent" the scales multiply the value and add Xa + Xb to the exponent."""
    out = []
    for k, (x, y) in enumerate(zip(a, b)):
        shift, factor = 0, Fraction(1)
        if scales is not None:
            shift = scales[0][k].exponent + scales[1][k].exponent
            factor = scales[0][k].value * scales[1][k].value
        if x.is_zero or y.is_zero:
            if dp.zero_operand_exponent is not None:
                # a zero operand has exponent zero_operand_exponent (MMA-Sim's convention): the
                # product is a zero-valued term that still takes part in choosing E
                ex = dp.zero_operand_exponent if x.is_zero else _exponent(x, fa)
                ey = dp.zero_operand_exponent if y.is_zero else _exponent(y, fb)
                out.append((Fraction(0), ex + ey + shift))
            continue
        v = x.value * y.value
        if dp.product_alignment == "unnormalized":
            e = _exponent(x, fa) + _exponent(y, fb)
        else:
            e = _floor_log2(abs(v))
        out.append((v * factor, e + shift))
    return out


# ---------------------------------------------------------------------------------------------
# Block-scaled and AMD building blocks (Datapath.staged(); docs/hardware.md#blackwell-block-scaled,
# docs/hardware.md#amd-cdna)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Scale:
    """A decoded block scale: NaN, or an exact value with its exponent X (None: no term)."""

    nan: bool
    value: Fraction = Fraction(1)
    exponent: Optional[int] = 0


def _decode_scale(x, fmt: str, zero_exp: Optional[int]) -> _Scale:
    """ue8m0: 2^X; ue4m3: |e4m3 value| = sig * 2^X, X clamped at -6 (subnormal); a zero scale
    has the zero-operand exponent (None: it takes no part in E)."""
    num = _decode(x)
    if num.is_nan:
        return _Scale(True)
    if fmt == "ue8m0":
        _check_representable(num, get_format("e8m0"), "scale", x)
        return _Scale(False, num.magnitude, _floor_log2(num.magnitude))
    if fmt != "ue4m3":
        raise FormatError(f"unknown scale format {fmt!r}")
    _check_representable(num, get_format("e4m3"), "scale", x)
    if num.magnitude == 0:
        return _Scale(False, Fraction(0), zero_exp)
    return _Scale(False, num.magnitude, max(_floor_log2(num.magnitude), -6))


def _round_node(v: Fraction, negative_zero: bool, p: int, F: FloatFormat, mode: str,
                flush: bool) -> _Num:
    """A value rounded to p bits in F's exponent range (overflow to Inf under RNE, to the max
    under RZ); an exact zero gets the sign given; flush: a result below 2^emin becomes zero."""
    if v == 0:
        return _finite(negative_zero, Fraction(0))
    r = _round_significant(abs(v), p, F.emin, mode)
    if r > _max_p_bit_value(p, F.emax):
        if mode == "rz":
            return _finite(v < 0, _max_p_bit_value(p, F.emax))
        return _inf(v < 0)
    if flush and r < _pow2(F.emin):
        r = Fraction(0)
    return _finite(v < 0, r)


def _add_nodes(x: _Num, y: _Num, p: int, F: FloatFormat, mode: str, flush: bool) -> _Num:
    """IEEE addition x + y in a p-bit format with F's exponent range."""
    if x.is_nan or y.is_nan:
        return _NAN
    if x.is_inf or y.is_inf:
        if x.is_inf and y.is_inf and x.negative != y.negative:
            return _NAN
        return x if x.is_inf else y
    v = x.value + y.value
    both_negative_zero = x.is_zero and y.is_zero and x.negative and y.negative
    return _round_node(v, both_negative_zero, p, F, mode, flush)


def _pairwise_tree(a, b, c: _Num, dp: Datapath, F: FloatFormat) -> _Num:
    """acc + ((p0 + p1) + (p2 + p3)): every product and node rounded (Datapath.product_sum)."""
    n = dp.block_size
    pp = dp.product_sum_precision
    nodes = []
    for k in range(n):
        x, y = (a[k], b[k]) if k < len(a) else (_finite(False, Fraction(0)),) * 2
        # a short last block is padded with +0 products; each node is fma(a, b, +0)
        if x.is_nan or y.is_nan or ((x.is_inf or y.is_inf) and (x.is_zero or y.is_zero)):
            nodes.append(_NAN)
        elif x.is_inf or y.is_inf:
            nodes.append(_inf(x.negative != y.negative))
        else:
            nodes.append(_round_node(x.value * y.value, False, pp, F, "rne", dp.flush_nodes))
    while len(nodes) > 1:
        nodes = [_add_nodes(nodes[2 * t], nodes[2 * t + 1], pp, F, "rne", dp.flush_nodes)
                 for t in range(len(nodes) // 2)]
    return _add_nodes(c, nodes[0], _output_precision(dp, F), F, dp.output_rounding,
                      dp.flush_nodes)


# counters of stochastic term rounding (tcsim/_kernels/staged.py: TERM_K, TERM_C)
TERM_K = 1 << 32
TERM_C = 1 << 33


def _staged_block(a, b, c: _Num, dp: Datapath, fa: FloatFormat, fb: FloatFormat,
                  F: FloatFormat, sr: Optional[tuple], scales: Optional[tuple],
                  where: tuple = ((0, 0, 0), 0, 0)) -> _Num:
    """One block through the staged building blocks: group terms, lanes, the asymmetric join,
    the pairwise tree (see tcsim.config.Datapath for each). Called by _block after flushing and
    the special values: every value here is finite."""
    p = _output_precision(dp, F)
    if dp.product_sum == "pairwise":
        return _pairwise_tree(a, b, c, dp, F)

    # terms: (value, exponent, lane); exponent None = no term
    if dp.block_scale == "group":
        terms = []
        G = dp.group_size
        for g0 in range(0, len(a), G):
            s = sum((x.value * y.value for x, y in zip(a[g0:g0 + G], b[g0:g0 + G])), Fraction(0))
            sa, sb = scales[0][g0], scales[1][g0]
            v = s * sa.value * sb.value
            e = None
            if sa.exponent is not None and sb.exponent is not None:
                e = sa.exponent + sb.exponent
            if v == 0 and dp.zero_operand_exponent is None:
                e = None          # a zero group takes no part in E
            terms.append((v, e, 0, None))
    else:
        terms = []
        for k in range(len(a)):
            pt = _product_terms(a[k:k + 1], b[k:k + 1], dp, fa, fb,
                                None if scales is None else
                                (scales[0][k:k + 1], scales[1][k:k + 1]))
            v, e = pt[0] if pt else (Fraction(0), None)
            terms.append((v, e, k % dp.lanes, TERM_K + where[1] + k))
    e_c = None if c.is_zero else max(_floor_log2(c.magnitude), F.emin)
    f = dp.fraction_bits
    lane_sums = []          # (S, E) per lane with at least one term
    (bi, i, j), _, kb = where

    def term_sr(counter):
        if dp.term_rounding != "sr":
            return None
        return (sr_random(dp.sr_seed, bi, i, j, counter, dp.sr_bits), dp.sr_bits)

    for lane in range(dp.lanes):
        mine = [(v, e, n) for v, e, ln, n in terms if ln == lane and e is not None]
        if dp.c_placement == "inside" and lane == 0 and e_c is not None:
            mine.append((c.value, e_c, TERM_C + kb))
        if not mine:
            continue
        E = max(e for _, e, _ in mine)
        if dp.min_exp_limit is not None:
            E = max(E, dp.min_exp_limit)
        grid = _pow2(E - f)
        lane_sums.append((sum((_put_on_grid(v, grid, dp.term_rounding, term_sr(n))
                               for v, _, n in mine), Fraction(0)), E))
    if lane_sums:
        Ep = max(E for _, E in lane_sums)
        # the smaller lane is rounded down onto the larger lane's grid 2^(Ep - f)
        S = sum((_put_on_grid(x, _pow2(Ep - f), "floor") for x, _ in lane_sums), Fraction(0))
    else:
        Ep, S = None, Fraction(0)

    if dp.c_placement == "inside":
        total = S
    elif dp.c_placement == "after":
        P = Fraction(0)
        if S != 0:
            P = _round_significant(abs(S), dp.product_sum_precision, None,
                                   dp.product_sum_rounding)
            P = P if S > 0 else -P
        total = P + c.value
    else:   # asymmetric
        if c.is_zero:       # a zero C has the zero-operand exponent in E' (None: no part)
            e_c = dp.zero_operand_exponent
        candidates = [e for e in (Ep, e_c) if e is not None]
        if not candidates:
            total = Fraction(0)
        else:
            E2 = max(candidates)
            total = _put_on_grid(S, _pow2(E2 - dp.join_sum_bits), "floor")
            if e_c is not None and (dp.join_c_window is None or e_c >= E2 - dp.join_c_window):
                total += _put_on_grid(c.value, _pow2(E2 - dp.join_c_bits), "floor")

    return _final_rounding(total, a, b, c, dp, F, p, sr)


def _decode_inputs(vals: Iterable, fmt: FloatFormat, name: str) -> list[_Num]:
    out = []
    for k, x in enumerate(vals):
        num = _decode(x)
        _check_representable(num, fmt, f"{name}[{k}]", x)
        out.append(num)
    return out


def block_fma(a_vals, b_vals, c, dp: Datapath, a_format: str, b_format: str,
              acc: str = "fp32") -> float:
    """One block FMA: sum_k a_vals[k]*b_vals[k] + c through the datapath ``dp``.

    a_vals, b_vals: sequences of equal length (at most ``dp.block_size``; fewer is allowed)
        holding values exactly representable in ``a_format`` / ``b_format``.
    c: the incoming accumulator, an fp32 value (rounded to ``acc`` with RNE when acc is fp16).
    Returns the acc-format result as a Python float (NaN as float('nan'), signed zeros kept).
    """
    fa, fb, F = get_format(a_format), get_format(b_format), _acc_format(acc)
    a = _decode_inputs(a_vals, fa, "a")
    b = _decode_inputs(b_vals, fb, "b")
    if len(a) != len(b):
        raise ShapeError(f"a has {len(a)} values and b has {len(b)}")
    if dp.block_size is not None and len(a) > dp.block_size:
        raise ShapeError(f"{len(a)} products do not fit one block of {dp.block_size}")
    sr = (sr_random(dp.sr_seed, 0, 0, 0, 0, dp.sr_bits), dp.sr_bits) \
        if dp.output_rounding == "sr" else None
    return _to_float(_block(a, b, _bring_c_into_acc(c, F), dp, fa, fb, F, sr))


def _lowered_dot(a: list[_Num], b: list[_Num], c: _Num, dp: Datapath, fa: FloatFormat,
                 fb: FloatFormat, F: FloatFormat, index) -> _Num:
    """A lowered instruction chain (Datapath.lowered_k): per lowered_k products (zero-padded),
    the inner blocks from +0 on the products in k_order, then C added with one IEEE RNE
    rounding into F; that sum is the next instruction's C."""
    n = dp.lowered_k
    order = list(dp.k_order) or list(range(n))
    inner = dp.replace(lowered_k=None, k_order=())
    zero = _finite(False, Fraction(0))
    pad = -len(a) % n
    a, b = list(a) + [zero] * pad, list(b) + [zero] * pad
    for start in range(0, len(a), n):
        s = _dot_decoded([a[start + j] for j in order], [b[start + j] for j in order], zero,
                         inner, fa, fb, F, index)
        c = _add_nodes(s, c, F.precision, F, "rne", False)
    return c


def _dot_decoded(a: list[_Num], b: list[_Num], c: _Num, dp: Datapath,
                 fa: FloatFormat, fb: FloatFormat, F: FloatFormat, index=(0, 0, 0),
                 scales: Optional[tuple] = None) -> _Num:
    if dp.lowered_k is not None:
        return _unsigned_zero(_lowered_dot(a, b, c, dp, fa, fb, F, index), dp)
    K = len(a)
    n = dp.block_size if dp.block_size is not None else max(K, 1)
    if dp.flush_nodes:    # inputs and C below their smallest normal become +0 (CDNA2)
        a = [_finite(False, Fraction(0)) if _is_subnormal(x, fa) else x for x in a]
        b = [_finite(False, Fraction(0)) if _is_subnormal(x, fb) else x for x in b]
        c = _finite(False, Fraction(0)) if _is_subnormal(c, F) else c
    for start in range(0, K, n):
        sr = None
        if dp.output_rounding == "sr":
            sr = (sr_random(dp.sr_seed, *index, start // n, dp.sr_bits), dp.sr_bits)
        sc = None
        if scales is not None:
            sc = (scales[0][start:start + n], scales[1][start:start + n])
        c = _block(a[start:start + n], b[start:start + n], c, dp, fa, fb, F, sr, sc,
                   (tuple(index), start, start // n))
    return _unsigned_zero(c, dp)  # K == 0: C unchanged (but for the sign of a zero)


def _unsigned_zero(x: _Num, dp: Datapath) -> _Num:
    """zero_sign "unsigned": every zero result is +0, an underflow to zero included."""
    if dp.zero_sign == "unsigned" and x.is_zero:
        return _finite(False, Fraction(0))
    return x


def dot(a_vals, b_vals, c, dp: Datapath, a_format: str, b_format: str,
        acc: str = "fp32", index=(0, 0, 0), a_scales=None, b_scales=None,
        scale_format: str = "ue8m0") -> float:
    """sum_k a_vals[k]*b_vals[k] + c as a chain of blocks of ``dp.block_size`` products.

    Blocks are consecutive (k = 0..n-1, n..2n-1, ...; the last may be shorter); each block's
    result is the next block's C. ``dp.block_size is None``: the whole K is one block. K == 0:
    the result is C (brought into the accumulator format). Returns a Python float.
    index: (batch, row, column) of this output, which seeds stochastic output rounding.
    a_scales, b_scales: block-scaled datapaths: one scale value per K element (a block's scale
    repeated over its elements) in ``scale_format`` ("ue8m0" or "ue4m3").
    """
    fa, fb, F = get_format(a_format), get_format(b_format), _acc_format(acc)
    a = _decode_inputs(a_vals, fa, "a")
    b = _decode_inputs(b_vals, fb, "b")
    if len(a) != len(b):
        raise ShapeError(f"a has {len(a)} values and b has {len(b)}")
    scales = None
    if dp.block_scale != "none":
        if a_scales is None or b_scales is None or len(a_scales) != len(a) \
                or len(b_scales) != len(a):
            raise ShapeError("a block-scaled datapath needs one scale per K element of a and b")
        z = dp.zero_operand_exponent
        scales = ([_decode_scale(x, scale_format, z) for x in a_scales],
                  [_decode_scale(x, scale_format, z) for x in b_scales])
    return _to_float(_dot_decoded(a, b, _bring_c_into_acc(c, F), dp, fa, fb, F, index, scales))


def result_bits(value, acc: str = "fp32") -> int:
    """The fp32 / fp16 bit pattern of a result value (NaN: 0x7FFFFFFF / 0x7FFF).

    Encoded by hand from the exact value (sign, biased exponent, fraction field); a value the
    format cannot hold exactly is an error.
    """
    F = _acc_format(acc)
    m = F.mantissa_bits
    sign_shift = F.exponent_bits + m
    num = _decode(value)
    if num.is_nan:
        return (1 << sign_shift) - 1  # canonical NaN: all exponent and fraction bits set
    sign = 1 if num.negative else 0
    if num.is_inf:
        exp_field, frac_field = (1 << F.exponent_bits) - 1, 0
    elif num.magnitude == 0:
        exp_field, frac_field = 0, 0
    else:
        e = _floor_log2(num.magnitude)
        if e < F.emin:  # subnormal: exponent field 0, no hidden bit
            exp_field = 0
            frac = num.magnitude / _pow2(F.emin - m)
        else:
            exp_field = e + F.bias
            frac = num.magnitude / _pow2(e - m) - (1 << m)
        if frac.denominator != 1 or e > F.emax:
            raise FormatError(f"{value!r} is not exactly representable in {F.name}")
        frac_field = int(frac)
    return (sign << sign_shift) | (exp_field << m) | frac_field


def mma(a, b, c, dp: Datapath, a_format: str, b_format: str, acc: str = "fp32",
        a_scale=None, b_scale=None, scale_format: str = "ue8m0") -> np.ndarray:
    """D = A @ B + C elementwise through :func:`dot`.

    a: (M, K), b: (K, N), c: (M, N) arrays of values (floats or ml_dtypes). Returns a float32
    array (float16 when acc == "fp16"); NaNs carry the canonical bit pattern.
    a_scale (M, K/s), b_scale (K/s, N): block scales (block-scaled datapaths), s K elements each.
    """
    F = _acc_format(acc)
    fa, fb = get_format(a_format), get_format(b_format)
    a = np.asarray(a)
    b = np.asarray(b)
    c = np.asarray(c)
    if a.ndim != 2 or b.ndim != 2 or c.ndim != 2:
        raise ShapeError(f"a, b, c must be 2-D (got {a.ndim}, {b.ndim}, {c.ndim} dimensions)")
    M, K = a.shape
    if b.shape[0] != K:
        raise ShapeError(f"a is {a.shape} and b is {b.shape}: inner dimensions differ")
    N = b.shape[1]
    if c.shape != (M, N):
        raise ShapeError(f"c is {c.shape}, expected {(M, N)}")
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    c = c.astype(np.float64)
    A = [_decode_inputs(a[i, :], fa, f"a[{i}]") for i in range(M)]
    B = [_decode_inputs(b[:, j], fb, f"b[:, {j}]") for j in range(N)]
    SA = SB = None
    if dp.block_scale != "none":
        a_scale = np.asarray(a_scale, dtype=np.float64)
        b_scale = np.asarray(b_scale, dtype=np.float64)
        s = K // a_scale.shape[1]
        z = dp.zero_operand_exponent
        SA = [[_decode_scale(a_scale[i, k // s], scale_format, z) for k in range(K)]
              for i in range(M)]
        SB = [[_decode_scale(b_scale[k // s, j], scale_format, z) for k in range(K)]
              for j in range(N)]
    bits_dtype, out_dtype = (np.uint32, np.float32) if F.name == "fp32" else (np.uint16, np.float16)
    bits = np.zeros((M, N), dtype=bits_dtype)
    for i in range(M):
        for j in range(N):
            flat = None if SA is None else (SA[i], SB[j])
            d = _dot_decoded(A[i], B[j], _bring_c_into_acc(c[i, j], F), dp, fa, fb, F,
                             (0, i, j), flat)
            bits[i, j] = result_bits(_to_float(d), F.name)
    return bits.view(out_dtype)
