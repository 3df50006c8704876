"""Conversions between values and the codes of a format: rounding, encoding, decoding.

:func:`encode` / :func:`round_to_format` round float32/float64 values to a format (every mode
of :data:`tcsim.formats.catalog.ROUNDING_MODES`, seeded stochastic rounding included, either
overflow policy), :func:`decode` gives the values of codes, :func:`is_representable` /
:func:`check_representable` test values exactly (nothing is rounded silently). The jitted core
is tcsim._kernels.codec (numba, loaded on the first conversion, not on import); the
kernel-argument helpers (:func:`format_params`, :func:`rounding_code`, :func:`overflow_code`)
describe a format, a rounding mode and an overflow policy to jitted callers.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import FormatError
from ..overflow import FORMAT_NAMES
from ..rounding import Rounding
from .catalog import (
    OVERFLOW_POLICIES,
    ROUNDING_MODES,
    FloatFormat,
    code_bits,
    code_dtype,
    get_format,
    max_significand,
)

__all__ = ["DEFAULT_RANDOM_BITS", "MAX_RANDOM_BITS", "check_representable", "decode", "encode",
           "format_params", "index_str", "is_representable", "overflow_code", "round_to_format",
           "rounding_code"]

# Semantics shared by encode / round_to_format (the jitted core is tcsim/_kernels/codec.py):
#
# * Rounding is a single correct rounding of the exact float64 input (float32 input is widened to
#   float64 first, which is exact). ml_dtypes 0.6 casts float64 -> float8/bf16/MX by way of
#   float32 (a double rounding); we do not reproduce that: float32 inputs, and float64 inputs
#   exactly representable in float32, give the same codes as ml_dtypes.
# * Parity ("ties to even", "round to odd") is that of the integer significand q, hidden bit
#   included, on the target grid; for m >= 1 that is the code's last bit. For e8m0 (m = 0) every
#   significand is 1 (odd), so RNE ties (1.5 * 2^k) round up, as ml_dtypes does, and RTO = RZ.
# * Overflow (the rounded magnitude exceeds max finite, rounding with unbounded exponent; the
#   policies are those of tcsim.overflow, where "inf" is the IEEE rule):
#   overflow="inf": RNE/RNA/stochastic -> +-Inf where the format has Inf, else its NaN (e4m3fn
#   0x7F/0xFF, fnuz 0x80, e8m0 0xFF; what ml_dtypes gives), else (e2m1, e2m3, e3m2) +-max finite
#   (ml_dtypes saturates these). RZ and RTO -> +-max; RU -> +Inf-result for x > 0, -max for
#   x < 0; RD symmetrically. overflow="saturate": always +-max finite.
# * +-Inf input: overflow="inf": Inf where the format has Inf, else NaN (ml_dtypes), else +-max.
#   overflow="saturate": +-max finite for every format (the "satfinite" conversions).
# * NaN input: the format's NaN (IEEE formats: the quiet NaN with the input's sign; e4m3fn
#   S.1111.111 with the sign; fnuz 0x80; e8m0 0xFF); payloads are not kept. Formats without NaN
#   (e2m1, e2m3, e3m2): FormatError.
# * Zero: signed zeros are kept, except fnuz (no -0): -0 and negative values that round to zero
#   give +0 (ml_dtypes does the same).
# * e8m0 (unsigned, no zero, 2^-127 .. 2^127, 0xFF = NaN): positive values below 2^-127 give
#   2^-127 (code 0x00) in every rounding mode (no zero to round to; ml_dtypes does the same for
#   float32 inputs). Zero and negative inputs (and -Inf) give NaN with overflow="inf" (ml_dtypes),
#   and 2^-127 (clamp to the lowest value, as ml_dtypes' saturating cast) with "saturate".
#   Known ml_dtypes 0.6 divergences, all from its float32 path: float64 inputs below 2^-150
#   become float32 zero and then NaN there; float32 *subnormal* inputs in (2^-127, 1.5*2^-127)
#   round up to 2^-126 there, to the nearest 2^-127 here.

DEFAULT_RANDOM_BITS = 16
MAX_RANDOM_BITS = 32

_NAN_KIND = {"none": 0, "ieee": 1, "fn": 2, "fnuz": 3}
_MODE_CODE = {name: int(Rounding.from_name(name)) for name in ROUNDING_MODES}  # tcsim.rounding
_SR = _MODE_CODE["stochastic"]


def _codec():
    # Imported lazily: importing tcsim.formats (or tcsim.config) must not pay for numba.
    from .._kernels import codec

    return codec


def _code_shift(f: FloatFormat) -> int:
    return code_bits(f) - f.bits if f.bits > 16 else 0


@lru_cache(maxsize=None)
def _params(f: FloatFormat) -> tuple[int, ...]:
    c = _codec()
    p = [0] * c.N_PARAMS
    p[c.P_EXP_BITS] = f.exponent_bits
    p[c.P_MAN_BITS] = f.mantissa_bits
    p[c.P_BIAS] = f.bias
    p[c.P_EMIN] = f.emin
    p[c.P_EMAX] = f.emax
    p[c.P_QMAX] = max_significand(f)
    p[c.P_HAS_ZERO] = int(f.has_subnormals)
    p[c.P_SIGNED] = int(f.signed)
    p[c.P_HAS_INF] = int(f.has_inf)
    p[c.P_NAN_KIND] = _NAN_KIND[f.nan_style]
    p[c.P_SHIFT] = _code_shift(f)
    return tuple(p)


def format_params(fmt: str | FloatFormat) -> np.ndarray:
    """The int64 parameter vector describing ``fmt`` to the jitted codec kernels.

    Pass it to :func:`tcsim._kernels.codec.round_value` / ``encode_value`` / ``decode_code``
    from other jitted code; the layout is given by the ``P_*`` constants of that module. A fresh
    (writable, C-contiguous) array is returned on each call.
    """
    return np.array(_params(get_format(fmt)), dtype=np.int64)


def rounding_code(rounding: str) -> int:
    """The integer (``codec.RM_*``) for a rounding-mode name, for jitted callers."""
    try:
        return _MODE_CODE[rounding]
    except (KeyError, TypeError):
        raise FormatError(
            f"unknown rounding mode {rounding!r}; expected one of {', '.join(ROUNDING_MODES)}"
        ) from None


def overflow_code(overflow: str) -> int:
    """The integer (a tcsim.overflow code: OVERFLOW_IEEE for "inf", OVERFLOW_SATURATE for
    "saturate") for an overflow-policy name, for jitted callers."""
    try:
        return int(FORMAT_NAMES[overflow])
    except (KeyError, TypeError):
        raise FormatError(
            f"unknown overflow policy {overflow!r}; expected one of "
            f"{', '.join(OVERFLOW_POLICIES)}"
        ) from None


def index_str(shape: tuple[int, ...], flat_index: int) -> str:
    """The index of flat position ``flat_index`` of an array of ``shape``, as error messages
    write it: "[i, j]" ("" for a 0-d array)."""
    if not shape:
        return ""
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(flat_index, shape)) + "]"


def _kernel_array(a: np.ndarray, dtype) -> np.ndarray:
    """A flat, C-contiguous, writeable array of ``dtype`` for the jitted kernels (their single
    compiled signature takes writeable arrays; a read-only input is copied)."""
    return np.require(a, dtype=dtype, requirements=["C", "W"]).reshape(-1)


def _float_input(x, what: str = "x") -> tuple[np.ndarray, np.ndarray]:
    """(original array, float64 C-contiguous flat copy) for encode/round_to_format."""
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        raise FormatError(f"{what} must be float32 or float64, got dtype {a.dtype}")
    return a, _kernel_array(a, np.float64)


def _rounding_args(f: FloatFormat, flat: np.ndarray, a: np.ndarray, rounding, overflow, seed,
                   random_bits, what: str = "x"):
    mode = rounding_code(rounding)
    ov = overflow_code(overflow)
    if not f.has_nan:
        bad = np.flatnonzero(np.isnan(flat))
        if bad.size:
            raise FormatError(
                f"{what}{index_str(a.shape, int(bad[0]))} is NaN, but {f.name} has no NaN "
                f"encoding ({bad.size} NaN value{'s' if bad.size > 1 else ''} in {what})"
            )
    rbits = DEFAULT_RANDOM_BITS if random_bits is None else random_bits
    if mode == _SR:
        if isinstance(rbits, (bool, np.bool_)) or not isinstance(rbits, (int, np.integer)) \
                or not 1 <= int(rbits) <= MAX_RANDOM_BITS:
            raise FormatError(
                f"random_bits must be an integer in 1..{MAX_RANDOM_BITS}, got {random_bits!r}"
            )
        rbits = int(rbits)
        rng = _generator(seed)
        rnd = rng.integers(0, 1 << rbits, size=flat.size, dtype=np.int64)
    else:
        rbits = 1
        rnd = np.zeros(0, dtype=np.int64)
    return mode, ov, rnd, rbits


def _generator(seed) -> np.random.Generator:
    """The random generator of a stochastic-rounding ``seed``: a numpy Generator as is, else
    ``numpy.random.default_rng(seed)`` of a non-negative int (FormatError for anything else)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (bool, np.bool_)):
        raise FormatError(f"stochastic rounding needs a seed (a non-negative int, or a numpy "
                          f"Generator), got {seed!r}")
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"seed {seed!r} is not a non-negative int (or a numpy Generator): "
                          f"{exc}") from None


def _shape_out(out: np.ndarray, a: np.ndarray):
    out = out.reshape(a.shape)
    return out[()] if out.ndim == 0 else out


def decode(codes, fmt: str | FloatFormat) -> np.ndarray:
    """Values (float64) of the codes ``codes`` of format ``fmt``.

    codes: integers (any integer dtype, or Python ints), one bit pattern each, as
    :func:`encode` produces them: right-aligned in 8/16/32 bits, except tf32 whose codes are
    32-bit fp32 patterns with the low 13 bits zero (see :func:`code_bits`). NaN codes give NaN,
    Inf codes +-Inf, -0 codes -0.0. Out-of-range codes (negative, too wide, tf32 with low bits
    set) raise FormatError. A scalar input gives a numpy scalar, an array the same shape.
    """
    f = get_format(fmt)
    a = np.asarray(codes)
    if a.dtype.kind not in "ui":
        raise FormatError(f"codes must be integers, got dtype {a.dtype}")
    c = _kernel_array(a, np.int64)
    shift = _code_shift(f)
    bad = (c < 0) | (c >= (1 << (f.bits + shift))) | ((c & ((1 << shift) - 1)) != 0)
    if a.dtype == np.uint64:
        bad |= np.ascontiguousarray(a).reshape(-1) > np.uint64(2**63 - 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FormatError(
            f"codes{index_str(a.shape, i)} = {a.reshape(-1)[i]} is not a {f.name} code "
            f"({int(bad.sum())} invalid)"
        )
    out = np.empty(c.size, dtype=np.float64)
    _codec().decode_array(c, format_params(f), out)
    return _shape_out(out, a)


def encode(x, fmt: str | FloatFormat, rounding: str = "rne", overflow: str = "inf",
           seed=None, random_bits: int | None = None) -> np.ndarray:
    """Round float32/float64 ``x`` to format ``fmt`` and return the codes.

    Returns uint8 (formats of <= 8 bits), uint16 (fp16, bf16) or uint32 (tf32, fp32) codes,
    same shape as ``x`` (a numpy scalar for scalar input); tf32 codes are fp32 bit patterns with
    the low 13 bits zero. ``encode(x, fmt)`` equals ml_dtypes' cast (``x.astype(t).view(uint)``)
    for float32 input (ml_dtypes double-rounds float64 input through float32; this is a single
    rounding of the exact value).

    rounding: "rne" (nearest, ties to even), "rz" (toward zero), "ru" (toward +Inf), "rd"
        (toward -Inf), "rna" (nearest, ties away from zero), "rto" (round to odd: truncate,
        then set the significand's last bit if inexact), "stochastic".
    overflow: "inf" (IEEE result of the rounding direction; see the module notes above for
        formats without Inf) or "saturate" (+-max finite, +-Inf inputs included).
    seed, random_bits: stochastic rounding only (ignored otherwise). seed: an int (or a numpy
        Generator, which is advanced). Element i of ``x`` in C order gets the i-th draw R_i of
        ``numpy.random.default_rng(seed).integers(0, 2**r, size=x.size)``, r = random_bits
        (default 16, at most 32). With D = floor(f * 2^r), f in [0, 1) the part of |x| below the
        target grid step (in steps), the magnitude rounds up iff D + R_i >= 2^r, as in hardware
        SR (random bits added below the kept bits; a carry rounds up). So P(up) = D / 2^r: the
        result is unbiased up to less than 2^-r of a step, exactly so when f has <= r bits.
        Values that round up past max finite follow the overflow policy like RNE.

    Raises FormatError for an unknown format, rounding or policy, a non-float dtype, NaN input
    to a format without NaN, or stochastic rounding without a seed.
    """
    f = get_format(fmt)
    a, flat = _float_input(x)
    mode, ov, rnd, rbits = _rounding_args(f, flat, a, rounding, overflow, seed, random_bits)
    out = np.empty(flat.size, dtype=np.uint32)
    _codec().encode_array(flat, format_params(f), mode, ov, rnd, rbits, out)
    return _shape_out(out.astype(code_dtype(f), copy=False), a)


def round_to_format(x, fmt: str | FloatFormat, rounding: str = "rne", overflow: str = "inf",
                    seed=None, random_bits: int | None = None) -> np.ndarray:
    """``decode(encode(x, fmt, ...), fmt)``, computed directly: the rounded values as float64.

    Same arguments, semantics and errors as :func:`encode`; NaN results are NaN (no payload),
    fnuz formats give +0 for zero results. The same seed gives the same result as ``encode``.
    """
    f = get_format(fmt)
    a, flat = _float_input(x)
    mode, ov, rnd, rbits = _rounding_args(f, flat, a, rounding, overflow, seed, random_bits)
    out = np.empty(flat.size, dtype=np.float64)
    _codec().round_array(flat, format_params(f), mode, ov, rnd, rbits, out)
    return _shape_out(out, a)


def _exact_float64(x, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(original array, float64 flat copy, mask of elements whose float64 copy is inexact)."""
    a = np.asarray(x)
    if a.dtype.kind == "f" and a.dtype.itemsize <= 8:
        flat = _kernel_array(a, np.float64)
        return a, flat, np.zeros(flat.size, dtype=bool)
    if a.dtype.kind == "f":
        # long double: compare in the input's own precision; an element whose float64 copy
        # differs (more significand bits, or beyond float64's range) is inexact
        flat = _kernel_array(a, np.float64)
        orig = a.reshape(-1)
        return a, flat, (flat.astype(a.dtype) != orig) & ~np.isnan(orig)
    if a.dtype.kind in "ui":
        flat = _kernel_array(a, np.float64)
        back = a.reshape(-1)
        # integers beyond 2^53 may not survive the float64 conversion: treat those as inexact
        big = np.abs(flat) >= 2.0**63
        inexact = big.copy()
        ok = ~big
        inexact[ok] = flat[ok].astype(a.dtype) != back[ok]
        return a, flat, inexact
    raise FormatError(f"{what} must be a float or integer array, got dtype {a.dtype}")


def is_representable(x, fmt: str | FloatFormat) -> np.ndarray:
    """Elementwise: is ``x`` exactly a value of ``fmt``? (bool array, same shape as ``x``).

    x: float (float16/32/64, or long double, compared in its own precision) or integer values.
    NaN counts only if the format has a NaN, +-Inf
    only if it has Inf; -0 is not representable in the fnuz formats (nor 0 in e8m0, nor negative
    values in e8m0). Values are compared exactly, never rounded.
    """
    f = get_format(fmt)
    a, flat, inexact = _exact_float64(x, "x")
    out = np.empty(flat.size, dtype=np.bool_)
    _codec().representable_array(flat, format_params(f), out)
    out &= ~inexact
    return _shape_out(out, a)


def check_representable(x, fmt: str | FloatFormat, what: str = "x") -> None:
    """Raise FormatError unless every element of ``x`` is exactly a value of ``fmt``.

    The message names ``what``, the format, the first offending element (index and value) and
    how many more there are, e.g. ``a is not exactly representable in e4m3: a[3, 17] = 0.3
    (and 120 more)``. Nothing is ever rounded silently.
    """
    f = get_format(fmt)
    a = np.asarray(x)
    ok = np.asarray(is_representable(a, f))
    if ok.all():
        return
    bad = np.flatnonzero(~ok.reshape(-1))
    i = int(bad[0])
    more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
    raise FormatError(
        f"{what} is not exactly representable in {f.name}: "
        f"{what}{index_str(a.shape, i)} = {str(a.reshape(-1)[i])}{more}"
    )
