"""Exact, slow, obviously-correct reference model of a block-FMA datapath, as named stages.

This module is the independent oracle against which the fast kernels are tested, and the single
exact statement of what a block does. It is written from the datapath specification (see
:class:`tcsim.datapath.Datapath` and ``docs/hardware.md#block-fma``), not from any kernel code, and
it computes on Python integers and :class:`fractions.Fraction`. Python floats appear only at the
boundary: inputs are converted to ``Fraction`` (exact) and results back to ``float`` (exact,
since every result is an fp32/fp16 value).

One block (n products plus the incoming accumulator C) runs through these stages, each a small
function below with its algebra in its docstring, each emitting a :class:`Record` when traced:

====================  =========================================================================
``scales``            a NaN block scale makes the block NaN
``flush``             subnormal inputs / C become zeros of their sign (``subnormal_*``)
``specials``          NaN, Inf, Inf * 0, Inf - Inf, products beyond the range (``product_overflow``)
``terms``             products (or group sums times their scales) and C, each with its exponent
``align``             per lane: E = max exponent (clamped), every term rounded onto 2^(E - f)
``lanes``             two lanes: the lane below rounded down onto the upper lane's grid
``join``              C "after" the product sum, or the asymmetric join at E' = max(E, e_C)
``round``             the block's value rounded once to the output (:func:`round_pack`)
``tree``              pairwise datapaths: every product and tree node rounded (:func:`round_pack`)
``lowered_c``         lowered instructions: C added last with one RNE rounding
``zero_sign``         ``zero_sign = "unsigned"``: a zero result is +0
====================  =========================================================================

A longer K is a chain of blocks, each result being the next block's C (:func:`dot`). Every
rounding anywhere goes through one routine, :func:`round_pack` (SoftFloat's round-and-pack: exact
value -> a p-bit format with an exponent range, a rounding mode, an overflow rule and flushing),
built on :func:`round_to_grid` (an exact value onto a fixed grid).

Public functions: :func:`block_fma`, :func:`dot`, :func:`trace_dot`, :func:`mma`,
:func:`result_bits`, and the exact building blocks :func:`floor_log2`, :func:`pow2`,
:func:`round_to_grid`, :func:`round_pack`, :func:`decode`, :class:`Num`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterable, Optional, Sequence

import numpy as np

from .datapath import Datapath
from .errors import ConfigError, FormatError, ShapeError
from .formats.catalog import FloatFormat, get_format
from .kernel_constants import TERM_C, TERM_K  # counters of stochastic term rounding
from .rounding import Rounding

ACC_FORMATS = ("fp32", "fp16")


# ---------------------------------------------------------------------------------------------
# Exact helpers on Fractions and integers
# ---------------------------------------------------------------------------------------------
def pow2(e: int) -> Fraction:
    """2^e exactly (e may be negative)."""
    return Fraction(2) ** e


def floor_log2(q: Fraction) -> int:
    """floor(log2(q)) for a Fraction (or float) q > 0, exactly."""
    q = Fraction(q)
    assert q > 0
    e = q.numerator.bit_length() - q.denominator.bit_length()
    # q lies in (2^(e-1), 2^(e+1)), so floor(log2 q) is e or e-1.
    if q < pow2(e):
        e -= 1
    return e


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


# ---------------------------------------------------------------------------------------------
# Decoded values
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Num:
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

    def __float__(self) -> float:
        """The value as a Python float (exact for every fp32/fp16 value; NaN, +-Inf, -0.0)."""
        if self.is_nan:
            return float("nan")
        if self.is_inf:
            return -math.inf if self.negative else math.inf
        x = float(self.magnitude)
        assert Fraction(x) == self.magnitude, "result not exactly representable as a float"
        return -x if self.negative else x


NAN = Num("nan")
_ZERO = Num("finite", False, Fraction(0))


def _inf(negative: bool) -> Num:
    return Num("inf", negative)


def _finite(negative: bool, magnitude: Fraction) -> Num:
    return Num("finite", negative, magnitude)


def decode(x) -> Num:
    """A Python/numpy float -> Num, exactly."""
    x = float(x)
    if math.isnan(x):
        return NAN
    negative = math.copysign(1.0, x) < 0
    if math.isinf(x):
        return _inf(negative)
    return _finite(negative, abs(Fraction(x)))


def _is_subnormal(num: Num, fmt: FloatFormat) -> bool:
    """0 < |x| < 2^emin."""
    return num.kind == "finite" and 0 < num.magnitude < pow2(fmt.emin)


def _exponent(num: Num, fmt: FloatFormat) -> int:
    """exp(x): floor(log2|x|) for a normal x, fmt.emin for a subnormal x."""
    return max(floor_log2(num.magnitude), fmt.emin)


def _representable(num: Num, fmt: FloatFormat) -> bool:
    """Whether fmt can hold this value exactly."""
    if num.is_nan:
        return fmt.has_nan
    if num.is_inf:
        return fmt.has_inf
    if num.magnitude == 0:
        return not num.negative or fmt.has_negative_zero
    if num.magnitude > Fraction(fmt.max_finite) or (num.negative and not fmt.signed):
        return False
    return (num.magnitude / pow2(_exponent(num, fmt) - fmt.mantissa_bits)).denominator == 1


def _check_representable(num: Num, fmt: FloatFormat, what: str, raw) -> None:
    if not _representable(num, fmt):
        raise FormatError(f"{what} = {raw!r} is not exactly representable in {fmt.name}")


def _acc_format(acc: str) -> FloatFormat:
    fmt = get_format(acc)
    if fmt.name not in ACC_FORMATS:
        raise FormatError(f"unknown accumulator format {acc!r}; known: {', '.join(ACC_FORMATS)}")
    return fmt


def _output_precision(dp: Datapath, F: FloatFormat) -> int:
    p = dp.output_precision if dp.output_precision is not None else F.precision
    if p > F.precision:
        raise ConfigError(f"output_precision: {p} exceeds the {F.name} precision ({F.precision})")
    return p


# ---------------------------------------------------------------------------------------------
# The one rounding routine
# ---------------------------------------------------------------------------------------------
def _rounding(mode) -> Rounding:
    """The :class:`~tcsim.rounding.Rounding` of a mode name ("rz", "truncate", "floor", "sr",
    ... : every spelling of tcsim.rounding.NAMES) or of a Rounding member; ValueError if
    unknown."""
    if isinstance(mode, Rounding):
        return mode
    try:
        return Rounding.from_name(mode)
    except (KeyError, TypeError):
        raise ValueError(f"unknown rounding mode {mode!r}") from None


def round_to_grid(v: Fraction, quantum: Fraction, mode,
                  sr: Optional[tuple] = None) -> Fraction:
    """A signed exact value v rounded to a multiple of ``quantum`` (x = v / quantum), in every
    mode of :class:`tcsim.rounding.Rounding` (``mode``: a member or any of its names):

    "rz" / "truncate": n = sign(x) floor(|x|) (toward zero, sign-magnitude);
    "rd" / "floor": n = floor(x) (toward -inf: a two's-complement arithmetic shift);
    "ru": n = ceil(x) (toward +inf);
    "rne": the nearest integer, ties to the even one (symmetric in the sign);
    "rna": the nearest integer, ties away from zero (symmetric in the sign);
    "rto": round to odd: n = sign(x) m with m = floor(|x|), plus 1 when x is not an integer
    and m is even (the truncation with its last bit forced to 1 when inexact);
    "sr" / "stochastic": stochastic in sign-magnitude, sr = (R, r): |x| rounds up exactly
    when the random integer R is below D = floor(frac(|x|) 2^r), the first r discarded bits.
    Returns n * quantum.
    """
    rnd = _rounding(mode)
    x = v / quantum
    if rnd == Rounding.RD:
        return math.floor(x) * quantum
    if rnd == Rounding.RU:
        return math.ceil(x) * quantum
    mag = abs(x)
    n = math.floor(mag)
    rest = mag - n
    if rnd == Rounding.RNE:
        if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and n % 2 == 1):
            n += 1
    elif rnd == Rounding.RNA:
        if rest >= Fraction(1, 2):
            n += 1
    elif rnd == Rounding.RTO:
        if rest != 0 and n % 2 == 0:
            n += 1
    elif rnd == Rounding.SR:
        rand, bits = sr
        n += 1 if rand < math.floor(rest * 2 ** bits) else 0
    return (n if x >= 0 else -n) * quantum


def _toward_zero(rnd: Rounding, negative: bool) -> bool:
    """True when ``rnd`` never rounds a value of this sign away from zero past the largest
    finite one (RZ, RTO, RD of a positive value, RU of a negative one): the IEEE overflow
    result is then the largest finite value, not Inf (tcsim.overflow)."""
    return rnd in (Rounding.RZ, Rounding.RTO) or \
        rnd == (Rounding.RU if negative else Rounding.RD)


def max_p_bit_value(p: int, emax: int) -> Fraction:
    """Largest value with p significant bits and exponent <= emax: (2 - 2^(1-p)) * 2^emax."""
    return (2 - pow2(1 - p)) * pow2(emax)


def round_pack(v: Fraction, p: int, emin: Optional[int], emax: Optional[int], mode,
               overflow: str = "ieee", flush: bool = False, sr: Optional[tuple] = None,
               zero_negative: bool = False) -> Num:
    """Round-and-pack: the exact value v as a value of a format with p significant bits and
    normal exponents emin..emax (None: unbounded).

    The grid is 2^(max(floor(log2|v|), emin) - (p-1)) (the subnormal grid below 2^emin), v is
    rounded onto it with :func:`round_to_grid` (any mode of tcsim.rounding). A magnitude
    beyond (2 - 2^(1-p)) 2^emax overflows: "inf" gives Inf, "saturate" the largest value,
    "ieee" Inf except where the mode rounds that value toward zero (RZ, RTO, RD of a positive
    value, RU of a negative one: the largest value). flush: a nonzero result below 2^emin
    becomes zero. A result that rounds to zero keeps v's sign; v == 0 gives a zero of sign
    ``zero_negative``.
    """
    if v == 0:
        return _finite(zero_negative, Fraction(0))
    e = floor_log2(abs(v))
    if emin is not None:
        e = max(e, emin)
    r = abs(round_to_grid(v, pow2(e - (p - 1)), mode, sr))
    if emax is not None and r > max_p_bit_value(p, emax):
        if overflow == "inf" or (overflow == "ieee" and not _toward_zero(_rounding(mode), v < 0)):
            return _inf(v < 0)
        return _finite(v < 0, max_p_bit_value(p, emax))
    if flush and r < pow2(emin):
        r = Fraction(0)
    return _finite(v < 0, r)


def _round_in(v: Fraction, F: FloatFormat, p: int, mode: str, **kw) -> Num:
    """round_pack into p bits with the exponent range of the format F."""
    return round_pack(v, p, F.emin, F.emax, mode, **kw)


def _bring_c_into_acc(c, F: FloatFormat) -> Num:
    """Decode C: it must be an fp32 value; it is then rounded to F with IEEE RNE.

    This is ``Datapath.c_precision_rounding`` ("rne"): an fp32 C on an fp16-output path is first
    rounded to fp16 (round to nearest even, subnormals kept, overflow to Inf). For a C that F
    already holds this is the identity.
    """
    num = decode(c)
    _check_representable(num, get_format("fp32"), "c", c)
    if num.kind != "finite" or num.magnitude == 0:
        return num
    return _round_in(num.value, F, F.precision, "rne")


def _add_nodes(x: Num, y: Num, p: int, F: FloatFormat, mode: str, flush: bool) -> Num:
    """IEEE addition x + y in a p-bit format with F's exponent range (one round_pack)."""
    if x.is_nan or y.is_nan:
        return NAN
    if x.is_inf or y.is_inf:
        if x.is_inf and y.is_inf and x.negative != y.negative:
            return NAN
        return x if x.is_inf else y
    both_negative_zero = x.is_zero and y.is_zero and x.negative and y.negative
    return _round_in(x.value + y.value, F, p, mode, flush=flush,
                     zero_negative=both_negative_zero)


# ---------------------------------------------------------------------------------------------
# The trace
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """One stage's step: its name, what went in, what came out (exact Fractions / Num) and what
    it decided (E, a grid, a dropped C, a NaN, ...)."""

    stage: str
    inputs: dict
    outputs: dict
    decided: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Term:
    """A term of a block: a product (label "k=5"), a group sum times its scales ("g=0..15"), or
    C ("C"); exponent None: the term takes no part in E."""

    label: str
    value: Fraction
    exponent: Optional[int]
    lane: int = 0
    counter: Optional[int] = None     # stochastic term rounding: its random-number counter
    aligned: Optional[Fraction] = None  # the value on its lane's grid (set by the align stage)


@dataclass
class BlockTrace:
    """The records of one block: its K indices, the incoming C and its result (``records``
    in stage order; ``after``: steps on the result after the block, e.g. the lowered C add)."""

    ks: list
    c_in: Num
    records: list = field(default_factory=list)
    result: Optional[Num] = None
    after: list = field(default_factory=list)

    def record(self, stage: str) -> Optional[Record]:
        """The first record of a stage, or None."""
        return next((r for r in self.records if r.stage == stage), None)


@dataclass
class DotTrace:
    """A dot product's trace: its blocks in order, the result and the exact a.b + C."""

    blocks: list
    result: Num
    exact: Fraction
    records: list = field(default_factory=list)   # before the blocks: decode C, flush inputs


def _emit(tr: Optional[BlockTrace], stage: str, inputs: dict, outputs: dict, **decided) -> None:
    if tr is not None:
        tr.records.append(Record(stage, inputs, outputs, decided))


# ---------------------------------------------------------------------------------------------
# Block scales
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Scale:
    """A decoded block scale: NaN, or an exact value with its exponent X (None: no term)."""

    nan: bool
    value: Fraction = Fraction(1)
    exponent: Optional[int] = 0


def _decode_scale(x, fmt: str, zero_exp: Optional[int]) -> _Scale:
    """ue8m0: 2^X; ue4m3: |e4m3 value| = sig * 2^X, X clamped below at e4m3's emin (-6: a
    subnormal scale shares the smallest normal exponent); a zero scale has the zero-operand
    exponent (None: it takes no part in E)."""
    num = decode(x)
    if num.is_nan:
        return _Scale(True)
    if fmt == "ue8m0":
        _check_representable(num, get_format("e8m0"), "scale", x)
        return _Scale(False, num.magnitude, floor_log2(num.magnitude))
    if fmt != "ue4m3":
        raise FormatError(f"unknown scale format {fmt!r}")
    e4m3 = get_format("e4m3")
    _check_representable(num, e4m3, "scale", x)
    if num.magnitude == 0:
        return _Scale(False, Fraction(0), zero_exp)
    return _Scale(False, num.magnitude, max(floor_log2(num.magnitude), e4m3.emin))


# ---------------------------------------------------------------------------------------------
# The stages of one block
# ---------------------------------------------------------------------------------------------
def stage_flush(a, b, c: Num, dp: Datapath, fa, fb, F, tr=None):
    """``subnormal_inputs = "flush"``: a subnormal a_k, b_k (0 < |x| < 2^emin of its format)
    becomes a zero of its sign; ``subnormal_outputs = "flush"``: so does a subnormal C (w.r.t.
    the accumulator format F)."""
    flushed = []

    def fl(x: Num, fmt, label):
        if _is_subnormal(x, fmt):
            flushed.append(label)
            return _finite(x.negative, Fraction(0))
        return x

    a0, b0, c0 = a, b, c
    if dp.subnormal_inputs == "flush":
        a = [fl(x, fa, f"a{k}") for k, x in enumerate(a)]
        b = [fl(x, fb, f"b{k}") for k, x in enumerate(b)]
    if dp.subnormal_outputs == "flush":
        c = fl(c, F, "C")
    if flushed:
        _emit(tr, "flush", {"a": a0, "b": b0, "c": c0}, {"a": a, "b": b, "c": c},
              flushed=flushed)
    return a, b, c


def stage_specials(a, b, c: Num, dp: Datapath, F, tr=None) -> Optional[Num]:
    """NaN and Inf (docs/hardware.md#special-values): any NaN gives NaN; Inf * 0 gives NaN; Inf
    products (sign sign(a) xor sign(b)) and an Inf C: both signs present give NaN, otherwise that
    Inf. ``product_overflow = "inf"``: a finite product with |a b| >= 2^(emax + 1) of F makes the
    block Inf of its sign (NaN with both signs). None: every value is finite, go on."""
    why, out = _special_value(a, b, c, dp, F)
    if out is not None:
        _emit(tr, "specials", {"a": a, "b": b, "c": c}, {"result": out}, why=why)
    return out


def _special_value(a, b, c: Num, dp: Datapath, F) -> tuple:
    """(why, the block's NaN or Inf), or (None, None)."""
    if any(x.is_nan for x in a) or any(x.is_nan for x in b) or c.is_nan:
        return "a NaN input", NAN
    signs = {c.negative} if c.is_inf else set()
    for x, y in zip(a, b):
        if x.is_inf or y.is_inf:
            if x.is_zero or y.is_zero:
                return "Inf * 0", NAN
            signs.add(x.negative != y.negative)
    if not signs and dp.product_overflow == "inf":
        top = pow2(F.emax + 1)
        signs = {x.negative != y.negative for x, y in zip(a, b)
                 if x.magnitude * y.magnitude >= top}
        if signs:
            return (f"a product reaches 2^{F.emax + 1}",
                    NAN if len(signs) == 2 else _inf(signs.pop()))
    if len(signs) == 2:
        return "+Inf and -Inf", NAN
    return ("an Inf input", _inf(signs.pop())) if signs else (None, None)


def stage_terms(a, b, c: Num, dp: Datapath, fa, fb, F, scales, ks, k0: int, kb: int,
                tr=None) -> list:
    """The block's terms, each an exact value with its alignment exponent (None: no part in E):

    products: v = a_k b_k, exponent exp(a) + exp(b) ("unnormalized", exp = floor(log2|x|), or
    emin for a subnormal) or floor(log2|v|) ("normalized"); a zero product is no term, or with
    ``zero_operand_exponent`` z a zero-valued term whose zero operand has exponent z. Block
    scale "exponent": v * sa sb at exponent + Xa + Xb. Block scale "group": per ``group_size``
    products the exact sum times sa sb, at exponent Xa + Xb (a zero group without z: no term).
    Lane of product k: k mod ``lanes``. C with ``c_placement = "inside"``: one more term at
    max(floor(log2|C|), F.emin) in lane 0 (a zero C: none).
    """
    terms = []
    if dp.block_scale == "group":
        G = dp.group_size
        for g0 in range(0, len(a), G):
            s = sum((x.value * y.value for x, y in zip(a[g0:g0 + G], b[g0:g0 + G])), Fraction(0))
            sa, sb = scales[0][g0], scales[1][g0]
            v = s * sa.value * sb.value
            e = None
            if sa.exponent is not None and sb.exponent is not None:
                e = sa.exponent + sb.exponent
            if v == 0 and dp.zero_operand_exponent is None:
                e = None
            terms.append(Term(f"g={ks[g0]}..{ks[min(g0 + G, len(a)) - 1]}", v, e))
    else:
        for k, (x, y) in enumerate(zip(a, b)):
            shift, factor = 0, Fraction(1)
            if scales is not None:
                shift = scales[0][k].exponent + scales[1][k].exponent
                factor = scales[0][k].value * scales[1][k].value
            v, e = x.value * y.value * factor, None
            if x.is_zero or y.is_zero:
                if dp.zero_operand_exponent is not None:
                    z = dp.zero_operand_exponent
                    e = (z if x.is_zero else _exponent(x, fa)) + \
                        (z if y.is_zero else _exponent(y, fb)) + shift
            elif dp.product_alignment == "unnormalized":
                e = _exponent(x, fa) + _exponent(y, fb) + shift
            else:
                e = floor_log2(abs(x.value * y.value)) + shift
            terms.append(Term(f"k={ks[k]}", v, e, k % dp.lanes, TERM_K + k0 + k))
    if dp.c_placement == "inside" and not c.is_zero:
        terms.append(Term("C", c.value, _exponent(c, F), 0, TERM_C + kb))
    if tr is not None:      # exact: the block's exact value, sum of the products and C
        exact = sum((t.value for t in terms if t.label != "C"), c.value)
        _emit(tr, "terms", {"a": a, "b": b, "c": c, "scales": scales},
              {"terms": terms, "exact": exact})
    return terms


def stage_align(terms: list, dp: Datapath, term_sr, tr=None) -> list:
    """Per lane: E = the largest term exponent, clamped from below at ``min_exp_limit``; with
    ``fraction_bits`` f each term is rounded onto the grid 2^(E - f) (``term_rounding``, see
    :func:`round_to_grid`; f None: kept exact) and the lane sum S is exact. Returns (E, S) for
    every lane holding a term."""
    f = dp.fraction_bits
    lanes = []
    for lane in range(dp.lanes):
        mine = [t for t in terms if t.lane == lane and t.exponent is not None]
        if not mine:
            continue
        E = max(t.exponent for t in mine)
        if dp.min_exp_limit is not None:
            E = max(E, dp.min_exp_limit)
        quantum = None if f is None else pow2(E - f)
        aligned = [t.value if f is None else
                   round_to_grid(t.value, quantum, dp.term_rounding, term_sr(t.counter))
                   for t in mine]
        S = sum(aligned, Fraction(0))
        lanes.append((E, S))
        _emit(tr, "align", {"terms": mine},
              {"terms": [Term(t.label, t.value, t.exponent, t.lane, t.counter, x)
                         for t, x in zip(mine, aligned)], "sum": S},
              lane=lane, E=E, quantum=quantum, rounding=dp.term_rounding)
    return lanes


def stage_lanes(lanes: list, dp: Datapath, tr=None) -> tuple:
    """Two lanes (CDNA3): with Ep = the larger lane exponent, each lane sum is rounded down
    (toward -inf) onto 2^(Ep - f) and the two are added exactly. Returns (Ep, S); (None, 0)
    without terms."""
    if not lanes:
        return None, Fraction(0)
    if len(lanes) == 1:
        return lanes[0]
    Ep = max(E for E, _ in lanes)
    quantum = pow2(Ep - dp.fraction_bits)
    S = sum((round_to_grid(x, quantum, "floor") for _, x in lanes), Fraction(0))
    _emit(tr, "lanes", {"lanes": lanes}, {"sum": S}, E=Ep, quantum=quantum)
    return Ep, S


def stage_join(S: Fraction, Ep: Optional[int], c: Num, dp: Datapath, F, tr=None) -> Fraction:
    """C and the product sum S. "inside": C is already a term, total = S. "after": P = S rounded
    to ``product_sum_precision`` bits (``product_sum_rounding``, unbounded exponents), total =
    P + C exactly. "asymmetric": E' = max(Ep, e_C) (a zero C at ``zero_operand_exponent``, or no
    part), total = floor(S / 2^(E' - join_sum_bits)) 2^(E' - join_sum_bits) + floor(C / 2^(E' -
    join_c_bits)) 2^(E' - join_c_bits), C dropped (0) when e_C < E' - ``join_c_window``."""
    if dp.c_placement == "inside":
        return S
    if dp.c_placement == "after":
        P = round_pack(S, dp.product_sum_precision, None, None, dp.product_sum_rounding).value
        total = P + c.value
        _emit(tr, "join", {"sum": S, "c": c}, {"products": P, "sum": total},
              placement="after", precision=dp.product_sum_precision,
              rounding=dp.product_sum_rounding)
        return total
    e_c = dp.zero_operand_exponent if c.is_zero else _exponent(c, F)
    candidates = [e for e in (Ep, e_c) if e is not None]
    if not candidates:
        return Fraction(0)
    E2 = max(candidates)
    s2 = round_to_grid(S, pow2(E2 - dp.join_sum_bits), "floor")
    dropped = e_c is None or (dp.join_c_window is not None and e_c < E2 - dp.join_c_window)
    c2 = Fraction(0) if dropped else round_to_grid(c.value, pow2(E2 - dp.join_c_bits), "floor")
    _emit(tr, "join", {"sum": S, "c": c}, {"products": s2, "c": c2, "sum": s2 + c2},
          placement="asymmetric", E=E2, c_dropped=dropped and not c.is_zero,
          sum_bits=dp.join_sum_bits, c_bits=dp.join_c_bits)
    return s2 + c2


def stage_round(total: Fraction, a, b, c: Num, dp: Datapath, F, sr, tr=None) -> Num:
    """The block's exact value rounded once (:func:`round_pack`) to p = ``output_precision``
    (or F's precision) bits in F's exponent range, ``output_rounding``, ``overflow``, flushing a
    subnormal result with ``subnormal_outputs = "flush"``. An exact zero is -0 only under
    ``zero_sign = "ieee"`` when every product and C is -0; a nonzero sum rounding to zero keeps
    its sign."""
    negative_zero = (dp.zero_sign == "ieee" and c.is_zero and c.negative and
                     all((x.negative != y.negative) and (x.is_zero or y.is_zero)
                         for x, y in zip(a, b)))
    p = _output_precision(dp, F)
    out = _round_in(total, F, p, dp.output_rounding, overflow=dp.overflow,
                    flush=dp.subnormal_outputs == "flush", sr=sr, zero_negative=negative_zero)
    if tr is not None:
        _emit(tr, "round", {"sum": total}, {"result": out}, precision=p,
              mode=dp.output_rounding, overflow=dp.overflow, sr=sr,
              discarded=total - out.value if out.kind == "finite" else None)
    return out


def stage_tree(a, b, c: Num, dp: Datapath, fa, fb, F, tr=None) -> Num:
    """``product_sum = "pairwise"``: each product (a short block padded with +0 products) is
    rounded to ``product_sum_precision`` bits in F's range (fma(a, b, +0): an Inf factor gives an
    Inf node, NaN against a zero), then ((p0 + p1) + (p2 + p3)) with every node rounded the same
    way (IEEE addition on Inf/NaN, flushed below 2^emin with ``flush_nodes``), then C + root
    with one ``output_rounding``."""
    pp = dp.product_sum_precision
    nodes = []
    for k in range(dp.block_size):
        x, y = (a[k], b[k]) if k < len(a) else (_ZERO, _ZERO)
        if x.is_nan or y.is_nan or ((x.is_inf or y.is_inf) and (x.is_zero or y.is_zero)):
            nodes.append(NAN)
        elif x.is_inf or y.is_inf:
            nodes.append(_inf(x.negative != y.negative))
        else:
            nodes.append(_round_in(x.value * y.value, F, pp, "rne", flush=dp.flush_nodes))
    levels = [nodes]
    while len(nodes) > 1:
        nodes = [_add_nodes(nodes[2 * t], nodes[2 * t + 1], pp, F, "rne", dp.flush_nodes)
                 for t in range(len(nodes) // 2)]
        levels.append(nodes)
    out = _add_nodes(c, nodes[0], _output_precision(dp, F), F, dp.output_rounding,
                     dp.flush_nodes)
    if tr is not None:      # the products as terms: exact value, exponent, node
        terms = [Term(f"k={tr.ks[k]}", x.value * y.value,
                      _exponent(x, fa) + _exponent(y, fb) if x.value * y.value else 0,
                      aligned=levels[0][k].value)
                 for k, (x, y) in enumerate(zip(a, b)) if levels[0][k].kind == "finite"]
        finite = c.kind == nodes[0].kind == "finite"
        _emit(tr, "tree", {"a": a, "b": b, "c": c},
              {"terms": terms, "levels": levels, "result": out,
               "exact": sum((t.value for t in terms), c.value) if finite else None,
               "sum": nodes[0].value + c.value if finite else None},
              precision=pp, flush=dp.flush_nodes, mode=dp.output_rounding)
    return out


def block(a: Sequence[Num], b: Sequence[Num], c: Num, dp: Datapath, fa: FloatFormat,
          fb: FloatFormat, F: FloatFormat, sr: Optional[tuple] = None,
          scales: Optional[tuple] = None, where: tuple = ((0, 0, 0), 0, 0),
          tr: Optional[BlockTrace] = None) -> Num:
    """One block FMA on decoded operands (C already in the accumulator format), stage by stage.
    sr: the (random integer, bits) of stochastic output rounding. scales: (sa, sb), one _Scale
    per product (block-scaled datapaths). where: ((batch, row, column), first K index, block
    index), for stochastic term rounding. tr: a BlockTrace to record the stages in."""
    assert len(a) == len(b)
    if scales is not None and any(x.nan for x in scales[0] + scales[1]):
        _emit(tr, "scales", {"scales": scales}, {"result": NAN}, why="a NaN block scale")
        return _finish(tr, NAN)
    a, b, c = stage_flush(a, b, c, dp, fa, fb, F, tr)
    if dp.product_sum == "pairwise":    # IEEE nodes: Inf and NaN take the tree's own course
        return _finish(tr, stage_tree(a, b, c, dp, fa, fb, F, tr))
    special = stage_specials(a, b, c, dp, F, tr)
    if special is not None:
        return _finish(tr, special)
    (bi, i, j), k0, kb = where

    def term_sr(counter):
        if dp.term_rounding != "sr":
            return None
        return (sr_random(dp.sr_seed, bi, i, j, counter, dp.sr_bits), dp.sr_bits)

    ks = tr.ks if tr is not None else range(k0, k0 + len(a))
    terms = stage_terms(a, b, c, dp, fa, fb, F, scales, ks, k0, kb, tr)
    Ep, S = stage_lanes(stage_align(terms, dp, term_sr, tr), dp, tr)
    total = stage_join(S, Ep, c, dp, F, tr)
    return _finish(tr, stage_round(total, a, b, c, dp, F, sr, tr))


def _finish(tr: Optional[BlockTrace], out: Num) -> Num:
    if tr is not None:
        tr.result = out
    return out


# ---------------------------------------------------------------------------------------------
# The chain of blocks
# ---------------------------------------------------------------------------------------------
def _decode_inputs(vals: Iterable, fmt: FloatFormat, name: str) -> list[Num]:
    out = []
    for k, x in enumerate(vals):
        num = decode(x)
        _check_representable(num, fmt, f"{name}[{k}]", x)
        out.append(num)
    return out


def _unsigned_zero(x: Num, dp: Datapath, tr: Optional[BlockTrace] = None) -> Num:
    """zero_sign "unsigned": every zero result is +0, an underflow to zero included."""
    if dp.zero_sign == "unsigned" and x.is_zero:
        if x.negative and tr is not None:
            tr.after.append(Record("zero_sign", {"result": x}, {"result": _ZERO}))
        return _ZERO
    return x


def _lowered_dot(a: list, b: list, c: Num, dp: Datapath, fa, fb, F, index, ks,
                 blocks: Optional[list]) -> Num:
    """A lowered instruction chain (Datapath.lowered_k): per lowered_k products (zero-padded),
    the inner blocks from +0 on the products in k_order, then C added with one IEEE RNE
    rounding into F (stage ``lowered_c``); that sum is the next instruction's C."""
    n = dp.lowered_k
    order = list(dp.k_order) or list(range(n))
    inner = dp.replace(lowered_k=None, k_order=())
    pad = -len(a) % n
    a, b = list(a) + [_ZERO] * pad, list(b) + [_ZERO] * pad
    ks = list(ks) + list(range(len(ks), len(ks) + pad))
    for start in range(0, len(a), n):
        s = _dot_decoded([a[start + j] for j in order], [b[start + j] for j in order], _ZERO,
                         inner, fa, fb, F, index, None, [ks[start + j] for j in order], blocks)
        out = _add_nodes(s, c, F.precision, F, "rne", False)
        if blocks:
            blocks[-1].after.append(Record("lowered_c", {"sum": s, "c": c}, {"result": out},
                                           {"precision": F.precision, "mode": "rne"}))
        c = out
    return c


def _dot_decoded(a: list, b: list, c: Num, dp: Datapath, fa, fb, F, index=(0, 0, 0),
                 scales: Optional[tuple] = None, ks=None, blocks: Optional[list] = None,
                 pre: Optional[list] = None) -> Num:
    """The chain: blocks of ``block_size`` consecutive products, each result the next block's C.
    ks: the K index of each product (for the trace); blocks: a list to append BlockTraces to."""
    ks = list(range(len(a))) if ks is None else ks
    if dp.lowered_k is not None:
        out = _lowered_dot(a, b, c, dp, fa, fb, F, index, ks, blocks)
        return _unsigned_zero(out, dp, blocks[-1] if blocks else None)
    K = len(a)
    n = dp.block_size if dp.block_size is not None else max(K, 1)
    if dp.flush_nodes:    # inputs and C below their smallest normal become +0 (CDNA2)
        a0, b0, c0 = a, b, c
        a = [_ZERO if _is_subnormal(x, fa) else x for x in a]
        b = [_ZERO if _is_subnormal(x, fb) else x for x in b]
        c = _ZERO if _is_subnormal(c, F) else c
        if pre is not None and (a, b, c) != (a0, b0, c0):
            pre.append(Record("flush", {"a": a0, "b": b0, "c": c0}, {"a": a, "b": b, "c": c},
                              {"to": "+0"}))
    tr = None
    for start in range(0, K, n):
        sr = None
        if dp.output_rounding == "sr":
            sr = (sr_random(dp.sr_seed, *index, start // n, dp.sr_bits), dp.sr_bits)
        sc = None
        if scales is not None:
            sc = (scales[0][start:start + n], scales[1][start:start + n])
        if blocks is not None:
            tr = BlockTrace(ks[start:start + n], c)
            blocks.append(tr)
        c = block(a[start:start + n], b[start:start + n], c, dp, fa, fb, F, sr, sc,
                  (tuple(index), start, start // n), tr)
    return _unsigned_zero(c, dp, tr)  # K == 0: C unchanged (but for the sign of a zero)


def _decoded_scales(dp: Datapath, a_scales, b_scales, K: int, scale_format: str):
    if dp.block_scale == "none":
        return None
    if a_scales is None or b_scales is None or len(a_scales) != K or len(b_scales) != K:
        raise ShapeError("a block-scaled datapath needs one scale per K element of a and b")
    z = dp.zero_operand_exponent
    return ([_decode_scale(x, scale_format, z) for x in a_scales],
            [_decode_scale(x, scale_format, z) for x in b_scales])


def _dot_inputs(a_vals, b_vals, c, a_format, b_format, acc):
    fa, fb, F = get_format(a_format), get_format(b_format), _acc_format(acc)
    a = _decode_inputs(a_vals, fa, "a")
    b = _decode_inputs(b_vals, fb, "b")
    if len(a) != len(b):
        raise ShapeError(f"a has {len(a)} values and b has {len(b)}")
    return a, b, _bring_c_into_acc(c, F), fa, fb, F


def block_fma(a_vals, b_vals, c, dp: Datapath, a_format: str, b_format: str,
              acc: str = "fp32") -> float:
    """One block FMA: sum_k a_vals[k]*b_vals[k] + c through the datapath ``dp``.

    a_vals, b_vals: sequences of equal length (at most ``dp.block_size``; fewer is allowed)
        holding values exactly representable in ``a_format`` / ``b_format``.
    c: the incoming accumulator, an fp32 value (rounded to ``acc`` with RNE when acc is fp16).
    Returns the acc-format result as a Python float (NaN as float('nan'), signed zeros kept).
    """
    a, b, c, fa, fb, F = _dot_inputs(a_vals, b_vals, c, a_format, b_format, acc)
    if dp.block_size is not None and len(a) > dp.block_size:
        raise ShapeError(f"{len(a)} products do not fit one block of {dp.block_size}")
    sr = (sr_random(dp.sr_seed, 0, 0, 0, 0, dp.sr_bits), dp.sr_bits) \
        if dp.output_rounding == "sr" else None
    return float(block(a, b, c, dp, fa, fb, F, sr))


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
    return float(trace_dot(a_vals, b_vals, c, dp, a_format, b_format, acc, index, a_scales,
                           b_scales, scale_format, record=False).result)


def trace_dot(a_vals, b_vals, c, dp: Datapath, a_format: str, b_format: str,
              acc: str = "fp32", index=(0, 0, 0), a_scales=None, b_scales=None,
              scale_format: str = "ue8m0", record: bool = True, first_k: int = 0) -> DotTrace:
    """:func:`dot` with its trace: every block's stage records (:class:`BlockTrace`), the result
    (a :class:`Num`) and the exact value sum_k a_k b_k (sa_k sb_k) + C (C in the accumulator
    format). record=False: the result only (blocks empty). first_k: the K index of a_vals[0]
    (labels only: a chunk of a longer K)."""
    a, b, cn, fa, fb, F = _dot_inputs(a_vals, b_vals, c, a_format, b_format, acc)
    scales = _decoded_scales(dp, a_scales, b_scales, len(a), scale_format)
    blocks, pre = ([], []) if record else (None, None)
    if record:      # C brought into the accumulator format (c_precision_rounding, RNE)
        pre.append(Record("decode", {"c": decode(c)}, {"c": cn},
                          {"format": F.name, "rounding": dp.c_precision_rounding}))
    ks = list(range(first_k, first_k + len(a)))
    out = _dot_decoded(a, b, cn, dp, fa, fb, F, index, scales, ks, blocks, pre)
    exact = Fraction(0)
    if record and all(x.kind == "finite" for x in a + b + [cn]):
        factors = [Fraction(1)] * len(a) if scales is None else \
            [x.value * y.value for x, y in zip(*scales)]
        exact = sum((x.value * y.value * s for x, y, s in zip(a, b, factors)), cn.value)
    return DotTrace(blocks or [], out, exact, pre or [])


def result_bits(value, acc: str = "fp32") -> int:
    """The fp32 / fp16 bit pattern of a result value (NaN: 0x7FFFFFFF / 0x7FFF).

    Encoded by hand from the exact value (sign, biased exponent, fraction field); a value the
    format cannot hold exactly is an error.
    """
    F = _acc_format(acc)
    m = F.mantissa_bits
    sign_shift = F.exponent_bits + m
    num = decode(value)
    if num.is_nan:
        return (1 << sign_shift) - 1  # canonical NaN: all exponent and fraction bits set
    sign = 1 if num.negative else 0
    if num.is_inf:
        exp_field, frac_field = (1 << F.exponent_bits) - 1, 0
    elif num.magnitude == 0:
        exp_field, frac_field = 0, 0
    else:
        e = floor_log2(num.magnitude)
        if e < F.emin:  # subnormal: exponent field 0, no hidden bit
            exp_field = 0
            frac = num.magnitude / pow2(F.emin - m)
        else:
            exp_field = e + F.bias
            frac = num.magnitude / pow2(e - m) - (1 << m)
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
    a, b, c = np.asarray(a), np.asarray(b), np.asarray(c)
    if a.ndim != 2 or b.ndim != 2 or c.ndim != 2:
        raise ShapeError(f"a, b, c must be 2-D (got {a.ndim}, {b.ndim}, {c.ndim} dimensions)")
    M, K = a.shape
    if b.shape[0] != K:
        raise ShapeError(f"a is {a.shape} and b is {b.shape}: inner dimensions differ")
    N = b.shape[1]
    if c.shape != (M, N):
        raise ShapeError(f"c is {c.shape}, expected {(M, N)}")
    a, b, c = a.astype(np.float64), b.astype(np.float64), c.astype(np.float64)
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
            bits[i, j] = result_bits(float(d), F.name)
    return bits.view(out_dtype)

