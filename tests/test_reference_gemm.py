"""Tests of the exact GEMM oracle (tcsim.reference_gemm): promotion, scaling epilogues, rounding.

Hand-worked cases carry their working in the comments (u = 2^-23, the fp32 ulp in [1, 2)); the
random checks compare against independent float arithmetic: numpy's IEEE float32 operations, an
FMA emulated with float64 plus an error-free TwoSum, numpy's float64 -> float32 cast and
ml_dtypes' float32 -> bfloat16 cast.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from tcsim.datapath import Datapath
from tcsim.errors import FormatError, ShapeError
from tcsim.recipe import Recipe, Scaling
from tcsim.reference import dot
from tcsim.reference_gemm import _add, _fma, _mul, bf16_round, fp32_round, gemm

# H100 FP8 wgmma path: n = 32, f = 13, RZ to 14 significant bits, truncated terms.
H100 = Datapath(block_size=32, fraction_bits=13, output_precision=14, output_rounding="rz")
# An ideal unit: exact sum, one IEEE RNE rounding.
EXACT = Datapath(block_size=None, fraction_bits=None, output_rounding="rne", zero_sign="ieee")

EPILOGUES = ("deepgemm", "1d1d", "2d1d", "2d2d", "mul_add")
U = 2.0 ** -23
FP32_MAX = float(np.finfo(np.float32).max)


def same(x: float, y: float) -> bool:
    """Equal as values, with NaN == NaN and the sign of zero compared."""
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)


def f32_bits(x) -> int:
    return int(np.array([x], dtype=np.float32).view(np.uint32)[0])


def e4m3(x) -> np.ndarray:
    """Round float values to E4M3 values (held as float64)."""
    return np.asarray(x, dtype=np.float32).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)


def tensor_recipe(**kw) -> Recipe:
    """Per-tensor scales (any promotion interval is allowed)."""
    return Recipe(a_scaling=Scaling(), b_scaling=Scaling(), **kw)


def unit_scales(M, N, nK=1):
    return np.ones((M, nK), dtype=np.float32), np.ones((nK, N), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Independent float-only arithmetic for the random checks
# ---------------------------------------------------------------------------------------------
def ref_mul(a: float, b: float) -> float:
    with np.errstate(all="ignore"):
        return float(np.float32(a) * np.float32(b))  # numpy float32 multiply: IEEE RNE


def ref_add(a: float, b: float) -> float:
    with np.errstate(all="ignore"):
        return float(np.float32(a) + np.float32(b))


def ref_fma(a: float, b: float, c: float) -> float:
    """RN32(a*b + c) for fp32 a, b, c without Fractions: a*b is exact in float64, TwoSum gives
    s + e == a*b + c exactly, and e only matters when s is a float32 midpoint (a double-rounding
    tie). Not valid within half an ulp of the fp32 overflow threshold (not reached here)."""
    with np.errstate(all="ignore"):
        p = a * b
        s = p + c
        if not math.isfinite(s):
            return s
        bv = s - p
        e = (p - (s - bv)) + (c - bv)
        r = np.float32(s)
        if e == 0 or not math.isfinite(float(r)):
            return float(r)
        if float(r) <= s:
            lo, hi = r, np.nextafter(r, np.float32(np.inf))
        else:
            lo, hi = np.nextafter(r, np.float32(-np.inf)), r
        if s - float(lo) == float(hi) - s:  # a tie in float64: the discarded e decides
            return float(hi) if e > 0 else float(lo)
        return float(r)


def ref_epilogue(kind, acc, p, sa, sb):
    if kind in ("deepgemm", "2d2d"):
        return ref_fma(ref_mul(sa, sb), p, acc)
    if kind == "1d1d":
        return ref_fma(ref_mul(p, sa), sb, acc)
    if kind == "2d1d":
        return ref_fma(ref_mul(p, sb), sa, acc)
    return ref_add(acc, ref_mul(ref_mul(p, sa), sb))


def ref_gemm(a, sa, b, sb, recipe, dp) -> np.ndarray:
    """A hand-written loop: dot per chunk from C = 0, then the epilogue in float arithmetic."""
    M, K = a.shape
    N = b.shape[1]
    G = K // sa.shape[1]
    P = recipe.promotion_interval or K
    out = np.zeros((M, N), dtype=np.float32)
    for i in range(M):
        for j in range(N):
            acc = 0.0
            for k0 in range(0, K, P):
                k1 = min(k0 + P, K)
                p = dot(a[i, k0:k1], b[k0:k1, j], 0.0, dp, recipe.a_format, recipe.b_format)
                g = k0 // G
                acc = ref_epilogue(recipe.epilogue, acc, p, float(sa[i, g]), float(sb[g, j]))
            out[i, j] = acc
    return out


def random_fp32(rng: random.Random, lo: int, hi: int) -> float:
    """A random fp32 value with a random sign and exponent in [lo, hi]."""
    m = rng.getrandbits(24) | (1 << 23)
    x = float(np.float32(m * 2.0 ** (rng.randint(lo, hi) - 23)))
    return -x if rng.random() < 0.5 else x


# ---------------------------------------------------------------------------------------------
# Hand-worked epilogues: the orders of operations give different bits
# ---------------------------------------------------------------------------------------------
# sa = 1 + 9u, sb = 3/2, one product per chunk (promotion_interval 1), per-tensor scales.
SA = 1 + 9 * U
SB = 1.5


def run_chunks(ps, epilogue, output="fp32", dp=H100):
    """One output: chunk k is the single product ps[k] * 1."""
    a = np.array([ps], dtype=np.float64)
    b = np.ones((len(ps), 1))
    r = tensor_recipe(promotion_interval=1, epilogue=epilogue, output=output)
    return gemm(a, np.array([[SA]], np.float32), b, np.array([[SB]], np.float32), r, dp)[0, 0]


# One chunk, p = 5/4:
#   deepgemm/2d2d: s = RN(sa*sb) = RN(3/2 + 13.5u) = 3/2 + 14u (tie, to even);
#                  RN(s*p) = RN(15/8 + 17.5u) = 15/8 + 18u (tie, to even)
#   1d1d:          t = RN(p*sa) = RN(5/4 + 11.25u) = 5/4 + 11u; RN(t*sb) = RN(15/8 + 16.5u)
#                  = 15/8 + 16u (tie, to even)
#   2d1d:          t = RN(p*sb) = 15/8 (exact); RN(t*sa) = RN(15/8 + 16.875u) = 15/8 + 17u
#   mul_add:       RN(RN(p*sa)*sb) + 0 = 15/8 + 16u (as 1d1d: acc is still 0)
ONE_CHUNK = {"deepgemm": 1.875 + 18 * U, "2d2d": 1.875 + 18 * U, "1d1d": 1.875 + 16 * U,
             "2d1d": 1.875 + 17 * U, "mul_add": 1.875 + 16 * U}
# Two chunks, p = 5/4 then -5/4 (acc1 from the table above):
#   deepgemm/2d2d: RN(s*(-5/4) + acc1) = -(15/8 + 17.5u) + (15/8 + 18u) = +0.5u = 2^-24 (exact)
#   1d1d:          t = -(5/4 + 11u); t*sb + acc1 = -(15/8 + 16.5u) + 15/8 + 16u = -2^-24 (exact)
#   2d1d:          t = -15/8; t*sa + acc1 = -(15/8 + 16.875u) + 15/8 + 17u = 0.125u = 2^-26
#   mul_add:       t = RN(-(15/8 + 16.5u)) = -(15/8 + 16u); acc1 + t = 0 exactly: +0
TWO_CHUNKS = {"deepgemm": 2.0 ** -24, "2d2d": 2.0 ** -24, "1d1d": -2.0 ** -24,
              "2d1d": 2.0 ** -26, "mul_add": 0.0}


@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_hand_one_chunk(epilogue):
    assert ONE_CHUNK[epilogue] == float(np.float32(ONE_CHUNK[epilogue]))  # fp32 values
    d = run_chunks([1.25], epilogue)
    assert d.dtype == np.float32
    assert f32_bits(d) == f32_bits(ONE_CHUNK[epilogue])


@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_hand_two_chunks(epilogue):
    d = run_chunks([1.25, -1.25], epilogue)
    assert f32_bits(d) == f32_bits(TWO_CHUNKS[epilogue])
    # the exact datapath gives the same partials (each is one exact product)
    assert f32_bits(run_chunks([1.25, -1.25], epilogue, dp=EXACT)) == f32_bits(d)


def test_hand_orders_really_differ():
    assert len({ONE_CHUNK[e] for e in ("deepgemm", "1d1d", "2d1d")}) == 3
    assert len({TWO_CHUNKS[e] for e in ("deepgemm", "1d1d", "2d1d", "mul_add")}) == 4


@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_hand_bf16_output(epilogue):
    # every two-chunk result is a power of two (or 0): bf16 holds it exactly
    d = run_chunks([1.25, -1.25], epilogue, output="bf16")
    assert d.dtype == ml_dtypes.bfloat16
    assert same(float(d), TWO_CHUNKS[epilogue])
    # one chunk: 15/8 + k*u rounds to 15/8 in bf16 (8 significant bits)
    d = run_chunks([1.25], epilogue, output="bf16")
    assert int(np.array([d]).view(np.uint16)[0]) == 0x3FF0  # 1.875


# Underflow and signed zeros: p = -1, sa = sb = 2^-100.
#   deepgemm/2d2d: s = RN(2^-200) = +0; RN(+0 * -1 + +0) = -0 + +0 = +0
#   1d1d/2d1d:     t = -2^-100 (exact); RN(-2^-200 + +0): a nonzero exact value rounding to
#                  zero keeps its sign: -0
#   mul_add:       t = RN(RN(-2^-100) * 2^-100) = -0; +0 + -0 = +0
@pytest.mark.parametrize("epilogue,bits", [("deepgemm", 0), ("2d2d", 0), ("1d1d", 0x80000000),
                                           ("2d1d", 0x80000000), ("mul_add", 0)])
def test_hand_underflow_signed_zero(epilogue, bits):
    s = np.array([[2.0 ** -100]], np.float32)
    r = tensor_recipe(promotion_interval=None, epilogue=epilogue)
    d = gemm(np.array([[-1.0]]), s, np.array([[1.0]]), s, r, H100)
    assert f32_bits(d[0, 0]) == bits


# Overflow in the scale product: p = 0, sa = sb = 2^100.
#   deepgemm/2d2d: s = RN(2^200) = Inf; Inf * 0 = NaN
#   1d1d/2d1d/mul_add: t = 0 * 2^100 = 0, and the rest stays +0
@pytest.mark.parametrize("epilogue,nan", [("deepgemm", True), ("2d2d", True), ("1d1d", False),
                                          ("2d1d", False), ("mul_add", False)])
def test_hand_scale_overflow(epilogue, nan):
    s = np.array([[2.0 ** 100]], np.float32)
    r = tensor_recipe(promotion_interval=None, epilogue=epilogue)
    d = gemm(np.array([[0.0]]), s, np.array([[1.0]]), s, r, H100)
    assert f32_bits(d[0, 0]) == (0x7FFFFFFF if nan else 0)
    # p = 448: every order overflows to +Inf (1d1d: RN(448 * 2^100) * 2^100 > fp32 max)
    d = gemm(np.array([[448.0]]), s, np.array([[1.0]]), s, r, H100)
    assert float(d[0, 0]) == math.inf


def test_special_values_nan_canonical():
    # e5m2 Inf in A: p = Inf; a zero scale gives Inf * 0 = NaN in every epilogue
    a = np.array([[math.inf, 1.0]])
    b = np.array([[1.0], [1.0]])
    for ep in EPILOGUES:
        for out, bits in (("fp32", 0x7FFFFFFF), ("bf16", 0x7FFF)):
            r = tensor_recipe(a_format="e5m2", b_format="e5m2", promotion_interval=None,
                              epilogue=ep, output=out)
            d = gemm(a, np.array([[0.0]], np.float32), b, np.array([[1.0]], np.float32), r, H100)
            assert int(d.view(np.uint32 if out == "fp32" else np.uint16)[0, 0]) == bits
    # +Inf in the first chunk, -Inf in the second: Inf - Inf = NaN
    a = np.array([[math.inf, -math.inf]])
    r = tensor_recipe(a_format="e5m2", b_format="e5m2", promotion_interval=1)
    d = gemm(a, np.ones((1, 1), np.float32), b, np.ones((1, 1), np.float32), r, H100)
    assert f32_bits(d[0, 0]) == 0x7FFFFFFF
    # Inf in one chunk only: +Inf
    a = np.array([[math.inf, -2.0]])
    d = gemm(a, np.ones((1, 1), np.float32), b, np.ones((1, 1), np.float32), r, H100)
    assert float(d[0, 0]) == math.inf


# ---------------------------------------------------------------------------------------------
# fp32_round and bf16_round
# ---------------------------------------------------------------------------------------------
def test_fp32_round_matches_numpy_cast():
    rng = random.Random(1)
    for _ in range(3000):
        # float64 values (exact Fractions) spanning subnormal, normal and overflowing fp32
        x = random.Random(rng.random()).uniform(1, 2) * 2.0 ** rng.randint(-160, 130)
        x = -x if rng.random() < 0.5 else x
        with np.errstate(over="ignore"):
            want = float(np.float64(x).astype(np.float32))
        assert same(fp32_round(Fraction(x)), want), x
    # float32 midpoints (exact in float64): ties to even
    for _ in range(1000):
        y = random_fp32(rng, -149, 127)
        z = float(np.nextafter(np.float32(y), np.float32(np.inf)))
        if math.isinf(z):
            continue
        mid = (y + z) / 2
        assert same(fp32_round(Fraction(mid)), float(np.float64(mid).astype(np.float32)))


@pytest.mark.parametrize("q,want", [
    (Fraction(0), 0.0),
    (1 + Fraction(1, 2 ** 24), 1.0),                          # tie -> even (down)
    (1 + Fraction(3, 2 ** 24), 1 + 2.0 ** -22),               # tie -> even (up)
    (1 + Fraction(1, 2 ** 24) + Fraction(1, 2 ** 60), 1 + 2.0 ** -23),  # just above the tie
    (1 + Fraction(1, 2 ** 24) - Fraction(1, 2 ** 60), 1.0),   # just below the tie
    (-(1 + Fraction(3, 2 ** 24)), -(1 + 2.0 ** -22)),
    (Fraction(1, 3), float(np.float32(1 / 3))),
    (Fraction(1, 2 ** 149), 2.0 ** -149),                     # smallest subnormal
    (Fraction(1, 2 ** 150), 0.0),                             # tie with 0 -> +0
    (Fraction(-1, 2 ** 150), -0.0),                           # ... keeps its sign
    (Fraction(1, 2 ** 150) + Fraction(1, 2 ** 400), 2.0 ** -149),
    (Fraction(3, 2 ** 150), 2.0 ** -148),                     # 1.5 * 2^-149 -> 2 * 2^-149
    (Fraction(5, 2 ** 150), 2.0 ** -148),                     # 2.5 * 2^-149 -> 2 * 2^-149
    (Fraction(1, 2 ** 126) - Fraction(1, 2 ** 150), 2.0 ** -126),  # top subnormal tie -> even
    (Fraction(1, 2 ** 126) - Fraction(3, 2 ** 151), 2.0 ** -126 - 2.0 ** -149),
    (Fraction(FP32_MAX), FP32_MAX),
    (Fraction(FP32_MAX) + 2 ** 103 - Fraction(1, 2 ** 10), FP32_MAX),  # below half an ulp
    (Fraction(FP32_MAX) + 2 ** 103, math.inf),                # the tie rounds to 2^128: Inf
    (Fraction(2) ** 128, math.inf),
    (-(Fraction(2) ** 200), -math.inf),
])
def test_fp32_round_hand(q, want):
    assert same(fp32_round(q), want)


def test_bf16_round_matches_ml_dtypes():
    rng = np.random.default_rng(2)
    bits = rng.integers(0, 2 ** 32, size=20000, dtype=np.uint64).astype(np.uint32)
    special = np.array([0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F7FFFFF,
                        0x7F7F8000, 0x7F7F7FFF, 0x00008000, 0x00018000, 0x00000001, 0x3F808000,
                        0x3F818000, 0x807FFFFF], dtype=np.uint32)
    x = np.concatenate([bits, special]).view(np.float32)
    with np.errstate(invalid="ignore"):
        want = x.astype(ml_dtypes.bfloat16)
    for xi, wi in zip(x.tolist(), want.tolist()):
        assert same(bf16_round(xi), float(wi)), xi


@pytest.mark.parametrize("x,want", [
    (1 + 2.0 ** -8, 1.0),                         # tie -> even (down)
    (1 + 3 * 2.0 ** -8, 1 + 2.0 ** -6),           # tie -> even (up)
    (1 + 2.0 ** -8 + 2.0 ** -23, 1 + 2.0 ** -7),  # above the tie
    (-0.0, -0.0),
    (2.0 ** -133, 2.0 ** -133),                   # smallest bf16 subnormal
    (2.0 ** -134, 0.0),                           # tie with 0
    (-3 * 2.0 ** -134, -2.0 ** -132),             # subnormal tie -> even
    (FP32_MAX, math.inf),                         # above bf16 max + half an ulp
    ((2 - 2.0 ** -8) * 2.0 ** 127, math.inf),     # exactly the tie above bf16 max -> Inf
    ((2 - 2.0 ** -8 - 2.0 ** -23) * 2.0 ** 127, (2 - 2.0 ** -7) * 2.0 ** 127),
    (-math.inf, -math.inf),
])
def test_bf16_round_hand(x, want):
    assert same(bf16_round(x), want)


def test_bf16_round_nan_and_non_fp32():
    assert math.isnan(bf16_round(math.nan))
    with pytest.raises(FormatError):
        bf16_round(1 + 2.0 ** -30)


# ---------------------------------------------------------------------------------------------
# The IEEE binary32 operations against float-only emulations
# ---------------------------------------------------------------------------------------------
def test_ops_match_float_emulation():
    rng = random.Random(3)
    for _ in range(4000):
        lo, hi = rng.choice([(-3, 3), (-80, -40), (-149, -120), (40, 64)])
        a, b = random_fp32(rng, lo, hi), random_fp32(rng, lo, hi)
        prod = ref_mul(a, b)
        # c near -a*b (cancellation), or of a random size
        c = rng.choice([-prod, float(np.float32(-prod * (1 + rng.uniform(-1e-6, 1e-6)))),
                        random_fp32(rng, 2 * lo, min(2 * hi, 127))])
        if not math.isfinite(c):
            continue
        assert same(_mul(a, b), prod), (a, b)
        assert same(_add(a, c), ref_add(a, c)), (a, c)
        assert same(_fma(a, b, c), ref_fma(a, b, c)), (a, b, c)


def test_ops_signed_zeros_and_specials():
    assert same(_add(0.0, -0.0), 0.0) and same(_add(-0.0, -0.0), -0.0)
    assert same(_add(1.5, -1.5), 0.0)
    assert same(_fma(-0.0, 1.0, -0.0), -0.0) and same(_fma(-0.0, -1.0, -0.0), 0.0)
    assert same(_fma(2.0, 3.0, -6.0), 0.0)
    assert same(_fma(-(2.0 ** -100), 2.0 ** -100, 0.0), -0.0)
    assert same(_mul(-0.0, 5.0), -0.0)
    assert math.isnan(_mul(math.inf, 0.0)) and math.isnan(_fma(math.inf, 1.0, -math.inf))
    assert math.isnan(_fma(math.inf, -0.0, 1.0)) and math.isnan(_add(math.nan, 1.0))
    assert _fma(1.0, 2.0, math.inf) == math.inf and _fma(-math.inf, 2.0, 1.0) == -math.inf
    assert _fma(FP32_MAX, 2.0, 0.0) == math.inf
    # one rounding: x*x = 1 + 2^-11 + 2^-24 is a tie (to even: 1 + 2^-11), but with + 2^-48 the
    # exact value is above the tie and rounds up; two roundings would give 1 + 2^-11
    x = 1 + 2.0 ** -12
    assert _fma(x, x, 0.0) == 1 + 2.0 ** -11
    assert _fma(x, x, 2.0 ** -48) == 1 + 2.0 ** -11 + 2.0 ** -23
    assert _add(_mul(x, x), 2.0 ** -48) == 1 + 2.0 ** -11
    # exact cancellation of the product's low part: (1 + u)^2 - (1 + 2u) = u^2 = 2^-46
    assert _fma(1 + U, 1 + U, -(1 + 2 * U)) == 2.0 ** -46


# ---------------------------------------------------------------------------------------------
# GEMM properties
# ---------------------------------------------------------------------------------------------
def test_exact_datapath_fast_accumulation_is_correctly_rounded_sum():
    rng = np.random.default_rng(4)
    for K in (1, 7, 64, 200):
        M, N = 3, 4
        a = e4m3(rng.standard_normal((M, K)) * 4)
        b = e4m3(rng.standard_normal((K, N)) * 2.0 ** rng.integers(-6, 6, size=(K, N)))
        sa, sb = unit_scales(M, N)
        for ep in EPILOGUES:
            r = tensor_recipe(promotion_interval=None, epilogue=ep)
            d = gemm(a, sa, b, sb, r, EXACT)
            for i in range(M):
                for j in range(N):
                    exact = sum((Fraction(a[i, k]) * Fraction(b[k, j]) for k in range(K)),
                                Fraction(0))
                    assert same(float(d[i, j]), fp32_round(exact)), (K, ep, i, j)


def test_exact_datapath_power_of_two_scales():
    # scales 2^e: every order is exact except the final rounding, RN(2^(ea+eb) * sum)
    rng = np.random.default_rng(5)
    M, N, K = 2, 3, 48
    a = e4m3(rng.standard_normal((M, K)))
    b = e4m3(rng.standard_normal((K, N)))
    sa = (2.0 ** rng.integers(-10, 10, size=(M, 1))).astype(np.float32)
    sb = (2.0 ** rng.integers(-10, 10, size=(1, N))).astype(np.float32)
    for ep in EPILOGUES:
        d = gemm(a, sa, b, sb, tensor_recipe(promotion_interval=None, epilogue=ep), EXACT)
        for i in range(M):
            for j in range(N):
                exact = sum((Fraction(a[i, k]) * Fraction(b[k, j]) for k in range(K)),
                            Fraction(0)) * Fraction(float(sa[i, 0])) * Fraction(float(sb[0, j]))
                assert same(float(d[i, j]), fp32_round(exact))


@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_promotion_every_block_is_fp32_accumulation_of_blocks(epilogue):
    rng = np.random.default_rng(6)
    M, N, K = 2, 3, 256
    a = e4m3(rng.uniform(0, 1, (M, K)))
    b = e4m3(rng.uniform(-1, 1, (K, N)))
    sa, sb = unit_scales(M, N)
    r = tensor_recipe(promotion_interval=H100.block_size, epilogue=epilogue)
    d = gemm(a, sa, b, sb, r, H100)
    for i in range(M):
        for j in range(N):
            acc = np.float32(0)
            for k0 in range(0, K, 32):
                p = dot(a[i, k0:k0 + 32], b[k0:k0 + 32, j], 0.0, H100, "e4m3", "e4m3")
                acc = np.float32(acc + np.float32(p))  # IEEE fp32 add
            assert f32_bits(d[i, j]) == f32_bits(acc)


@pytest.mark.parametrize("epilogue", EPILOGUES)
def test_group_scales_match_float_loop(epilogue):
    # DeepSeek-V3-like: 1xG activation groups, GxG weight blocks (G = 64), promotion every 32,
    # random fp32 scales; the loop does the epilogue in float arithmetic (numpy fp32 + TwoSum FMA)
    rng = np.random.default_rng(7)
    M, N, K, G = 3, 2, 192, 64
    a = e4m3(rng.standard_normal((M, K)) * 100)
    b = e4m3(rng.standard_normal((K, N)))
    sa = (rng.uniform(0.5, 2, (M, K // G)) / 448).astype(np.float32)
    sb = (rng.uniform(0.5, 2, (K // G, N)) / 448).astype(np.float32)
    r = Recipe(a_scaling=Scaling(granularity="group", group_size=G),
               b_scaling=Scaling(granularity="block", group_size=G), promotion_interval=32,
               epilogue=epilogue)
    d = gemm(a, sa, b, sb, r, H100)
    want = ref_gemm(a, sa, b, sb, r, H100)
    assert d.tobytes() == want.tobytes()
    # bf16 output: the RNE of the fp32 result
    d16 = gemm(a, sa, b, sb, r.model_copy(update={"output": "bf16"}), H100)
    assert d16.dtype == ml_dtypes.bfloat16
    assert d16.tobytes() == want.astype(ml_dtypes.bfloat16).tobytes()


def test_short_last_chunk():
    # K = 10, promotion every 4: chunks [0,4), [4,8), [8,10)
    rng = np.random.default_rng(8)
    a = e4m3(rng.standard_normal((2, 10)))
    b = e4m3(rng.standard_normal((10, 2)))
    sa = np.array([[0.75], [1.5]], np.float32)
    sb = np.array([[1 / 3, 3.0]], np.float32)
    for ep in EPILOGUES:
        r = tensor_recipe(promotion_interval=4, epilogue=ep)
        assert gemm(a, sa, b, sb, r, H100).tobytes() == ref_gemm(a, sa, b, sb, r, H100).tobytes()


def test_fast_accumulation_loses_more_than_promotion():
    # long K of positive values: the truncating 14-bit accumulator drifts low without promotion
    rng = np.random.default_rng(9)
    M, N, K = 2, 2, 512
    a = e4m3(rng.uniform(0, 1, (M, K)))
    b = e4m3(rng.uniform(0, 1, (K, N)))
    sa, sb = unit_scales(M, N)
    fast = gemm(a, sa, b, sb, tensor_recipe(promotion_interval=None), H100)
    split = gemm(a, sa, b, sb, tensor_recipe(promotion_interval=128), H100)
    for i in range(M):
        for j in range(N):
            exact = sum(Fraction(a[i, k]) * Fraction(b[k, j]) for k in range(K))
            err_fast = abs(Fraction(float(fast[i, j])) - exact) / exact
            err_split = abs(Fraction(float(split[i, j])) - exact) / exact
            assert err_fast > 2 * err_split
            assert float(fast[i, j]) < float(exact)  # truncation: biased toward zero
            assert err_fast > Fraction(1, 2 ** 14)


def test_k_zero_and_output_types():
    r = tensor_recipe(promotion_interval=None)
    d = gemm(np.zeros((2, 0)), np.ones((2, 1), np.float32), np.zeros((0, 3)),
             np.ones((1, 3), np.float32), r, H100)
    assert d.shape == (2, 3) and d.dtype == np.float32 and not d.view(np.uint32).any()


def test_errors():
    a, b = np.ones((1, 8)), np.ones((8, 1))
    sa2, sb2 = unit_scales(1, 1, nK=2)  # two groups of 4
    # promotion every 3 with groups of 4: the chunk [3, 6) straddles two groups
    with pytest.raises(ShapeError, match="straddles"):
        gemm(a, sa2, b, sb2, tensor_recipe(promotion_interval=3), H100)
    # fast accumulation over two groups
    with pytest.raises(ShapeError, match="straddles"):
        gemm(a, sa2, b, sb2, tensor_recipe(promotion_interval=None), H100)
    # 3 groups do not divide K = 8
    sa3, sb3 = unit_scales(1, 1, nK=3)
    with pytest.raises(ShapeError):
        gemm(a, sa3, b, sb3, tensor_recipe(promotion_interval=1), H100)
    with pytest.raises(ShapeError):
        gemm(a, sa2, b, np.ones((1, 1), np.float32), tensor_recipe(promotion_interval=4), H100)
    with pytest.raises(ShapeError):
        gemm(a, sa2, np.ones((7, 1)), sb2, tensor_recipe(promotion_interval=4), H100)
    # a scale that is not an fp32 value; an input E4M3 cannot hold
    with pytest.raises(FormatError):
        gemm(a, np.array([[1 + 2.0 ** -30]]), b, np.ones((1, 1)), tensor_recipe(), H100)
    with pytest.raises(FormatError):
        gemm(a * 1.0625, np.ones((1, 1)), b, np.ones((1, 1)), tensor_recipe(), H100)
