"""Bit-exact rounding of float64 values onto small binary floating-point formats (numba).

The rounding decision is the kernels' one round-and-pack routine
(:func:`tcsim._kernels.roundpack.round_pack_any`, round_pack for every mode: an exact power-of-two scaling of |x| onto the
target grid, then floor / rint and the mode's increment, all exact float64 operations under the
default IEEE rounding; no ``fastmath``). This module adds what belongs to a format: specials and
unsigned inputs from the binary64 bit pattern (sign, exponent field, fraction), the split of the
rounded value into ``(e, q)`` fields, e8m0's missing zero, the format's own largest value and
overflow policy, NaN kinds and the code layout. No globals other than constants.

Format parameters travel as a small int64 vector ``fp`` (indices ``P_*`` below, built by
:func:`tcsim.formats.conversion.format_params`), so one compiled signature serves every format.

The scalar functions (:func:`round_fields`, :func:`round_value`, :func:`encode_value`,
:func:`decode_code`) are plain ``@njit(cache=True)`` functions and may be called from other
jitted kernels. The array kernels (``*_array``) compile on their first call (not at import),
once each: callers pass writeable float64 / int64 1-D contiguous arrays
(tcsim.formats.conversion converts float32 to float64 first, which is exact) and int64 scalars.

A rounded finite result is kept as ``(sign, e, q)`` with value ``(-1)^sign * q * 2^(e - m)``:
``m`` the stored mantissa bits, ``e >= emin`` the binade exponent, ``q`` the integer significand
(``2^m <= q < 2^(m+1)`` for normals, ``q < 2^m`` for subnormals/zero at ``e == emin``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..overflow import OVERFLOW_SATURATE
from ..rounding import RD, RNA, RNE, RTO, RU, RZ, SR

# f64_as_i64 / i64_as_f64 live in roundpack (codec used to define them) and stay importable here.
from .roundpack import (  # noqa: F401
    FREE_EMAX,
    NO_FLUSH,
    NO_RANDOM,
    NO_RANDOM_BITS,
    NO_RESIDUAL,
    exponent_of,
    f64_as_i64,
    i64_as_f64,
    pow2,
    round_pack,
    round_pack_any,
)

# ---- parameter vector layout ------------------------------------------------------------------
P_EXP_BITS = 0    # exponent field width E
P_MAN_BITS = 1    # stored mantissa bits m
P_BIAS = 2        # exponent bias
P_EMIN = 3        # smallest binade exponent (also the subnormal exponent)
P_EMAX = 4        # largest finite binade exponent
P_QMAX = 5        # integer significand of the largest finite value (in binade emax)
P_HAS_ZERO = 6    # 1: exponent field 0 holds zero and subnormals; 0: no zero (e8m0)
P_SIGNED = 7      # 1: a sign bit sits above exponent and mantissa
P_HAS_INF = 8     # 1: IEEE infinities
P_NAN_KIND = 9    # NAN_* below
P_SHIFT = 10      # the code is stored shifted left by this many bits (tf32: 13, in an fp32 word)
N_PARAMS = 11

NAN_NONE = 0      # no NaN encoding (MX e2m1, e2m3, e3m2)
NAN_IEEE = 1      # all-ones exponent, nonzero mantissa (quiet NaN: top mantissa bit set)
NAN_FN = 2        # only S.1..1.1..1 is NaN (e4m3fn; e8m0: 0xFF)
NAN_FNUZ = 3      # only 1000..0 is NaN; no negative zero

# ---- rounding modes and overflow policies -----------------------------------------------------
# (the one table of tcsim.rounding; the overflow policies are tcsim.overflow's: the codec takes
# OVERFLOW_IEEE (format spelling "inf": the rounding direction decides, then Inf, else NaN, else
# max finite) and OVERFLOW_SATURATE (always +-max finite, also for +-Inf inputs))
RM_RNE = RNE      # nearest, ties to even significand
RM_RZ = RZ        # toward zero
RM_RU = RU        # toward +inf
RM_RD = RD        # toward -inf
RM_RNA = RNA      # nearest, ties away from zero
RM_RTO = RTO      # round to odd (truncate; if inexact force the significand's last bit to 1)
RM_SR = SR        # stochastic: r discarded bits + r random bits, carry-out rounds up

# result kinds of round_fields
K_FINITE = 0
K_INF = 1
K_NAN = 2

_MASK52 = (1 << 52) - 1


# ---- the rounding core ------------------------------------------------------------------------
@njit(cache=True)
def round_fields(x, man_bits, emin, emax, qmax, has_zero, signed, has_inf, has_nan,
                 mode, overflow, rnd, rbits):
    """Round the float64 ``x`` onto a binary format; returns ``(kind, sign, e, q)``.

    kind: K_FINITE (value ``(-1)^sign * q * 2^(e - man_bits)``), K_INF or K_NAN (sign kept).
    Format: ``man_bits`` stored mantissa bits, binade exponents ``emin..emax``, ``qmax`` the
    integer significand of the largest finite value, ``has_zero`` (= has subnormals; 0 for
    e8m0, where values below the smallest one are clamped to it), ``signed``, ``has_inf``,
    ``has_nan``. ``mode``: RM_*; ``overflow``: OVERFLOW_IEEE or OVERFLOW_SATURATE (any other
    code acts as OVERFLOW_IEEE). ``rnd`` (0 <= rnd < 2^rbits) is the random number used by
    RM_SR only. A NaN ``x`` gives K_NAN even if the format has no NaN (callers reject such
    input first).
    """
    b = f64_as_i64(x)
    sign = (b >> 63) & 1          # arithmetic shift then mask: the sign bit as 0/1
    bexp = (b >> 52) & 0x7FF      # biased binary64 exponent field
    frac = b & _MASK52            # 52 stored fraction bits
    qmin = 1 << man_bits if has_zero == 0 else 0  # smallest nonzero significand w/o subnormals

    if bexp == 0x7FF:
        if frac != 0:
            return K_NAN, sign, 0, 0
        # +-Inf input: not an overflow but a special value.
        if signed == 0 and sign == 1:
            if overflow == OVERFLOW_SATURATE:
                return K_FINITE, 0, emin, qmin   # clamp to the lowest value
            return K_NAN, 0, 0, 0
        if overflow == OVERFLOW_SATURATE:
            return K_FINITE, sign, emax, qmax
        if has_inf:
            return K_INF, sign, 0, 0
        if has_nan:
            return K_NAN, sign, 0, 0
        return K_FINITE, sign, emax, qmax

    if signed == 0 and (sign == 1 or (bexp == 0 and frac == 0 and has_zero == 0)):
        # Unsigned format: negative input (or zero where there is no zero) has no value.
        if sign == 1 and bexp == 0 and frac == 0 and has_zero:
            return K_FINITE, 0, emin, 0          # -0 -> +0
        if overflow == OVERFLOW_SATURATE:
            return K_FINITE, 0, emin, qmin       # clamp to the lowest value
        return K_NAN, 0, 0, 0

    if bexp == 0 and frac == 0:
        return K_FINITE, sign, emin, qmin        # zero (kept signed; fnuz fixed by the caller)

    # The rounding itself is round_pack's: |x| onto the grid of p = m + 1 significant bits, with
    # the fixed spacing 2^(emin - m) below 2^emin (the subnormals), and no upper limit that a
    # format reaches (FREE_EMAX; policy OVERFLOW_SATURATE, never Inf): the codec applies the
    # format's own range and policy itself, below. Its SR draws "up" when u < D (D the top r
    # discarded bits); the codec's hardware convention is a carry out of D + rnd, i.e.
    # rnd >= 2^r - D, which is u < D for u = 2^r - 1 - rnd.
    # |x| >= 2^(emax+1) is beyond the largest value in every mode (the truncation already is),
    # and round_pack then never sees a binade above 2^128 (its grid stays a normal float64).
    if bexp - 1023 > emax:
        et = emax + 1
        q = 0
    else:
        r = abs(round_pack_any(x, NO_RESIDUAL, man_bits + 1, emin, FREE_EMAX, mode,
                               OVERFLOW_SATURATE, NO_FLUSH, (1 << rbits) - 1 - rnd, rbits))
        # Back to fields: r = q * 2^(et - m) with et = max(floor(log2 r), emin) and q < 2^(m+1)
        # an integer (r is on the grid); a carry into the next binade is in r's exponent.
        if r == 0.0:
            et = emin
            q = 0
        else:
            et = max(exponent_of(r), emin)
            q = 0 if et > emax else np.int64(r * pow2(man_bits - et))  # (overflow: q unused)
    if q < qmin:
        q = qmin                                 # no zero / subnormals: clamp to the smallest

    if et > emax or (et == emax and q > qmax):
        # Overflow. IEEE: RZ (and RTO, a truncation) and the directed modes pointing back to
        # zero give the largest finite value; the others give Inf (or NaN, or max finite when
        # the format has neither).
        to_max = (overflow == OVERFLOW_SATURATE or mode == RM_RZ or mode == RM_RTO
                  or (mode == RM_RU and sign == 1) or (mode == RM_RD and sign == 0))
        if to_max:
            return K_FINITE, sign, emax, qmax
        if has_inf:
            return K_INF, sign, 0, 0
        if has_nan:
            return K_NAN, sign, 0, 0
        return K_FINITE, sign, emax, qmax
    return K_FINITE, sign, et, q


@njit(cache=True)
def round_value(x, fp, mode, overflow, rnd, rbits):
    """Round the float64 ``x`` onto the format described by the int64 vector ``fp``.

    Returns the rounded value as float64 (NaN, +-Inf or the exact finite value; fnuz formats
    never return -0). ``mode``: RM_*; ``overflow``: OVERFLOW_IEEE or OVERFLOW_SATURATE;
    ``rnd``/``rbits``: the random number and its width for RM_SR (ignored otherwise).
    """
    kind, sign, e, q = round_fields(
        x, fp[P_MAN_BITS], fp[P_EMIN], fp[P_EMAX], fp[P_QMAX], fp[P_HAS_ZERO], fp[P_SIGNED],
        fp[P_HAS_INF], fp[P_NAN_KIND] != NAN_NONE, mode, overflow, rnd, rbits)
    if kind == K_NAN:
        return math.nan
    if kind == K_INF:
        return -math.inf if sign else math.inf
    if q == 0 and fp[P_NAN_KIND] == NAN_FNUZ:
        sign = 0
    # q < 2^53 converts exactly; 2^(e-m) is a power of two within binary64's normal range.
    v = float(q) * pow2(e - fp[P_MAN_BITS])
    return -v if sign else v


@njit(cache=True)
def encode_value(x, fp, mode, overflow, rnd, rbits):
    """Round the float64 ``x`` and return the format's code (an int64 bit pattern).

    Layout: [sign][E exponent bits][m mantissa bits], shifted left by ``fp[P_SHIFT]``.
    NaN: IEEE formats the quiet NaN (top mantissa bit) with the input's sign; fn formats the
    all-ones code with the sign; fnuz the code 1000..0.
    """
    ebits = fp[P_EXP_BITS]
    m = fp[P_MAN_BITS]
    nan_kind = fp[P_NAN_KIND]
    kind, sign, e, q = round_fields(
        x, m, fp[P_EMIN], fp[P_EMAX], fp[P_QMAX], fp[P_HAS_ZERO], fp[P_SIGNED],
        fp[P_HAS_INF], nan_kind != NAN_NONE, mode, overflow, rnd, rbits)
    nb = ebits + m                               # bits below the sign bit
    emask = (1 << ebits) - 1
    sbit = (sign << nb) if fp[P_SIGNED] else 0
    if kind == K_NAN:
        if nan_kind == NAN_IEEE:
            code = sbit | (emask << m) | (1 << (m - 1))
        elif nan_kind == NAN_FNUZ:
            code = 1 << nb
        else:                                    # NAN_FN (NAN_NONE never reaches here)
            code = sbit | ((1 << nb) - 1)
    elif kind == K_INF:
        code = sbit | (emask << m)
    elif q >= (1 << m):
        # normal: biased exponent field e + bias, and the hidden bit 2^m dropped from q
        code = sbit | ((e + fp[P_BIAS]) << m) | (q - (1 << m))
    else:
        # subnormal or zero: exponent field 0, mantissa field = q (the value is q * 2^(emin-m))
        if q == 0 and nan_kind == NAN_FNUZ:
            sbit = 0
        code = sbit | q
    return code << fp[P_SHIFT]


@njit(cache=True)
def decode_code(code, fp):
    """Value (float64) of the code ``code`` (an int64 bit pattern, already range-checked)."""
    ebits = fp[P_EXP_BITS]
    m = fp[P_MAN_BITS]
    nan_kind = fp[P_NAN_KIND]
    c = code >> fp[P_SHIFT]
    nb = ebits + m
    sign = (c >> nb) & 1 if fp[P_SIGNED] else 0
    mag = c & ((1 << nb) - 1)
    bexp = mag >> m
    mant = mag & ((1 << m) - 1)
    emask = (1 << ebits) - 1
    if nan_kind == NAN_IEEE and bexp == emask:
        if mant != 0:
            return math.nan
        return -math.inf if sign else math.inf
    if nan_kind == NAN_FN and mag == (1 << nb) - 1:
        return math.nan
    if nan_kind == NAN_FNUZ and sign == 1 and mag == 0:
        return math.nan
    if bexp == 0 and fp[P_HAS_ZERO]:
        v = float(mant) * pow2(fp[P_EMIN] - m)             # subnormal: mant * 2^(emin - m)
    else:
        v = float(mant | (1 << m)) * pow2(bexp - fp[P_BIAS] - m)  # 1.mant * 2^(E - bias)
    return -v if sign else v


# ---- array kernels (one signature each, compiled on first use) ------------------------------
@njit(cache=True)
def encode_array(x, fp, mode, overflow, rnd, rbits, out):
    """out[i] = encode_value(x[i]); ``rnd[i]`` is used only for RM_SR (else pass an empty array)."""
    use_rnd = mode == RM_SR
    for i in range(x.shape[0]):
        r = rnd[i] if use_rnd else 0
        out[i] = encode_value(x[i], fp, mode, overflow, r, rbits)


@njit(cache=True)
def round_array(x, fp, mode, overflow, rnd, rbits, out):
    """out[i] = round_value(x[i]); ``rnd[i]`` is used only for RM_SR (else pass an empty array)."""
    use_rnd = mode == RM_SR
    for i in range(x.shape[0]):
        r = rnd[i] if use_rnd else 0
        out[i] = round_value(x[i], fp, mode, overflow, r, rbits)


@njit(cache=True)
def decode_array(codes, fp, out):
    """out[i] = decode_code(codes[i])."""
    for i in range(codes.shape[0]):
        out[i] = decode_code(codes[i], fp)


@njit(cache=True, inline="always")
def representable_value(v, m, emin, emax, qmax, has_zero, signed, has_inf, nan_kind):
    """v is exactly a value of the format with the fields m (stored mantissa bits), emin, emax,
    qmax, has_zero, signed, has_inf, nan_kind (the P_* entries of format_params; scalars, so
    that the GPU backend's kernels pass them by value). Bit-exact: -0 is not one of fnuz's, nor
    of an unsigned format's. A finite v is one when |v| lies in [smallest, largest] of the format
    (smallest: 0, or 2^emin without a zero), its truncation onto the format's grid (round_pack
    RZ, inlined with a constant mode) is |v| itself, and its sign is allowed. One value: the
    CPU's representable_array and the GPU backend's input check (tcsim.cuda) both call it."""
    if v != v:
        return nan_kind != NAN_NONE
    if math.isinf(v):
        return has_inf != 0
    top = float(qmax) * pow2(emax - m)                     # the largest finite value
    low = pow2(emin) if has_zero == 0 else 0.0
    a = abs(v)
    ok = low <= a <= top and round_pack(a, NO_RESIDUAL, m + 1, emin, FREE_EMAX, RZ,
                                        OVERFLOW_SATURATE, NO_FLUSH, NO_RANDOM,
                                        NO_RANDOM_BITS) == a
    if f64_as_i64(v) < 0:                                  # sign bit set (-0 included)
        neg_ok = signed != 0
        ok = ok and ((neg_ok and nan_kind != NAN_FNUZ) if a == 0.0 else neg_ok)
    return ok


@njit(cache=True)
def representable_array(x, fp, out):
    """out[i] = representable_value(x[i], the fields of fp)."""
    for i in range(x.shape[0]):
        out[i] = representable_value(x[i], fp[P_MAN_BITS], fp[P_EMIN], fp[P_EMAX], fp[P_QMAX],
                                     fp[P_HAS_ZERO], fp[P_SIGNED], fp[P_HAS_INF],
                                     fp[P_NAN_KIND])
