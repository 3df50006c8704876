"""encode / decode / round_to_format / is_representable against ml_dtypes and exact references.

References used here:
* ml_dtypes (float8/bf16/MX) and numpy (fp16, fp32) casts for RNE. ml_dtypes 0.6 rounds float64
  input through float32 (a double rounding), so float64 inputs are compared to ml_dtypes applied
  to float64 -> float32 *round-to-odd* (Boldo & Melquiond: RTO to >= p+2 bits, then RNE, is a
  correct single rounding); float32 inputs are compared directly.
* A table reference (sorted representable values + exact float64 comparisons) for every mode.
* A Python ``fractions.Fraction`` reference for every deterministic mode (on probe values, and
  on random values of every format with hypothesis), and for stochastic rounding with given
  random integers.
"""

from __future__ import annotations

import math
import re
import types
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import bits
from tcsim import formats as F
from tcsim.errors import FormatError
from tcsim.formats import catalog, conversion, operands
from tcsim.reference import round_to_grid

ML = {
    "e4m3": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
    "e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "fp16": np.float16,
    "bf16": ml_dtypes.bfloat16,
    "e8m0": ml_dtypes.float8_e8m0fnu,
    "e2m3": ml_dtypes.float6_e2m3fn,
    "e3m2": ml_dtypes.float6_e3m2fn,
    "e2m1": ml_dtypes.float4_e2m1fn,
}
ALL = list(F.FORMATS)
# the deterministic modes of the codec: its own names, less stochastic rounding, which needs
# random integers (test_stochastic_codec_equals_fraction_rounding_on_random_values and the
# SR tests below take it)
MODES_EXCLUDED = {"stochastic": "needs random integers: tested on its own below"}
MODES = [mode for mode in catalog.ROUNDING_MODES if mode not in MODES_EXCLUDED]
assert set(MODES_EXCLUDED) <= set(catalog.ROUNDING_MODES), "an exclusion names no codec mode"


def assert_same_values(got, want, ctx=""):
    """Bitwise float64 equality, except that any NaN matches any NaN."""
    with np.errstate(invalid="ignore"):  # float32 signalling NaNs widen with a warning
        got = np.asarray(got, dtype=np.float64)
        want = np.asarray(want, dtype=np.float64)
    gn, wn = np.isnan(got), np.isnan(want)
    bad = (gn != wn) | (~gn & (bits(got) != bits(want)))
    if bad.any():
        i = np.flatnonzero(bad.ravel())[:8]
        raise AssertionError(f"{ctx}: {bad.sum()} mismatches, e.g. got {got.ravel()[i]} "
                             f"want {want.ravel()[i]}")


def all_codes(f):
    return np.arange(1 << f.bits, dtype=np.int64).astype(F.code_dtype(f))


# ---- representable tables and probe values ------------------------------------------------------
_TABLES: dict[str, np.ndarray] = {}


def table(name):
    """Sorted nonnegative finite values of the format, from an independent decoder."""
    if name not in _TABLES:
        f = F.get_format(name)
        if name in ML:
            with np.errstate(invalid="ignore"):  # signalling-NaN codes
                v = all_codes(f).view(ML[name]).astype(np.float64)
        elif name == "tf32":
            with np.errstate(invalid="ignore"):
                v = (np.arange(1 << 18, dtype=np.uint32) << 13).view(np.float32)
                v = v.astype(np.float64)
        else:
            raise KeyError(name)
        v = v[np.isfinite(v) & ~np.signbit(v)]
        _TABLES[name] = np.unique(v)
    return _TABLES[name]


def beyond(f):
    """The first grid value past max finite (where rounding overflows), exponent unbounded."""
    mx = f.max_finite
    return mx + 2.0 ** (math.frexp(mx)[1] - 1 - f.mantissa_bits)


def neighbours64(v):
    return np.concatenate([v, np.nextafter(v, 0.0), np.nextafter(v, np.inf)])


def neighbours32(v):
    v32 = v.astype(np.float32)
    v32 = v32[np.isfinite(v32)]
    out = np.concatenate([v32, np.nextafter(v32, np.float32(0)),
                          np.nextafter(v32, np.float32(np.inf))])
    return out


def probe_base(name, limit=None, seed=0):
    """Representable values, midpoints, overflow and underflow boundaries (positive)."""
    f = F.get_format(name)
    if name == "fp32":
        rng = np.random.default_rng(seed)
        codes = np.concatenate([
            np.arange(0, 4000), np.arange(0x00800000 - 2000, 0x00800000 + 2000),
            np.arange(0x7F7FFFFF - 3000, 0x7F800000),
            rng.integers(0, 0x7F800000, 8000)]).astype(np.uint32)
        t = np.unique(codes.view(np.float32).astype(np.float64))
        with np.errstate(over="ignore"):
            hi = np.nextafter(t.astype(np.float32), np.float32(np.inf)).astype(np.float64)
        hi[np.isinf(hi)] = beyond(f)
        mids = (t + hi) / 2
    else:
        t = table(name)
        if limit is not None and t.size > limit:
            rng = np.random.default_rng(seed)
            k = limit // 3
            idx = np.unique(np.concatenate([np.arange(k), np.arange(t.size - k, t.size),
                                            rng.integers(0, t.size, k)]))
            lo = t[idx]
            hi = np.append(t, beyond(f))[idx + 1]
        else:
            lo = t
            hi = np.append(t[1:], beyond(f))
        mids = (lo + hi) / 2
        t = lo
    mx, tiny = f.max_finite, f.min_subnormal
    extra = np.array([beyond(f), 1.5 * beyond(f), 2 * mx, 4 * mx, 1e30, tiny / 2, tiny / 4,
                      tiny * 0.75, tiny / 3, tiny * 1.5, 1.0, 3.0, 0.1])
    return np.unique(np.concatenate([t, mids, extra]))


_PROBES: dict = {}


def probes(name, both_signs=True):
    """(float64 probes, float32 probes), finite; positive and negative."""
    key = (name, both_signs)
    if key not in _PROBES:
        limit = 30000 if name == "tf32" else None
        base = probe_base(name, limit)
        p64 = np.concatenate([neighbours64(base), [5e-324, 1e-300, 2.0**-150, 1e300]])
        p32 = neighbours32(base[base < 3e38])
        p32 = np.concatenate([p32, np.array([1e-45, 2.0**-149, 3.4e38], np.float32)])
        p64 = np.unique(p64[np.isfinite(p64)])
        p32 = np.unique(p32)
        if both_signs:
            p64 = np.concatenate([p64, -p64])
            p32 = np.concatenate([p32, -p32])
        _PROBES[key] = (p64, p32)
    return _PROBES[key]


def specials():
    return np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan])


# ---- independent references ---------------------------------------------------------------------
def overflow_value(f, mode, overflow, negative):
    """Magnitude result of an overflow (np.inf / np.nan / max)."""
    to_max = (overflow == "saturate" or mode in ("rz", "rto")
              or (mode == "ru" and negative) or (mode == "rd" and not negative))
    if to_max:
        return f.max_finite
    return np.inf if f.has_inf else np.nan if f.has_nan else f.max_finite


def bracket(name, a):
    """lo = largest grid value <= a (nan below the smallest), hi = the next grid value."""
    f = F.get_format(name)
    if name == "fp32":
        with np.errstate(over="ignore"):
            r = a.astype(np.float32)
        lo = np.where(r.astype(np.float64) > a, np.nextafter(r, np.float32(0)), r)
        lo = np.minimum(lo, np.float32(f.max_finite))
        with np.errstate(over="ignore"):
            hi = np.nextafter(lo, np.float32(np.inf)).astype(np.float64)
        hi[np.isinf(hi)] = beyond(f)
        return lo.astype(np.float64), hi
    t = np.append(table(name), beyond(f))
    idx = np.searchsorted(t, a, side="right") - 1
    idx = np.minimum(idx, t.size - 2)
    lo = np.where(idx >= 0, t[np.maximum(idx, 0)], np.nan)
    hi = t[np.maximum(idx, 0) + 1]
    return lo, hi


def table_round(name, x, mode, overflow="inf"):
    """Table reference for finite x (positive only for e8m0)."""
    f = F.get_format(name)
    neg = np.signbit(x)
    a = np.abs(x)
    lo, hi = bracket(name, a)
    below = np.isnan(lo)  # e8m0: below the smallest value
    lo = np.where(below, 0.0, lo)
    ulp = hi - lo
    q_lo = lo / ulp  # exact: ulp is the grid step at lo
    lo_odd = np.fmod(q_lo, 2) == 1
    mid = lo + ulp / 2
    inexact = a != lo
    if mode == "rz":
        up = np.zeros_like(inexact)
    elif mode == "ru":
        up = inexact & ~neg
    elif mode == "rd":
        up = inexact & neg
    elif mode == "rna":
        up = a >= mid
    elif mode == "rne":
        up = (a > mid) | ((a == mid) & lo_odd)
    elif mode == "rto":
        up = inexact & ~lo_odd
    r = np.where(up, hi, lo)
    r = np.where(below, f.min_subnormal, r)
    over = r > f.max_finite
    r = r.copy()
    for negative in (False, True):
        sel = over & (neg == negative)
        r[sel] = overflow_value(f, mode, overflow, negative)
    if f.nan_style == "fnuz":
        neg = neg & (r != 0)
    return np.where(neg, -r, r)


def fraction_round(name, x: float, mode: str, overflow="inf") -> float:
    """Exact reference for one finite value: tcsim.reference.round_to_grid (Fractions) at the
    format's exponent, then its subnormal, overflow and zero rules."""
    f = F.get_format(name)
    neg = math.copysign(1.0, x) < 0
    a = Fraction(abs(x))
    m = f.mantissa_bits
    if a == 0:
        v = Fraction(0)
    else:
        e = a.numerator.bit_length() - a.denominator.bit_length()
        if Fraction(2) ** e > a:
            e -= 1
        assert Fraction(2) ** e <= a < Fraction(2) ** (e + 1)
        et = max(e, f.emin)
        ulp = Fraction(2) ** (et - m)
        # the oracle's exact rounding onto the grid of multiples of ulp (every mode), applied to
        # the signed value (RU / RD depend on the sign), magnitude kept
        v = abs(round_to_grid(-a if neg else a, ulp, mode))
    if not f.has_subnormals:
        v = max(v, Fraction(2) ** f.emin)  # e8m0: no zero
    if v > Fraction(f.max_finite):
        res = overflow_value(f, mode, overflow, neg)
    else:
        res = float(v)
    if res == 0 and f.nan_style == "fnuz":
        return 0.0
    return -res if neg else res


def rto_f32(x):
    """float64 -> float32 with round-to-odd (exact values kept; overflow -> +-max float32)."""
    with np.errstate(over="ignore"):
        r = x.astype(np.float32)
    back = r.astype(np.float64)
    fix = (back != x) & ((r.view(np.uint32) & 1) == 0)
    toward = np.where(np.abs(back) > np.abs(x), np.float32(0), np.copysign(np.float32(np.inf), r))
    r[fix] = np.nextafter(r[fix], toward[fix])
    return r


def ml_cast(name, x):
    with np.errstate(over="ignore"):
        return np.asarray(x).astype(ML[name]).view(F.code_dtype(name))


# ml_dtypes before 0.7.0 rounded float32 subnormals in (2^-127, 1.5*2^-127) up to 2^-126 (code
# 0x01) instead of down to 2^-127 (checked on 0.5.4 and 0.6.0; 0.7.0 rounds them to 0x00, as tcsim
# always has). The tests below hold tcsim to whichever behaviour the installed release documents.
ML_DTYPES_VERSION = tuple(int(p) for p in re.findall(r"\d+", ml_dtypes.__version__)[:2])
ML_E8M0_ROUNDS_SUBNORMALS_UP = ML_DTYPES_VERSION < (0, 7)


def e8m0_ml_quirk(x32):
    """Inputs where the installed ml_dtypes's e8m0 cast has its pre-0.7 quirk (none from 0.7)."""
    a = np.abs(x32.astype(np.float64))
    in_range = (a > 2.0**-127) & (a < 1.5 * 2.0**-127)
    return in_range if ML_E8M0_ROUNDS_SUBNORMALS_UP else np.zeros_like(in_range)


# ---- the package and its modules -------------------------------------------------------------
def test_package_names_are_the_modules_names():
    """tcsim.formats re-exports every public name of catalog, conversion and operands (the same
    objects); each name has one home, which defines the functions and classes it lists."""
    modules = (catalog, conversion, operands)
    homes = [name for m in modules for name in m.__all__]
    assert len(homes) == len(set(homes)), "a name listed by two modules"
    assert sorted(F.__all__) == sorted(homes)
    for m in modules:
        for name in m.__all__:
            value = getattr(m, name)
            assert getattr(F, name) is value, name
            if isinstance(value, (type, types.FunctionType)):
                assert value.__module__ == m.__name__, f"{name} is defined in {value.__module__}"


# ---- derived properties --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_derived_properties(name):
    f = F.get_format(name)
    q = F.max_significand(f)
    assert f.max_finite == q * 2.0 ** (f.emax - f.mantissa_bits)
    if name in ML:
        fi = ml_dtypes.finfo(ML[name])
        assert f.max_finite == float(fi.max)
        assert f.min_subnormal == float(fi.smallest_subnormal)
        assert f.min_normal == float(fi.smallest_normal)
        t = table(name)
        assert t[-1] == f.max_finite
    assert F.get_format("e8m0").emax == 127  # was 128: the top binade's only code is the NaN


# ---- decode --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ML))
def test_decode_every_code_matches_ml_dtypes(name):
    f = F.get_format(name)
    codes = all_codes(f)
    got = F.decode(codes, f)
    with np.errstate(invalid="ignore"):  # signalling-NaN codes
        want = codes.view(ML[name]).astype(np.float64)
    assert got.dtype == np.float64 and got.shape == codes.shape
    assert_same_values(got, want, name)
    assert np.isnan(got).sum() == np.isnan(want).sum()


def test_decode_tf32_and_fp32():
    codes = np.arange(1 << 19, dtype=np.uint32) << 13
    assert_same_values(F.decode(codes, "tf32"), codes.view(np.float32), "tf32")
    rng = np.random.default_rng(1)
    c32 = np.concatenate([rng.integers(0, 2**32, 200000), np.arange(0, 3000),
                          np.arange(2**32 - 3000, 2**32),
                          [0x7F800000, 0xFF800000, 0x7FC00000, 0x80000000]]).astype(np.uint32)
    assert_same_values(F.decode(c32, "fp32"), c32.view(np.float32), "fp32")


@pytest.mark.parametrize("name", ALL)
def test_encode_decode_roundtrip_every_code(name):
    f = F.get_format(name)
    if name == "fp32":
        codes = np.random.default_rng(2).integers(0, 2**32, 300000).astype(np.uint32)
    elif name == "tf32":
        codes = np.arange(1 << 19, dtype=np.uint32) << 13
    else:
        codes = all_codes(f)
    vals = F.decode(codes, f)
    keep = ~np.isnan(vals)
    for dt in (np.float64, np.float32):
        got = F.encode(vals[keep].astype(dt), f)
        assert got.dtype == F.code_dtype(f)
        np.testing.assert_array_equal(got, codes[keep])
        assert_same_values(F.round_to_format(vals[keep].astype(dt), f), vals[keep], name)
    assert F.is_representable(vals, f).all()


# ---- RNE against ml_dtypes / numpy ---------------------------------------------------------------
@pytest.mark.parametrize("name", list(ML))
def test_rne_float32_inputs_match_ml_dtypes(name):
    _, p32 = probes(name)
    x = np.concatenate([p32, specials().astype(np.float32)])
    if not F.get_format(name).has_nan:
        x = x[~np.isnan(x)]
    if name == "e8m0":
        x = x[~e8m0_ml_quirk(x)]
    got = F.encode(x, name)
    want = ml_cast(name, x)
    bad = got != want
    assert not bad.any(), (name, x[bad][:8], got[bad][:8], want[bad][:8])


@pytest.mark.parametrize("name", list(ML))
def test_rne_float64_inputs_match_ml_dtypes(name):
    p64, _ = probes(name)
    x = np.concatenate([p64, specials()])
    if not F.get_format(name).has_nan:
        x = x[~np.isnan(x)]
    got = F.encode(x, name)
    if name == "fp16":
        with np.errstate(over="ignore"):
            want = x.astype(np.float16).view(np.uint16)  # numpy rounds float64 directly
    else:
        x32 = rto_f32(x)
        if name == "e8m0":
            keep = ~e8m0_ml_quirk(x32)
            x, x32, got = x[keep], x32[keep], got[keep]
        want = ml_cast(name, x32)
    bad = got != want
    assert not bad.any(), (name, x[bad][:8], got[bad][:8], want[bad][:8])


def test_ml_dtypes_double_rounding_is_not_reproduced():
    # 1.0625 is the e4m3 midpoint between 1 and 1.125; just above it rounds up.
    x = np.nextafter(1.0625, 2.0)
    assert F.round_to_format(x, "e4m3") == 1.125
    assert F.round_to_format(np.float32(x), "e4m3") == 1.0  # float32(x) is the tie itself
    assert F.encode(x, "e4m3") == ml_cast("e4m3", rto_f32(np.array([x])))[0]


def test_e8m0_edges_and_ml_dtypes_quirks():
    # ties (1.5 * 2^k) round up (every significand is odd), like ml_dtypes
    for k in (-127, -10, 0, 5, 126):
        assert F.round_to_format(1.5 * 2.0**k, "e8m0") == 2.0 ** (k + 1)
        assert F.round_to_format(np.nextafter(1.5 * 2.0**k, 0), "e8m0") == 2.0**k
        assert F.encode(np.float32(1.5 * 2.0**k), "e8m0") == ml_cast(
            "e8m0", np.float32(1.5 * 2.0**k))
    # below 2^-127: clamped to 2^-127 in every mode (no zero); ml_dtypes agrees for float32
    for v in (2.0**-128, 2.0**-140, 2.0**-149, 5e-324, 1e-300):
        for mode in MODES:
            assert F.encode(v, "e8m0", mode) == 0x00
    assert ml_cast("e8m0", np.float32(2.0**-149)) == 0x00
    # zero, negatives, -inf: NaN (ml_dtypes) or the lowest value with saturate
    for v in (0.0, -0.0, -1.0, -np.inf, -1e-300):
        assert F.encode(v, "e8m0") == 0xFF
        assert ml_cast("e8m0", np.float32(v)) == 0xFF
        assert F.encode(v, "e8m0", overflow="saturate") == 0x00
    assert F.encode(np.inf, "e8m0") == 0xFF
    assert F.encode(np.inf, "e8m0", overflow="saturate") == 0xFE
    assert F.encode(2.0**127 * 1.5, "e8m0") == 0xFF  # RNE overflow -> NaN (ml_dtypes)
    assert F.encode(2.0**127 * 1.5, "e8m0", "rz") == 0xFE
    # float32 subnormals just above 2^-127 round down to 2^-127 (code 0x00) in tcsim; ml_dtypes
    # rounded them up to 2^-126 before 0.7.0 and agrees with tcsim from 0.7.0
    for v in (1.1 * 2.0**-127, 1.4 * 2.0**-127):
        x = np.float32(v)
        assert F.encode(x, "e8m0") == 0x00
        assert ml_cast("e8m0", x) == (0x01 if ML_E8M0_ROUNDS_SUBNORMALS_UP else 0x00)
    assert not F.is_representable(0.0, "e8m0")
    assert F.is_representable(2.0**-127, "e8m0") and F.is_representable(2.0**127, "e8m0")


def test_fp32_rne_matches_numpy():
    p64, _ = probes("fp32")
    x = np.concatenate([p64, specials()])
    with np.errstate(over="ignore"):
        want = x.astype(np.float32).view(np.uint32)
    np.testing.assert_array_equal(F.encode(x, "fp32"), want)
    x32 = np.random.default_rng(3).integers(0, 2**32, 100000).astype(np.uint32)
    x32 = x32.view(np.float32)
    x32 = x32[~np.isnan(x32)]
    np.testing.assert_array_equal(F.encode(x32, "fp32"), x32.view(np.uint32))


# ---- every mode against the exact references -----------------------------------------------------
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("overflow", ["inf", "saturate"])
def test_all_modes_match_table_reference(name, overflow):
    p64, p32 = probes(name, both_signs=name != "e8m0")
    for x in (p64, p32):
        for mode in MODES:
            want = table_round(name, x.astype(np.float64), mode, overflow)
            got = F.round_to_format(x, name, mode, overflow)
            assert_same_values(got, want, f"{name} {mode} {overflow} {x.dtype}")
            if mode == "rne" and overflow == "inf" and name == "fp32":
                with np.errstate(over="ignore"):
                    assert_same_values(got, x.astype(np.float32), "fp32 numpy")


def _fraction_subset(name, n=700):
    p64, p32 = probes(name, both_signs=name != "e8m0")
    x = np.concatenate([p64, p32.astype(np.float64)])
    if x.size > n:
        x = np.random.default_rng(4).choice(x, n, replace=False)
    return x


@pytest.mark.parametrize("name", ALL)
def test_all_modes_match_fraction_reference(name):
    x = _fraction_subset(name, n=4000 if F.get_format(name).bits <= 8 else 700)
    for mode in MODES:
        for overflow in ("inf", "saturate"):
            got = F.round_to_format(x, name, mode, overflow)
            want = np.array([fraction_round(name, float(v), mode, overflow) for v in x])
            assert_same_values(got, want, f"{name} {mode} {overflow}")


@pytest.mark.parametrize("name", ALL)
def test_round_to_format_equals_decode_of_encode(name):
    p64, p32 = probes(name, both_signs=name != "e8m0")
    for x in (p64, p32):
        for mode in MODES:
            for overflow in ("inf", "saturate"):
                codes = F.encode(x, name, mode, overflow)
                assert_same_values(F.decode(codes, name),
                                   F.round_to_format(x, name, mode, overflow), name)


# ---- stochastic rounding -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["e4m3", "e5m2", "bf16", "fp16", "e2m1", "tf32", "e8m0"])
def test_stochastic_deterministic_and_neighbours(name):
    p64, _ = probes(name, both_signs=name != "e8m0")
    x = np.random.default_rng(5).choice(p64, min(p64.size, 20000), replace=False)
    a = F.encode(x, name, "stochastic", seed=123)
    np.testing.assert_array_equal(a, F.encode(x, name, "stochastic", seed=123))
    assert (a != F.encode(x, name, "stochastic", seed=124)).any()
    v = F.round_to_format(x, name, "stochastic", seed=123)
    assert_same_values(v, F.decode(a, name), name)  # same stream for both entry points
    lo = F.round_to_format(x, name, "rd")
    hi = F.round_to_format(x, name, "ru")
    ok = (bits(v) == bits(lo)) | (bits(v) == bits(hi)) | (np.isnan(v) & np.isnan(hi))
    ok |= (v == 0) & (lo == 0) | (v == 0) & (hi == 0)  # signed zeros
    assert ok.all(), x[~ok][:5]
    exact = F.is_representable(x, name)
    assert_same_values(v[exact], x[exact], name)


@pytest.mark.parametrize("name,x", [("e4m3", 1.0 + 0.3 * 0.125), ("e4m3", -3.3),
                                    ("bf16", 1.0 + 2**-9 + 2**-12), ("e2m1", 2.7),
                                    ("e4m3", 0.7 * 2.0**-9), ("fp16", 1e-6)])
def test_stochastic_is_unbiased(name, x):
    n = 200000
    xs = np.full(n, x)
    v = F.round_to_format(xs, name, "stochastic", seed=7, random_bits=16)
    lo, hi = F.round_to_format(x, name, "rd"), F.round_to_format(x, name, "ru")
    assert set(np.unique(v)) <= {lo, hi}
    p = (x - lo) / (hi - lo)
    # statistical tolerance: 6 sigma of the binomial count, plus the 2^-16 truncation of f
    tol = 6 * math.sqrt(p * (1 - p) / n) * (hi - lo) + 2.0**-16 * (hi - lo)
    assert abs(v.mean() - x) <= tol


def test_stochastic_compares_only_r_bits():
    # f = 0.3 of a step: with r = 2, D = floor(0.3 * 4) = 1, so P(up) = 1/4 exactly
    x = np.full(400000, 1.0 + 0.3 * 0.125)
    v = F.round_to_format(x, "e4m3", "stochastic", seed=11, random_bits=2)
    p_up = np.mean(v == 1.125)
    assert abs(p_up - 0.25) < 6 * math.sqrt(0.25 * 0.75 / x.size)
    # f = 1/4 exactly (2 bits): exact probability with r = 2 as well
    x = np.full(400000, 1.0 + 0.25 * 0.125)
    p_up = np.mean(F.round_to_format(x, "e4m3", "stochastic", seed=12, random_bits=2) == 1.125)
    assert abs(p_up - 0.25) < 6 * math.sqrt(0.25 * 0.75 / x.size)
    # f < 2^-r is never rounded up
    x = np.full(100000, 1.0 + 0.2 * 0.125)
    assert (F.round_to_format(x, "e4m3", "stochastic", seed=13, random_bits=2) == 1.0).all()


def test_stochastic_overflow_follows_policy():
    x = np.full(1000, 460.0)  # between max (448) and the NaN slot (480) of e4m3
    v = F.round_to_format(x, "e4m3", "stochastic", seed=1)
    assert set(np.unique(v[~np.isnan(v)])) == {448.0} and np.isnan(v).any()
    v = F.round_to_format(x, "e4m3", "stochastic", overflow="saturate", seed=1)
    assert (v == 448.0).all()
    v = F.round_to_format(np.full(1000, 61440.0), "e5m2", "stochastic", seed=1)
    assert set(np.unique(v)) == {57344.0, np.inf}


def test_stochastic_argument_errors():
    with pytest.raises(FormatError, match="seed"):
        F.encode(1.0, "e4m3", "stochastic")
    for rb in (0, 33, 2.5, True):
        with pytest.raises(FormatError, match="random_bits"):
            F.encode(1.0, "e4m3", "stochastic", seed=1, random_bits=rb)


# ---- overflow policies, specials -----------------------------------------------------------------
NAN = float("nan")
INF = float("inf")


@pytest.mark.parametrize("name,big,maxv,inf_result", [
    ("e4m3", 1000.0, 448.0, NAN), ("e5m2", 1e6, 57344.0, INF), ("e4m3fnuz", 1000.0, 240.0, NAN),
    ("e5m2fnuz", 1e6, 57344.0, NAN), ("fp16", 1e6, 65504.0, INF),
    ("bf16", 1e39, float(ml_dtypes.finfo(ml_dtypes.bfloat16).max), INF),
    ("e2m3", 100.0, 7.5, 7.5), ("e3m2", 100.0, 28.0, 28.0), ("e2m1", 100.0, 6.0, 6.0),
    ("tf32", 1e39, (2 - 2**-10) * 2.0**127, INF), ("fp32", 1e39, float(np.finfo(np.float32).max),
                                                   INF),
])
def test_overflow_policies(name, big, maxv, inf_result):
    def r(v, mode="rne", ov="inf"):
        return float(F.round_to_format(v, name, mode, ov))

    def same(a, b):
        return (math.isnan(a) and math.isnan(b)) or a == b

    for s in (1.0, -1.0):
        x = s * big
        assert same(r(x), s * inf_result)
        assert same(r(x, "rna"), s * inf_result)
        assert r(x, "rz") == s * maxv
        assert r(x, "rto") == s * maxv
        assert same(r(x, "ru"), s * inf_result if s > 0 else -maxv)
        assert same(r(x, "rd"), s * inf_result if s < 0 else maxv)
        for mode in MODES:
            assert r(x, mode, "saturate") == s * maxv
            assert r(s * INF, mode, "saturate") == s * maxv
            assert same(r(s * INF, mode), s * inf_result)
            assert r(s * maxv, mode) == s * maxv


def test_nan_and_inf_codes():
    nan = np.array([np.nan, -np.nan])
    assert list(F.encode(nan, "e4m3")) == [0x7F, 0xFF]
    assert list(F.encode(nan, "e5m2")) == [0x7E, 0xFE]
    assert list(F.encode(nan, "e4m3fnuz")) == [0x80, 0x80]
    assert list(F.encode(nan, "e5m2fnuz")) == [0x80, 0x80]
    assert list(F.encode(nan, "fp16")) == [0x7E00, 0xFE00]
    assert list(F.encode(nan, "bf16")) == [0x7FC0, 0xFFC0]
    assert list(F.encode(nan, "tf32")) == [0x7FC00000, 0xFFC00000]
    assert list(F.encode(nan, "fp32")) == [0x7FC00000, 0xFFC00000]
    assert list(F.encode(nan, "e8m0")) == [0xFF, 0xFF]
    assert list(F.encode(nan, "e4m3", overflow="saturate")) == [0x7F, 0xFF]  # NaN stays NaN
    inf = np.array([np.inf, -np.inf])
    assert list(F.encode(inf, "e5m2")) == [0x7C, 0xFC]
    assert list(F.encode(inf, "e5m2", overflow="saturate")) == [0x7B, 0xFB]
    assert list(F.encode(inf, "e4m3")) == [0x7F, 0xFF]
    assert list(F.encode(inf, "e4m3", "rz")) == [0x7F, 0xFF]  # Inf input is no overflow
    assert list(F.encode(inf, "e4m3", overflow="saturate")) == [0x7E, 0xFE]
    assert list(F.encode(inf, "e2m1")) == [0x7, 0xF]
    assert list(F.encode(inf, "tf32")) == [0x7F800000, 0xFF800000]
    # payload NaNs are canonicalised
    pay = np.array([0x7FF0000000000001, 0xFFF4000000000000], dtype=np.uint64).view(np.float64)
    assert list(F.encode(pay, "fp16")) == [0x7E00, 0xFE00]


def test_fnuz_has_no_negative_zero():
    for name in ("e4m3fnuz", "e5m2fnuz"):
        x = np.array([-0.0, -1e-300, -F.get_format(name).min_subnormal / 4])
        for mode in ("rne", "rz", "ru", "rna"):
            assert (F.encode(x, name, mode) == 0).all()
            assert not np.signbit(F.round_to_format(x, name, mode)).any()
        assert (ml_cast(name, x.astype(np.float32)) == 0).all()
        for mode in ("rd", "rto"):  # these move a tiny negative value away from zero
            assert F.round_to_format(-1e-300, name, mode) == -F.get_format(name).min_subnormal
        assert not F.is_representable(-0.0, name) and F.is_representable(0.0, name)
    assert F.encode(-0.0, "e4m3") == 0x80 and F.is_representable(-0.0, "e4m3")


def test_subnormal_boundaries():
    for name in ("e4m3", "e5m2", "fp16", "bf16", "e2m1", "e3m2", "tf32", "fp32"):
        f = F.get_format(name)
        t = f.min_subnormal
        assert F.round_to_format(t / 2, name) == 0.0  # tie -> even (zero)
        assert F.round_to_format(np.nextafter(t / 2, 1), name) == t
        assert F.round_to_format(t / 2, name, "rna") == t
        assert F.round_to_format(t / 4, name, "ru") == t
        assert F.round_to_format(-t / 4, name, "ru") == 0.0
        assert np.signbit(F.round_to_format(-t / 4, name, "ru"))
        assert F.round_to_format(t / 4, name, "rto") == t
        assert F.round_to_format(1.5 * t, name) == 2 * t


# ---- input handling and errors -------------------------------------------------------------------
def test_scalars_and_shapes():
    c = F.encode(1.0, "e4m3")
    assert isinstance(c, np.uint8) and c == 0x38
    assert isinstance(F.decode(0x38, "e4m3"), np.float64) and F.decode(0x38, "e4m3") == 1.0
    assert isinstance(F.round_to_format(np.float32(0.3), "bf16"), np.float64)
    x = np.linspace(-3, 3, 24).reshape(2, 3, 4)
    assert F.encode(x, "fp16").shape == (2, 3, 4) and F.encode(x, "fp16").dtype == np.uint16
    assert F.encode(x, "tf32").dtype == np.uint32 and F.encode(x, "e2m1").dtype == np.uint8
    xt = x.T  # non-contiguous input
    np.testing.assert_array_equal(F.encode(xt, "bf16"), F.encode(np.ascontiguousarray(xt), "bf16"))
    assert F.decode(F.encode(x, "e5m2"), "e5m2").shape == x.shape
    assert F.is_representable(np.array([1, 3, 17]), "e4m3").tolist() == [True, True, False]


def test_errors():
    with pytest.raises(FormatError, match="unknown format"):
        F.encode(1.0, "e9m9")
    with pytest.raises(FormatError, match="unknown format"):
        F.decode(1, "nope")
    for bad in (np.arange(3), np.ones(3, np.float16), np.ones(3, ml_dtypes.bfloat16), 1, [1, 2]):
        with pytest.raises(FormatError, match="float32 or float64"):
            F.encode(bad, "e4m3")
        with pytest.raises(FormatError, match="float32 or float64"):
            F.round_to_format(bad, "e4m3")
    for name in ("e2m1", "e2m3", "e3m2"):
        with pytest.raises(FormatError, match=f"x\\[1\\] is NaN, but {name} has no NaN"):
            F.encode(np.array([1.0, np.nan, np.nan]), name)
        with pytest.raises(FormatError, match="no NaN"):
            F.round_to_format(np.nan, name)
    with pytest.raises(FormatError, match="rounding mode"):
        F.encode(1.0, "e4m3", "nearest")
    with pytest.raises(FormatError, match="overflow policy"):
        F.encode(1.0, "e4m3", overflow="clip")
    with pytest.raises(FormatError, match="not a e4m3 code"):
        F.decode(256, "e4m3")
    with pytest.raises(FormatError, match="not a e2m1 code"):
        F.decode(np.array([1, 16], np.uint8), "e2m1")
    with pytest.raises(FormatError, match="not a tf32 code"):
        F.decode(np.uint32(0x3F800001), "tf32")
    with pytest.raises(FormatError, match="integers"):
        F.decode(np.array([1.0]), "e4m3")
    with pytest.raises(FormatError):
        F.decode(-1, "e4m3")
    with pytest.raises(FormatError):
        F.is_representable(np.array(["a"]), "e4m3")


def test_is_representable():
    f = "e4m3"
    x = np.array([0.0, -0.0, 1.0, 1.0625, 448.0, 480.0, np.inf, np.nan, 2.0**-9, 2.0**-10])
    assert F.is_representable(x, f).tolist() == [True, True, True, False, True, False, False,
                                                  True, True, False]
    assert F.is_representable(np.array([np.inf, -np.inf, np.nan]), "e5m2").all()
    assert not F.is_representable(np.nan, "e2m1")
    assert not F.is_representable(np.inf, "e2m1")
    assert F.is_representable(np.float32(0.3), "fp32")
    assert not F.is_representable(0.3, "fp32")
    assert F.is_representable(np.float32(1 + 2**-10), "tf32")
    assert not F.is_representable(np.float32(1 + 2**-11), "tf32")
    assert F.is_representable(np.array([2**60], np.int64), "bf16")
    assert not F.is_representable(np.array([2**63 - 1], np.int64), "fp32")


def test_check_representable_message():
    a = np.zeros((4, 20), dtype=np.float32)
    a[3, 17] = 0.3
    a[2:, :5] = 0.1
    with pytest.raises(FormatError) as ei:
        F.check_representable(a, "e4m3", what="a")
    msg = str(ei.value)
    assert msg.startswith("a is not exactly representable in e4m3: a[2, 0] = 0.1 ")
    assert "(and 10 more)" in msg
    b = np.zeros((4, 20), dtype=np.float32)
    b[3, 17] = 0.3
    with pytest.raises(FormatError, match=re.escape("b[3, 17] = 0.3")) as ei:
        F.check_representable(b, "e4m3", what="b")
    assert "more" not in str(ei.value)
    with pytest.raises(FormatError, match=re.escape("x = nan")):
        F.check_representable(np.nan, "e2m1")
    with pytest.raises(FormatError, match=re.escape("w[1] = -0.0")):
        F.check_representable(np.array([0.0, -0.0]), "e4m3fnuz", what="w")
    F.check_representable(F.decode(all_codes(F.e4m3fn), "e4m3"), "e4m3")  # all fine: no raise


def test_jitted_helpers_callable_from_other_kernels():
    from numba import njit

    from tcsim._kernels import codec
    from tcsim.overflow import OVERFLOW_IEEE

    @njit
    def kernel(xs, fp, mode):
        out = np.empty(xs.size)
        for i in range(xs.size):
            out[i] = codec.round_value(xs[i], fp, mode, OVERFLOW_IEEE, 0, 1)
        return out

    x = np.array([1.0625, 1.0 + 2**-4 + 2**-20, -500.0, 1e-9])
    got = kernel(x, F.format_params("e4m3"), F.rounding_code("rne"))
    assert_same_values(got, F.round_to_format(x, "e4m3"), "jit")
    assert F.format_params("e8m0")[codec.P_EMAX] == 127


# ---- random values against the exact references (hypothesis) -------------------------------------
@st.composite
def format_values(draw):
    """A format and up to 12 finite float64 values over its whole range: random significands,
    and points on the format's quarter-step lattice (grid points, ties) nudged by one float64
    step, across the subnormals, the normal binades and past the largest value; now and then
    one at the ends of float64."""
    name = draw(st.sampled_from(ALL))
    f = F.get_format(name)
    m = f.mantissa_bits
    xs = []
    for _ in range(draw(st.integers(1, 12))):
        e = draw(st.integers(f.emin - m - 3, f.emax + 2))
        if draw(st.integers(0, 9)) == 0:    # the ends of float64
            v = draw(st.sampled_from([5e-324, 2.0 ** -1022, 1e-300, 1e300, 2.0 ** 1023,
                                      1.7976931348623157e308]))
        elif draw(st.booleans()):
            k = draw(st.integers(1, (8 << m) - 1))
            v = math.ldexp(k, e - m - 2)
            v = draw(st.sampled_from([v, np.nextafter(v, 0.0), np.nextafter(v, np.inf)]))
        else:
            v = math.ldexp(draw(st.integers(1 << 52, (1 << 53) - 1)), e - 52)
        xs.append(float(v) if name == "e8m0" else draw(st.sampled_from([1.0, -1.0])) * v)
    return name, np.array(xs)


@settings(max_examples=300, deadline=None)
@given(format_values())
def test_encode_equals_fraction_rounding_on_random_values(case):
    """decode(encode(x)) == the exact Fraction rounding, every deterministic mode and overflow
    policy (decode is checked against ml_dtypes on every code above)."""
    name, x = case
    for mode in MODES:
        for overflow in F.OVERFLOW_POLICIES:
            got = F.decode(F.encode(x, name, mode, overflow), name)
            want = np.array([fraction_round(name, float(v), mode, overflow) for v in x])
            assert_same_values(got, want, f"{name} {mode} {overflow} {x.tolist()}")


def fraction_sr(name, x: float, rnd: int, rbits: int, overflow: str) -> float:
    """Exact stochastic rounding of a finite x with the random integer rnd (the hardware's
    convention): the magnitude rounds up when D + rnd >= 2^rbits, D = the first rbits
    discarded bits of |x| on the format's grid."""
    f = F.get_format(name)
    neg = math.copysign(1.0, x) < 0
    a = Fraction(abs(x))
    m = f.mantissa_bits
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    ulp = Fraction(2) ** (max(e, f.emin) - m)
    t = a / ulp
    q = math.floor(t)
    d = math.floor((t - q) * 2 ** rbits)
    v = (q + (d + rnd >= 2 ** rbits)) * ulp
    if not f.has_subnormals:
        v = max(v, Fraction(2) ** f.emin)
    res = overflow_value(f, "stochastic", overflow, neg) if v > Fraction(f.max_finite) else float(v)
    if res == 0 and f.nan_style == "fnuz":
        return 0.0
    return -res if neg else res


@settings(max_examples=300, deadline=None)
@given(format_values(), st.integers(1, 32), st.randoms(use_true_random=False))
def test_stochastic_codec_equals_fraction_rounding_on_random_values(case, rbits, rng):
    """The codec's stochastic rounding with given random integers (codec.round_value) against
    the exact definition, including the random integers 0 and 2^r - 1 at the edges."""
    from tcsim._kernels import codec

    name, x = case
    fp = F.format_params(name)
    for v in x:
        rnd = rng.choice([0, (1 << rbits) - 1, rng.randrange(1 << rbits)])
        for overflow in F.OVERFLOW_POLICIES:
            got = codec.round_value(float(v), fp, F.rounding_code("stochastic"),
                                    F.overflow_code(overflow), rnd, rbits)
            want = fraction_sr(name, float(v), rnd, rbits, overflow)
            assert_same_values(got, want, f"{name} sr {overflow} {v!r} rnd={rnd} r={rbits}")


def test_no_submodule_shadows_a_package_name():
    """Importing a submodule sets it as an attribute of the package: a module named like a
    format (tcsim.formats.bf16) would replace the FloatFormat ``tcsim.formats.bf16``."""
    import importlib
    import pkgutil
    subs = [m.name for m in pkgutil.iter_modules(F.__path__)]
    for name in subs:
        importlib.import_module(f"tcsim.formats.{name}")
    clash = sorted(set(subs) & set(F.__all__))
    assert not clash, f"submodules named like public names: {clash}"
    assert F.bf16 is catalog.bf16 and F.fp16 is catalog.fp16
