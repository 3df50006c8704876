"""Round-and-pack: the one rounding of an exact value to p significant bits that every kernel
uses (private), with the float64 bit helpers it is built from and the counter-based random
integers of stochastic rounding.

Callers: the grid and staged kernels (tcsim._kernels.blockfma / staged) and the quantisation
kernel (tcsim._kernels.quantize) inline ``round_pack`` (the kernels' modes RZ / RNE / SR); the
format codec's round_fields (tcsim._kernels.codec) calls ``round_pack_any``, the same routine
for every mode of tcsim.rounding, and adds each format's own range, NaN kinds and codes (its
representable_array inlines ``round_pack`` with RZ). The one specialisation is the fused float32 tile's ``round_bits``
(tcsim._kernels.fused): this rounding for RZ / RNE in float32 bits, its fast path, held
bit-identical to the oracle by tests/test_fused_tile.py.

One value at a time and ``inline="always"``: in a row loop whose mode is fixed the branches on
the mode are loop-invariant and the residual is a constant 0, so LLVM unswitches the loop and
vectorises the RZ / RNE versions (the staged tile's hot path).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ..overflow import OVERFLOW_IEEE, OVERFLOW_INF, OVERFLOW_SATURATE
from ..rounding import RD, RNA, RNE, RTO, RU, RZ, SR
from .scalar import floor, rint

# Named settings of round_pack's trailing arguments, for the call sites (numba freezes
# module-level constants): flush nothing, and the random integer u / its width rbits of a mode
# other than SR (unused there; rbits 1 keeps 2^rbits a valid power).
NO_FLUSH = 0
NO_RANDOM = 0
NO_RANDOM_BITS = 1
NO_RESIDUAL = 0.0       # lo: v is the exact value itself


# ---- bit casts (a single LLVM bitcast; no memory round trip) ----------------------------------
@intrinsic
def f64_as_i64(typingctx, x):
    """Reinterpret the bits of a float64 as an int64."""
    if not isinstance(x, types.Float) or x.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def i64_as_f64(typingctx, x):
    """Reinterpret the bits of an int64 as a float64."""
    if not isinstance(x, types.Integer) or x.bitwidth != 64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


if numba.config.DISABLE_JIT:    # pure Python (NUMBA_DISABLE_JIT=1): an intrinsic cannot run
    def f64_as_i64(x):          # noqa: F811 - the same reinterpretation through a numpy view
        return np.float64(x).view(np.int64)

    def i64_as_f64(x):          # noqa: F811
        return np.int64(x).view(np.float64)


# IEEE binary64 exponent field; ``bits & EXP_MASK`` re-read as a float64 is 2^floor(log2|x|) for
# a normal x (sign and fraction cleared), and 0.0 for x = 0.
EXP_MASK = np.int64(0x7FF0000000000000)
RECIP_MAGIC = np.int64(2046 << 52)  # see recip_pow2
# Exponent range of a rounding without one (the product-sum rounding of c_placement "after"):
# every exact sum of the modelled formats' products lies far inside [2^-960, 2^1023], so these
# limits never bind, and they keep every grid 2^(e + 1 - p) (p <= 53) a normal float64.
FREE_EMIN = -960
FREE_EMAX = 1023


@njit(cache=True, inline="always")
def pow2_floor(x):
    """2^floor(log2|x|) for a normal float64 x, 0 for 0: the exponent field of x with sign and
    fraction cleared (Inf/NaN give Inf)."""
    return i64_as_f64(f64_as_i64(x) & EXP_MASK)


@njit(cache=True, inline="always")
def exponent_of(x):
    """floor(log2|x|) of a normal, nonzero float64: its biased exponent field minus 1023."""
    return ((f64_as_i64(x) >> 52) & 0x7FF) - 1023


@njit(cache=True, inline="always")
def pow2(e):
    """2^e as a float64 for -1022 <= e <= 1023: the biased exponent placed in the field."""
    return i64_as_f64(np.int64(e + 1023) << 52)


@njit(cache=True, inline="always")
def recip_pow2(x):
    """1 / x for a power of two x = 2^k in [2^-1022, 2^1022]: the biased exponent 1023 + k
    becomes 1023 - k = 2046 - (1023 + k), so bits(1/x) = (2046 << 52) - bits(x). A subtraction
    instead of a division: exact, and it vectorises."""
    return i64_as_f64(RECIP_MAGIC - f64_as_i64(x))


@njit(cache=True, inline="always")
def _mix(z):
    """splitmix64 finaliser (Steele, Lea, Flood 2014) on a uint64: a bijective avalanche mix."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def sr_random(seed, bi, i, j, kb, rbits):
    """The rbits-bit random integer of output (bi, i, j) at block kb: a counter-based hash, so a
    result never depends on thread scheduling (the same definition is in tcsim.reference)."""
    z = _mix(np.uint64(seed))
    z = _mix(z + np.uint64(bi))
    z = _mix(z + np.uint64(i))
    z = _mix(z + np.uint64(j))
    z = _mix(z + np.uint64(kb))
    return np.int64(z >> np.uint64(64 - rbits))


@njit(cache=True)
def _round_other(x, d, positive, rnd):
    """The grid point for RU / RD / RNA / RTO (see round_pack: x = |v| / G, d the residual's
    side, positive: v > 0)."""
    t = floor(x)
    if rnd == RNA:
        f = x - t                                   # exact: the discarded fraction
        up = f > 0.5 or (f == 0.5 and d >= 0)       # above half, or a tie not pulled below
    else:
        # RU / RD / RTO: the truncation t, one step up when inexact and the mode says so.
        up = t != x or d != 0                       # inexact
        if d < 0 and t == x:
            t -= 1.0
        if rnd == RTO:                              # t even (t < 2^53, so t / 2 is exact)
            up = up and t * 0.5 == floor(t * 0.5)
        else:                                       # away from zero: RU for v > 0, RD for v < 0
            up = up and (rnd == RU) == positive
    return t + 1.0 if up else t


@njit(cache=True, inline="always")
def _grid_position(v, lo, p, emin):
    """Where ``v + lo`` lies on its p-bit grid (the algebra is round_pack's): the side d the
    residual points to (+1 away from zero, -1 toward zero, 0 none), the grid step
    g = 2^(max(floor(log2|v + lo|), emin) - (p - 1)), x = |v| / g (exact) and 2^emin."""
    a = abs(v)
    d = 0
    if lo != 0.0:
        d = 1 if (lo > 0.0) == (v > 0.0) else -1
    binade = pow2_floor(a)
    if d < 0 and a == binade:
        binade = binade * 0.5           # |v + lo| is just below 2^e: binade e - 1
    emin_pow = pow2(emin)
    g = max(binade, emin_pow) * pow2(1 - p)
    return d, g, a * recip_pow2(g), emin_pow


@njit(cache=True, inline="always")
def round_pack(v, lo, p, emin, emax, rnd, overflow, flush, u, rbits):
    """Round the exact value ``v + lo`` to ``p`` significant bits (v a finite float64; lo = 0,
    or, for a nonzero v, a residual with |lo| below one float64 spacing of v of which only the
    sign is used outside SR) and return it as a float64 carrying v's sign (also on a zero).

    The grid is G = 2^(max(floor(log2|v + lo|), emin) - (p - 1)): p bits in the normal range,
    the fixed spacing of a p-bit format below 2^emin. x = |v| / G is exact (a power-of-two
    scaling), so floor / rint of it are the truncation and the nearest-even rounding onto the
    grid, and x - floor(x) is the exact discarded fraction. The residual only matters where x
    is an integer or a tie: every grid point and midpoint is a multiple of v's spacing, so
    |v + lo| lies strictly between x and its neighbours, on the side d = +1 (away from zero) or
    -1 (toward zero) that lo points to; just below a power of two (|v| = 2^e, d = -1) the
    binade, hence the grid, is one lower.

    rnd (tcsim.rounding), on the magnitude t = floor(|v + lo| / G) (the truncation): RZ t;
    RNE nearest, a tie to the even one; SR t + 1 when the random integer u is below D, the
    first rbits discarded bits of |v + lo| / G. These are the kernels' modes and the only ones
    in this inlined body (code for more modes here slowed the staged kernel's loops by 10-15%);
    :func:`round_pack_any` is the same routine for every mode of tcsim.rounding.
    overflow (the rounded magnitude beyond top = (2 - 2^(1-p)) 2^emax), a tcsim.overflow code:
    OVERFLOW_IEEE (RNE/SR -> Inf, RZ -> top), OVERFLOW_INF, OVERFLOW_SATURATE (top).
    flush: nonzero results below 2^emin become zero.
    """
    d, g, x, emin_pow = _grid_position(v, lo, p, emin)
    if rnd == RZ:
        q = floor(x)
        if d < 0 and q == x:
            q -= 1.0
    elif rnd == RNE:
        q = rint(x)
        if d != 0 and abs(q - x) == 0.5:            # a tie broken by the residual
            q = floor(x) + (1.0 if d > 0 else 0.0)
    else:
        # SR. D = floor((frac(x) + lo / G) 2^rbits): unlike the grid points, the steps
        # G 2^-rbits can be finer than v's spacing, so the residual's size matters, not only its
        # sign. frac(x) 2^rbits and lo 2^rbits / G are exact power-of-two scalings; TwoSum gives
        # their sum as s + err exactly, and floor(s + err) is floor(s), less one when s is an
        # integer and err < 0. A residual whose scaling underflows keeps its sign (d).
        q = floor(x)
        two_r = pow2(rbits)
        s1 = (x - q) * two_r
        t = (lo if v > 0.0 else -lo) * recip_pow2(g) * two_r
        if t == 0.0 and d != 0:
            t = d * 5e-324
        s = s1 + t
        sv = s - s1
        err = (s1 - (s - sv)) + (t - sv)
        dd = floor(s)
        if dd == s and err < 0.0:
            dd -= 1.0
        if dd < 0.0:                                # below x itself: one step lower
            q -= 1.0
            dd += two_r
        q = q + 1.0 if u < dd else q
    r = q * g
    top = (2.0 - pow2(1 - p)) * pow2(emax)
    to_inf = overflow == OVERFLOW_INF or (overflow == OVERFLOW_IEEE and rnd != RZ)
    big = math.inf if to_inf else top
    r = big if r > top else r
    r = 0.0 if (flush != 0 and r < emin_pow) else r
    return math.copysign(r, v)


@njit(cache=True)
def round_pack_any(v, lo, p, emin, emax, rnd, overflow, flush, u, rbits):
    """:func:`round_pack` for every mode of tcsim.rounding (the codec's and every non-kernel
    caller's entry): RZ / RNE / SR are round_pack itself; RU / RD / RNA / RTO round on the same
    grid G, from the same x = |v| / G and residual side d (see round_pack), on the truncation
    t = floor(|v + lo| / G): RU / RD t + 1 when inexact and the direction points away from zero
    (RU for v > 0, RD for v < 0), else t; RNA nearest, a tie to t + 1; RTO t, made odd (t + 1
    for an even t) when inexact. OVERFLOW_IEEE gives top for RZ, RTO and a directed mode
    pointing toward zero, Inf otherwise. Not inlined: called per value, compiled once.
    """
    if rnd == RZ or rnd == RNE or rnd == SR:
        return round_pack(v, lo, p, emin, emax, rnd, overflow, flush, u, rbits)
    d, g, x, emin_pow = _grid_position(v, lo, p, emin)
    q = _round_other(x, d, v > 0.0, rnd)
    r = q * g
    top = (2.0 - pow2(1 - p)) * pow2(emax)
    toward = (rnd == RU or rnd == RD) and (rnd == RU) != (v > 0.0)   # RU v < 0, RD v > 0
    to_top = overflow == OVERFLOW_SATURATE or (overflow == OVERFLOW_IEEE and (rnd == RTO or toward))
    r = (top if to_top else math.inf) if r > top else r
    r = 0.0 if (flush != 0 and r < emin_pow) else r
    return math.copysign(r, v)
