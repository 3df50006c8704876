"""Tests of the exact reference model (tcsim.reference) on hand-worked cases and exact identities.

Every expected value below is worked out by hand from the datapath specification (the working is
in the comments), or computed independently with Fractions / float64 arithmetic.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from tcsim.datapath import Datapath
from tcsim.errors import ConfigError, FormatError, ShapeError
from tcsim.reference import block_fma, dot, mma, result_bits
from tcsim.rounding import NAMES as ROUNDING_NAMES
from tcsim.rounding import Rounding

# H100 FP8 wgmma path: n = 32, f = 13, RZ to 14 significant bits, truncated terms.
H100 = Datapath(block_size=32, fraction_bits=13, output_precision=14, output_rounding="rz",
                term_rounding="truncate")
ADA = H100.model_copy(update={"block_size": 16})
# An ideal unit: exact sum, one IEEE RNE rounding.
EXACT = Datapath(block_size=None, fraction_bits=None, output_rounding="rne", zero_sign="ieee",
                 output_precision=None)
# A chain of IEEE fp32 FMAs.
FMA32 = Datapath(block_size=1, fraction_bits=None, output_rounding="rne", zero_sign="ieee")

FP32_MAX = float(np.finfo(np.float32).max)
FP16_MAX = 65504.0


def same(x: float, y: float) -> bool:
    """Equal as values, with NaN == NaN and the sign of zero compared."""
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return x == y and math.copysign(1.0, x) == math.copysign(1.0, y)


def dp_with(base: Datapath, **update) -> Datapath:
    return Datapath(**{**base.model_dump(), **update})


# ---------------------------------------------------------------------------------------------
# Hand-worked H100 / Ada probes (e4m3 x e4m3 -> fp32, C = 0)
# ---------------------------------------------------------------------------------------------
def test_small_product_truncated_away():
    # 2^-7 is an e4m3 subnormal (emin = -6): exp = -6, product exponent -12, value 2^-14.
    # E = 0, grid 2^-13: 2^-14 truncates to 0.
    assert block_fma([1.0, 2**-7], [1.0, 2**-7], 0.0, H100, "e4m3", "e4m3") == 1.0


def test_unnormalized_vs_normalized_alignment():
    # 1.5*1.5 = 2.25 with exponent 0+0 = 0; 2^-6 * 2^-7 = 2^-13 with exponent -6 + -6 = -12.
    # Unnormalised: E = 0, grid 2^-13, both 2^-13 kept: 2.25 + 2^-12 = 2.250244140625
    # (14 bits at exponent 1: grid 2^-12, exact).
    a, b = [1.5, 2**-6, 2**-6], [1.5, 2**-7, 2**-7]
    assert block_fma(a, b, 0.0, H100, "e4m3", "e4m3") == 2.250244140625
    # Normalised: E = floor(log2 2.25) = 1, grid 2^-12: each 2^-13 truncates to 0.
    norm = dp_with(H100, product_alignment="normalized")
    assert block_fma(a, b, 0.0, norm, "e4m3", "e4m3") == 2.25


def test_block_size_32_vs_16():
    a = [2**-7] * 16 + [1.0]
    # One 32-block: E = 0, all sixteen 2^-14 truncate to 0.
    assert dot(a, a, 0.0, H100, "e4m3", "e4m3") == 1.0
    assert block_fma(a, a, 0.0, H100, "e4m3", "e4m3") == 1.0
    # 16-blocks: the first block sums 16 * 2^-14 = 2^-10 exactly (E = -12), then
    # 1 + C = 1 + 2^-10 (C's exponent -10 is on the 2^-13 grid) = 1.0009765625.
    assert dot(a, a, 0.0, ADA, "e4m3", "e4m3") == 1.0009765625
    # The 1*1 at k = 32 under H100: the first 32-block gives 2^-10 too.
    a32 = [2**-7] * 16 + [0.0] * 16 + [1.0]
    assert dot(a32, a32, 0.0, H100, "e4m3", "e4m3") == 1.0009765625
    # ... and a single 64-block would give 1.0.
    assert dot(a32, a32, 0.0, dp_with(H100, block_size=64), "e4m3", "e4m3") == 1.0


def test_c_truncated_without_products():
    c = 1 + 2**-20
    # C is a term with exponent 0; grid 2^-13 truncates the 2^-20.
    assert block_fma([0.0], [0.0], c, H100, "e4m3", "e4m3") == 1.0
    assert block_fma([], [], c, H100, "e4m3", "e4m3") == 1.0
    # K == 0 in the chain: C is returned unchanged.
    assert dot([], [], c, H100, "e4m3", "e4m3") == c


def test_sign_magnitude_truncation_vs_floor():
    a, b = [1.0, -(2**-7)], [1.0, 2**-7]
    # -2^-14 on the 2^-13 grid: truncate -> 0; floor -> -2^-13.
    assert block_fma(a, b, 0.0, H100, "e4m3", "e4m3") == 1.0
    floor = dp_with(H100, term_rounding="floor")
    # 1 - 2^-13 = 0.1111111111111b (13 ones): 13 significant bits, fits in 14.
    assert block_fma(a, b, 0.0, floor, "e4m3", "e4m3") == 1 - 2**-13


def test_term_rounding_rne():
    rne = dp_with(H100, term_rounding="rne")
    # 2^-14 is half the 2^-13 grid: tie -> even (0).
    assert block_fma([1.0, 2**-7], [1.0, 2**-7], 0.0, rne, "e4m3", "e4m3") == 1.0
    # 1.5 * 2^-14 is 0.75 of the grid: rounds to one grid step.
    assert block_fma([1.0, 1.5 * 2**-7], [1.0, 2**-7], 0.0, rne, "e4m3", "e4m3") == 1 + 2**-13
    assert block_fma([1.0, -1.5 * 2**-7], [1.0, 2**-7], 0.0, rne, "e4m3", "e4m3") == 1 - 2**-13
    # Each term is rounded on its own: two terms of 0.75 steps give 2 steps, 1 + 2^-12
    # (their exact sum, 1.5 steps, would have given 1 + 2^-13 under truncation).
    a = [1.0, 1.5 * 2**-7, 1.5 * 2**-7]
    b = [1.0, 2**-7, 2**-7]
    assert block_fma(a, b, 0.0, rne, "e4m3", "e4m3") == 1 + 2**-12


def test_subnormal_input_uses_emin_as_exponent():
    # 3*2^-9 is an e4m3 subnormal: exp = emin = -6, so the lone product 3*2^-9 * 1 has exponent
    # -6 (significand 0.375). f = 2: grid 2^-8, 3*2^-9 = 1.5 grid steps truncates to 2^-8.
    dp = Datapath(block_size=4, fraction_bits=2, output_rounding="rz")
    assert block_fma([3 * 2**-9], [1.0], 0.0, dp, "e4m3", "e4m3") == 2**-8
    assert same(block_fma([2**-9], [1.0], 0.0, dp, "e4m3", "e4m3"), 0.0)
    # Normalised alignment uses floor(log2(3*2^-9)) = -8: grid 2^-10, exact.
    norm = dp_with(dp, product_alignment="normalized")
    assert block_fma([3 * 2**-9], [1.0], 0.0, norm, "e4m3", "e4m3") == 3 * 2**-9
    assert block_fma([2**-9], [1.0], 0.0, norm, "e4m3", "e4m3") == 2**-9


def test_subnormal_c_uses_emin_as_exponent():
    # An fp32-subnormal C has exponent -126 as a term: with f = 2 the grid is 2^-128 and
    # 3*2^-149 truncates to 0 (its own floor(log2) = -148 would have kept 2^-148).
    dp = Datapath(block_size=4, fraction_bits=2, output_rounding="rz")
    assert same(block_fma([], [], 3 * 2.0**-149, dp, "e4m3", "e4m3"), 0.0)
    # 3*2^-129 = 0.375 * 2^-126: on the 2^-128 grid that is 1.5 steps -> truncated to 2^-128.
    assert block_fma([], [], 3 * 2.0**-129, dp, "e4m3", "e4m3") == 2.0**-128
    # A normal C, 3*2^-127 = 1.5 * 2^-126, is exactly on its grid 2^-128.
    assert block_fma([], [], 3 * 2.0**-127, dp, "e4m3", "e4m3") == 3 * 2.0**-127
    # fp16 accumulator: emin = -14, a C of 3*2^-24 sits on the grid 2^-16 -> 0.
    assert same(block_fma([], [], 3 * 2.0**-24, dp, "e4m3", "e4m3", acc="fp16"), 0.0)


def test_carry_headroom():
    # 32 * 1.875^2 = 32 * 3.515625 = 112.5 (3.515625 = 225/64 is on the 2^-13 grid).
    assert block_fma([1.875] * 32, [1.875] * 32, 0.0, H100, "e4m3", "e4m3") == 112.5


def test_output_rz_vs_rne():
    # 1.5*2^-6 * 2^-6 = 3 * 2^-13 (exponent -12), E = 0: kept. S = 2 + 3*2^-13.
    # 14 bits at exponent 1: grid 2^-12, S/grid = 2^13 + 1.5: RZ -> 2 + 2^-12, RNE -> 2 + 2^-11.
    a, b = [1.0, 1.0, 1.5 * 2**-6], [1.0, 1.0, 2**-6]
    assert block_fma(a, b, 0.0, H100, "e4m3", "e4m3") == 2.000244140625
    assert block_fma(a, b, 0.0, dp_with(H100, output_rounding="rne"), "e4m3", "e4m3") \
        == 2.00048828125
    neg = [-x for x in a]
    assert block_fma(neg, b, 0.0, H100, "e4m3", "e4m3") == -2.000244140625
    # The exact sum with full fp32 precision.
    assert block_fma(a, b, 0.0, EXACT, "e4m3", "e4m3") == 2.0003662109375


def test_output_precision_14_clears_low_bits_of_c():
    # A = B = 0, C with all 24 bits set below exponent 0: truncation to 2^-13 then 14 bits.
    c = 2 - 2**-23
    assert block_fma([0.0], [0.0], c, H100, "e4m3", "e4m3") == 2 - 2**-13


# ---------------------------------------------------------------------------------------------
# Exact datapath == correctly rounded fp32 of the exact sum
# ---------------------------------------------------------------------------------------------
def _all_values(dtype) -> np.ndarray:
    bits = np.arange(256, dtype=np.uint8) if np.dtype(dtype).itemsize == 1 \
        else np.arange(65536, dtype=np.uint16)
    with np.errstate(invalid="ignore"):
        vals = bits.view(dtype).astype(np.float64)
    return vals[np.isfinite(vals)]


E4M3 = _all_values(ml_dtypes.float8_e4m3fn)
E5M2 = _all_values(ml_dtypes.float8_e5m2)
FP16 = _all_values(np.float16)
BF16 = _all_values(ml_dtypes.bfloat16)
BF16_MODERATE = BF16[(BF16 == 0) | ((np.abs(BF16) >= 2.0**-40) & (np.abs(BF16) <= 2.0**40))]


def _tf32_values(rng: random.Random, n: int) -> list[float]:
    out = []
    for _ in range(n):
        # sign, exponent in [-30, 30], 10 fraction bits
        m = rng.randrange(1 << 10, 1 << 11)
        out.append(rng.choice((-1, 1)) * m * 2.0 ** (rng.randint(-30, 30) - 10))
    return out


def f32_rne(q: Fraction) -> float:
    """Correctly rounded (RNE) fp32 of an exact Fraction, by comparing neighbours exactly."""
    x = np.float32(float(q))  # within one fp32 step of the answer (double rounding at worst)
    cands = [np.nextafter(x, np.float32(-np.inf)), x, np.nextafter(x, np.float32(np.inf))]
    cands = [c for c in cands if np.isfinite(c)]
    best = min(cands, key=lambda c: (abs(Fraction(float(c)) - q),
                                     int(np.array(c, np.float32).view(np.uint32)) & 1))
    if best == 0:
        return 0.0  # the sign of an exact-zero sum is tested separately
    return float(best)


@pytest.mark.parametrize("fmt,pool", [("e4m3", E4M3), ("e5m2", E5M2), ("fp16", FP16),
                                      ("bf16", BF16_MODERATE)])
def test_exact_datapath_is_correctly_rounded(fmt, pool):
    rng = np.random.default_rng(1234)
    for _ in range(60):
        K = int(rng.integers(1, 40))
        a = rng.choice(pool, K)
        b = rng.choice(pool, K)
        c = float(np.float32(rng.standard_normal() * 2.0 ** int(rng.integers(-20, 20))))
        exact = sum((Fraction(x) * Fraction(y) for x, y in zip(a, b)), Fraction(c))
        got = dot(a, b, c, EXACT, fmt, fmt)
        if exact == 0:
            assert got == 0.0
        else:
            assert got == f32_rne(exact), (a, b, c)


def test_exact_datapath_tf32_and_mixed_formats():
    rng = random.Random(7)
    for _ in range(60):
        K = rng.randint(1, 20)
        a = _tf32_values(rng, K)
        b = [float(rng.choice(E5M2)) for _ in range(K)]
        exact = sum((Fraction(x) * Fraction(y) for x, y in zip(a, b)), Fraction(0))
        got = dot(a, b, 0.0, EXACT, "tf32", "e5m2")
        assert got == (f32_rne(exact) if exact != 0 else 0.0)


def test_exact_datapath_subnormal_result():
    # bf16 2^-70 * 3*2^-70 = 3*2^-140: an fp32 subnormal, exactly representable (grid 2^-149).
    assert block_fma([2.0**-70], [3 * 2.0**-70], 0.0, EXACT, "bf16", "bf16") == 3 * 2.0**-140
    # 2^-150 is half the smallest subnormal: tie -> even (0), keeping the sign of S.
    assert same(block_fma([2.0**-75], [2.0**-75], 0.0, EXACT, "bf16", "bf16"), 0.0)
    assert same(block_fma([-(2.0**-75)], [2.0**-75], 0.0, EXACT, "bf16", "bf16"), -0.0)
    # 3*2^-151 = 0.75 of the smallest subnormal: rounds up to 2^-149.
    assert block_fma([-3 * 2.0**-76], [2.0**-75], 0.0, EXACT, "bf16", "bf16") == -(2.0**-149)


# ---------------------------------------------------------------------------------------------
# fp32 FMA chain == float64 step-by-step emulation (where float64 is exact for a*b + c)
# ---------------------------------------------------------------------------------------------
def test_fma_chain_matches_float64_emulation():
    rng = np.random.default_rng(99)
    pool = FP16[(FP16 == 0) | ((np.abs(FP16) >= 2.0**-6) & (np.abs(FP16) <= 2.0**6))]
    checked = 0
    for _ in range(150):
        K = int(rng.integers(1, 24))
        a = rng.choice(pool, K)
        b = rng.choice(pool, K)
        c0 = float(np.float32(rng.standard_normal()))
        acc, safe = c0, True
        for x, y in zip(a, b):
            prod = x * y  # exact: 11 x 11 bits
            s = prod + acc
            if Fraction(s) != Fraction(prod) + Fraction(acc):
                safe = False
                break
            acc = float(np.float32(s))  # a single RNE rounding to fp32
        if not safe:
            continue
        checked += 1
        assert same(dot(a, b, c0, FMA32, "fp16", "fp16"), acc), (a, b, c0)
    assert checked > 100


def test_fma_chain_signed_zeros_like_ieee():
    # IEEE fma: (-0)*1 + (-0) = -0; then 1*1 - 1 = +0 (exact cancellation under RNE).
    assert same(dot([-0.0], [1.0], -0.0, FMA32, "fp16", "fp16"), -0.0)
    assert same(dot([-0.0, 1.0, -1.0], [1.0, 1.0, 1.0], -0.0, FMA32, "fp16", "fp16"), 0.0)
    assert same(dot([1.0, -1.0], [1.0, 1.0], -0.0, FMA32, "fp16", "fp16"), 0.0)
    assert same(dot([0.0, -0.0], [-1.0, 1.0], -0.0, FMA32, "fp16", "fp16"), -0.0)


# ---------------------------------------------------------------------------------------------
# Chain structure
# ---------------------------------------------------------------------------------------------
def test_dot_is_a_fold_of_blocks():
    rng = np.random.default_rng(5)
    dp = Datapath(block_size=4, fraction_bits=5, output_precision=10, output_rounding="rz")
    for _ in range(20):
        K = int(rng.integers(0, 15))
        a, b = rng.choice(E4M3, K), rng.choice(E4M3, K)
        c = float(rng.choice(E4M3))
        expected = c
        for s in range(0, K, 4):
            expected = block_fma(a[s:s + 4], b[s:s + 4], expected, dp, "e4m3", "e4m3")
        assert same(dot(a, b, c, dp, "e4m3", "e4m3"), expected)


def test_whole_k_block_when_block_size_is_none():
    dp = Datapath(output_precision=12, output_rounding="rz")
    a = [1.0] + [2**-7] * 40
    # one block: exact sum 1 + 40*2^-14 = 1 + 5*2^-11, exact in 12 bits (grid 2^-11)
    assert dot(a, a, 0.0, dp, "e4m3", "e4m3") == 1 + 5 * 2**-11
    assert block_fma(a, a, 0.0, dp, "e4m3", "e4m3") == 1 + 5 * 2**-11
    # a chain of single products loses every 2^-14 against the 1
    assert dot(a, a, 0.0, dp_with(dp, block_size=1), "e4m3", "e4m3") == 1.0


# ---------------------------------------------------------------------------------------------
# NaN / Inf
# ---------------------------------------------------------------------------------------------
INF, NAN = math.inf, math.nan


@pytest.mark.parametrize("a,b,c,expected", [
    ([INF, 1.0], [1.0, 1.0], 0.0, INF),
    ([INF], [-2.0], 5.0, -INF),
    ([-INF], [-INF], 0.0, INF),
    ([INF], [0.0], 0.0, NAN),                 # Inf * 0
    ([INF], [-0.0], 0.0, NAN),
    ([INF, -INF], [1.0, 1.0], 0.0, NAN),      # +Inf + -Inf
    ([INF], [1.0], -INF, NAN),                # Inf product against an Inf C
    ([INF], [-1.0], -INF, -INF),
    ([1.0], [1.0], INF, INF),                 # Inf C alone
    ([], [], -INF, -INF),
    ([NAN, INF], [1.0, 1.0], 0.0, NAN),
    ([1.0], [NAN], 0.0, NAN),
    ([1.0], [1.0], NAN, NAN),
    ([INF], [1.0], NAN, NAN),
])
def test_special_values_e5m2(a, b, c, expected):
    for dp in (H100, EXACT, dp_with(H100, overflow="saturate")):
        assert same(block_fma(a, b, c, dp, "e5m2", "e5m2"), expected)


def test_special_values_e4m3_nan_and_no_inf():
    assert math.isnan(block_fma([NAN], [1.0], 0.0, H100, "e4m3", "e4m3"))
    with pytest.raises(FormatError):
        block_fma([INF], [1.0], 0.0, H100, "e4m3", "e4m3")


def test_nan_propagates_through_the_chain():
    a = [NAN] + [1.0] * 40
    assert math.isnan(dot(a, [1.0] * 41, 0.0, H100, "e5m2", "e5m2"))
    a = [INF] + [1.0] * 40
    assert dot(a, [1.0] * 41, 0.0, H100, "e5m2", "e5m2") == INF


def test_flushed_subnormal_times_inf_is_nan():
    sub = 2.0**-16  # the smallest e5m2 subnormal (emin = -14)
    assert block_fma([INF], [sub], 0.0, H100, "e5m2", "e5m2") == INF
    flush = dp_with(H100, subnormal_inputs="flush")
    assert math.isnan(block_fma([INF], [sub], 0.0, flush, "e5m2", "e5m2"))


# ---------------------------------------------------------------------------------------------
# Signed zeros
# ---------------------------------------------------------------------------------------------
def test_zero_sign_rules():
    ieee = dp_with(H100, zero_sign="ieee")
    # all products -0 and C = -0
    assert same(block_fma([-0.0], [1.0], -0.0, ieee, "e4m3", "e4m3"), -0.0)
    assert same(block_fma([-0.0, 0.0], [1.0, -2.0], -0.0, ieee, "e4m3", "e4m3"), -0.0)
    assert same(block_fma([], [], -0.0, ieee, "e4m3", "e4m3"), -0.0)
    # "plus" always gives +0
    assert same(block_fma([-0.0], [1.0], -0.0, H100, "e4m3", "e4m3"), 0.0)
    assert same(block_fma([], [], -0.0, H100, "e4m3", "e4m3"), 0.0)
    # one +0 (product or C) gives +0
    assert same(block_fma([-0.0], [-1.0], -0.0, ieee, "e4m3", "e4m3"), 0.0)
    assert same(block_fma([-0.0], [1.0], 0.0, ieee, "e4m3", "e4m3"), 0.0)
    # exact cancellation of nonzero terms gives +0
    assert same(block_fma([1.0, -1.0], [1.0, 1.0], -0.0, ieee, "e4m3", "e4m3"), 0.0)
    assert same(block_fma([1.0], [-1.0], 1.0, ieee, "e4m3", "e4m3"), 0.0)
    # K == 0: C unchanged, sign included, whatever the rule
    assert same(dot([], [], -0.0, H100, "e4m3", "e4m3"), -0.0)


def test_nonzero_sum_rounding_to_zero_keeps_its_sign():
    # p = 14: the subnormal grid is 2^(-126-13) = 2^-139. S = -2^-141 rounds (RZ) to -0.
    dp = Datapath(output_precision=14, output_rounding="rz")
    assert same(block_fma([-(2.0**-70)], [2.0**-71], 0.0, dp, "bf16", "bf16"), -0.0)
    assert same(block_fma([2.0**-70], [2.0**-71], 0.0, dp, "bf16", "bf16"), 0.0)


# ---------------------------------------------------------------------------------------------
# Overflow
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy,rounding,p,expected", [
    ("inf", "rz", None, INF),
    ("inf", "rne", None, INF),
    ("saturate", "rz", None, FP32_MAX),
    ("saturate", "rne", None, FP32_MAX),
    ("ieee", "rne", None, INF),
    ("ieee", "rz", None, FP32_MAX),
    ("ieee", "rz", 14, (2 - 2**-13) * 2.0**127),
    ("saturate", "rne", 14, (2 - 2**-13) * 2.0**127),
])
def test_overflow_policies(policy, rounding, p, expected):
    dp = Datapath(overflow=policy, output_rounding=rounding, output_precision=p)
    # bf16 1.5*2^127 * 2 = 3*2^127 > fp32 max
    assert block_fma([1.5 * 2.0**127], [2.0], 0.0, dp, "bf16", "bf16") == expected
    assert block_fma([-1.5 * 2.0**127], [2.0], 0.0, dp, "bf16", "bf16") == -expected


def test_overflow_boundary_under_rne():
    ieee = Datapath(output_rounding="rne", overflow="ieee")
    sat = Datapath(output_rounding="rne", overflow="saturate")
    # max + half an ulp (2^103 = 2^52 * 2^51) is a tie: even -> 2^128 -> overflow.
    assert block_fma([2.0**52], [2.0**51], FP32_MAX, ieee, "bf16", "bf16") == INF
    assert block_fma([2.0**52], [2.0**51], FP32_MAX, sat, "bf16", "bf16") == FP32_MAX
    # max + a quarter ulp rounds back to max.
    assert block_fma([2.0**51], [2.0**51], FP32_MAX, ieee, "bf16", "bf16") == FP32_MAX
    # Inf inputs stay Inf even when saturating.
    assert block_fma([1.0], [1.0], INF, sat, "bf16", "bf16") == INF


def test_fp16_accumulator_overflow():
    dp = Datapath(block_size=16, fraction_bits=25, output_rounding="rne")
    assert block_fma([256.0], [256.0], 0.0, dp, "fp16", "fp16", acc="fp16") == INF
    sat = dp_with(dp, overflow="saturate")
    assert block_fma([256.0], [-256.0], 0.0, sat, "fp16", "fp16", acc="fp16") == -FP16_MAX
    # 65504 + 16 is a tie between 65504 and 65536 (even): overflow; + 8 rounds down.
    assert block_fma([16.0], [1.0], FP16_MAX, dp, "fp16", "fp16", acc="fp16") == INF
    assert block_fma([8.0], [1.0], FP16_MAX, dp, "fp16", "fp16", acc="fp16") == FP16_MAX


# ---------------------------------------------------------------------------------------------
# fp16 accumulator, min_exp_limit, C rounding
# ---------------------------------------------------------------------------------------------
def test_fp16_accumulator_min_exp_limit():
    # Products 2^-12 * 2^-13 = 2^-25 (exponent -25) and 2^-24 * 2^-24 = 2^-48 (exponent
    # -14 + -14 = -28, fp16 subnormals). f = 25.
    a, b = [2.0**-12, 2.0**-24], [2.0**-13, 2.0**-24]
    free = Datapath(block_size=16, fraction_bits=25, output_rounding="rne")
    # E = -25, grid 2^-50: both kept, S = 2^-25 + 2^-48 > half of the fp16 subnormal step
    # 2^-24: rounds up to 2^-24.
    assert block_fma(a, b, 0.0, free, "fp16", "fp16", acc="fp16") == 2.0**-24
    # E clamped at -21, grid 2^-46: 2^-48 truncates to 0, S = 2^-25 is a tie -> even (0).
    clamped = dp_with(free, min_exp_limit=-21)
    assert same(block_fma(a, b, 0.0, clamped, "fp16", "fp16", acc="fp16"), 0.0)
    # With a small f the clamp decides alone: 2^-24 on the grid 2^-(21+2) is lost.
    f2 = Datapath(block_size=16, fraction_bits=2, output_rounding="rne")
    assert block_fma([2.0**-12], [2.0**-12], 0.0, f2, "fp16", "fp16", acc="fp16") == 2.0**-24
    f2c = dp_with(f2, min_exp_limit=-21)
    assert same(block_fma([2.0**-12], [2.0**-12], 0.0, f2c, "fp16", "fp16", acc="fp16"), 0.0)


def test_min_exp_limit_fp32():
    # Tiny products alone: E = -40 would keep them; clamped at -20 with f = 13 the grid is
    # 2^-33 and 2^-40 vanishes.
    dp = Datapath(block_size=8, fraction_bits=13, output_rounding="rz")
    assert block_fma([2.0**-20], [2.0**-20], 0.0, dp, "bf16", "bf16") == 2.0**-40
    assert block_fma([2.0**-20], [2.0**-20], 0.0, dp_with(dp, min_exp_limit=-20),
                     "bf16", "bf16") == 0.0


def test_c_rounded_into_fp16_with_rne():
    dp = Datapath(block_size=16, fraction_bits=25, output_rounding="rne")
    # fp16 step at 1 is 2^-10.
    assert dot([], [], 1 + 2**-12, dp, "fp16", "fp16", acc="fp16") == 1.0
    assert dot([], [], 1 + 2**-11, dp, "fp16", "fp16", acc="fp16") == 1.0          # tie, even
    assert dot([], [], 1 + 3 * 2**-11, dp, "fp16", "fp16", acc="fp16") == 1 + 2**-9  # tie, even
    assert dot([], [], 70000.0, dp, "fp16", "fp16", acc="fp16") == INF
    assert block_fma([0.0], [0.0], 1 + 2**-12, dp, "fp16", "fp16", acc="fp16") == 1.0
    with pytest.raises(FormatError):
        dot([], [], 1 + 2**-30, dp, "fp16", "fp16", acc="fp16")  # not an fp32 value


def test_fp16_accumulator_subnormal_grid():
    dp = Datapath(block_size=4, fraction_bits=30, output_rounding="rz")
    # 3 * 2^-26: fp16 subnormal step is 2^-24 -> RZ gives 0 (positive) ...
    assert same(block_fma([3 * 2.0**-13], [2.0**-13], 0.0, dp, "fp16", "fp16", acc="fp16"), 0.0)
    # ... and 5 * 2^-24 stays exact.
    assert block_fma([5 * 2.0**-12], [2.0**-12], 0.0, dp, "fp16", "fp16", acc="fp16") \
        == 5 * 2.0**-24


# ---------------------------------------------------------------------------------------------
# Subnormal output grid and flushing
# ---------------------------------------------------------------------------------------------
def test_subnormal_output_grid_with_reduced_precision():
    a, b = [2.0**-70], [3 * 2.0**-70]  # S = 3*2^-140 = 1.5 * 2^-139
    # Full fp32 precision: the subnormal grid is 2^-149: exact.
    assert block_fma(a, b, 0.0, Datapath(output_rounding="rz"), "bf16", "bf16") == 3 * 2.0**-140
    # 14 bits: grid 2^(-126-13) = 2^-139: RZ -> 2^-139, RNE -> 2^-138.
    rz14 = Datapath(output_precision=14, output_rounding="rz")
    rne14 = Datapath(output_precision=14, output_rounding="rne")
    assert block_fma(a, b, 0.0, rz14, "bf16", "bf16") == 2.0**-139
    assert block_fma(a, b, 0.0, rne14, "bf16", "bf16") == 2.0**-138
    # Normal results use the 14-bit grid at their own exponent: 2^-120 * (1 + 2^-13 + 2^-20).
    x = 2.0**-60 * (1 + 2**-7)
    y = 2.0**-60 * (1 + 2**-6)   # x*y = 2^-120 (1 + 2^-7 + 2^-6 + 2^-13)
    assert block_fma([x], [y], 0.0, rz14, "bf16", "bf16") == 2.0**-120 * (1 + 2**-7 + 2**-6
                                                                            + 2**-13)


def test_flush_subnormal_outputs():
    flush = Datapath(output_rounding="rz", subnormal_outputs="flush")
    assert same(block_fma([2.0**-65], [2.0**-65], 0.0, flush, "bf16", "bf16"), 0.0)
    assert same(block_fma([-(2.0**-65)], [2.0**-65], 0.0, flush, "bf16", "bf16"), -0.0)
    assert block_fma([2.0**-63], [2.0**-63], 0.0, flush, "bf16", "bf16") == 2.0**-126
    # A subnormal C is flushed on the way in (to a zero of its sign) ...
    assert same(block_fma([], [], -(2.0**-130), flush, "bf16", "bf16"), 0.0)  # "plus" rule
    ieee = dp_with(flush, zero_sign="ieee")
    assert same(block_fma([], [], -(2.0**-130), ieee, "bf16", "bf16"), -0.0)
    # ... so it no longer adds to a product.
    keep = Datapath(output_rounding="rz")
    c = 2.0**-130
    assert block_fma([2.0**-63], [2.0**-63], c, keep, "bf16", "bf16") == 2.0**-126 + c
    assert block_fma([2.0**-63], [2.0**-63], c, flush, "bf16", "bf16") == 2.0**-126


def test_flush_subnormal_inputs():
    flush = dp_with(H100, subnormal_inputs="flush")
    # 2^-7 is an e4m3 subnormal: its products vanish.
    a = [2**-7] * 16
    assert dot(a, a, 0.0, dp_with(H100, block_size=16), "e4m3", "e4m3") == 2**-10
    assert dot(a, a, 0.0, dp_with(flush, block_size=16), "e4m3", "e4m3") == 0.0
    assert same(block_fma([-(2**-7)], [2**-7], -0.0, dp_with(flush, zero_sign="ieee"),
                          "e4m3", "e4m3"), -0.0)


# ---------------------------------------------------------------------------------------------
# C placed after the product sum
# ---------------------------------------------------------------------------------------------
def test_c_after_product_sum():
    after = Datapath(block_size=16, fraction_bits=25, c_placement="after",
                     product_sum_precision=4, product_sum_rounding="rz", output_rounding="rne")
    a, b = [1.0, 0.0625, 0.03125], [1.0, 1.0, 1.0]   # products sum to 1.09375 = 1.00011b
    c = 2.0**-20
    # 4 bits, RZ: 1.0; then + C exactly and one RNE rounding to fp32: 1 + 2^-20.
    assert block_fma(a, b, c, after, "e4m3", "e4m3") == 1 + 2**-20
    # RNE to 4 bits: 1.09375 / 2^-3 = 8.75 -> 9 -> 1.125.
    rne = dp_with(after, product_sum_rounding="rne")
    assert block_fma(a, b, c, rne, "e4m3", "e4m3") == 1.125 + 2**-20
    # With C inside, nothing is lost: 1.09375 + 2^-20.
    inside = Datapath(block_size=16, fraction_bits=25, output_rounding="rne")
    assert block_fma(a, b, c, inside, "e4m3", "e4m3") == 1.09375 + 2**-20


def test_c_after_is_not_put_on_the_term_grid():
    inside = Datapath(block_size=16, fraction_bits=2, output_rounding="rz")
    after = dp_with(inside, c_placement="after", product_sum_precision=24)
    # Inside: E = 0, grid 2^-2, C = 2^-10 truncates away.
    assert block_fma([1.0], [1.0], 2.0**-10, inside, "e4m3", "e4m3") == 1.0
    assert block_fma([1.0], [1.0], 2.0**-10, after, "e4m3", "e4m3") == 1 + 2**-10
    # No products at all: S = C.
    assert block_fma([], [], 1 + 2**-20, after, "e4m3", "e4m3") == 1 + 2**-20
    assert block_fma([0.0], [1.0], 1 + 2**-20, after, "e4m3", "e4m3") == 1 + 2**-20
    # Product sum rounding has an unbounded exponent range: tiny sums keep their bits.
    tiny = dp_with(after, product_sum_precision=2, fraction_bits=None, block_size=None)
    # e5m2: 1.5*2^-14 * 1.25*2^-14 = 1.875*2^-28 -> 2 bits RZ (grid 2^-29): 1.5*2^-28
    assert block_fma([1.5 * 2.0**-14], [1.25 * 2.0**-14], 0.0, tiny, "e5m2", "e5m2") \
        == 1.5 * 2.0**-28
    ieee = dp_with(after, zero_sign="ieee")
    assert same(block_fma([-0.0], [1.0], -0.0, ieee, "e4m3", "e4m3"), -0.0)
    assert same(block_fma([1.0, -1.0], [1.0, 1.0], -0.0, ieee, "e4m3", "e4m3"), 0.0)


# ---------------------------------------------------------------------------------------------
# result_bits and mma
# ---------------------------------------------------------------------------------------------
def test_result_bits_matches_numpy():
    rng = np.random.default_rng(3)
    words = rng.integers(0, 2**32, 2000, dtype=np.uint64).astype(np.uint32)
    for w in words:
        v = np.array(w, np.uint32).view(np.float32)
        if np.isnan(v):
            assert result_bits(float(v), "fp32") == 0x7FFFFFFF
        else:
            assert result_bits(float(v), "fp32") == int(w)
    for w in range(0, 65536, 7):
        v = np.array(w, np.uint16).view(np.float16)
        expected = 0x7FFF if np.isnan(v) else w
        assert result_bits(float(v), "fp16") == expected
    assert result_bits(-0.0) == 0x80000000
    assert result_bits(2.0**-149) == 1
    assert result_bits(-INF, "fp16") == 0xFC00
    assert result_bits(NAN, "fp16") == 0x7FFF
    with pytest.raises(FormatError):
        result_bits(1 + 2**-30)
    with pytest.raises(FormatError):
        result_bits(70000.0, "fp16")


def test_mma_matches_dot_and_canonical_nan():
    rng = np.random.default_rng(11)
    M, K, N = 3, 40, 4
    a = rng.choice(E5M2[np.abs(E5M2) < 100], (M, K))
    b = rng.choice(E5M2[np.abs(E5M2) < 100], (K, N))
    c = rng.standard_normal((M, N)).astype(np.float32)
    a[0, 3] = np.nan
    d = mma(a, b, c, H100, "e5m2", "e5m2")
    assert d.dtype == np.float32 and d.shape == (M, N)
    bits = d.view(np.uint32)
    for i in range(M):
        for j in range(N):
            expected = dot(a[i], b[:, j], float(c[i, j]), H100, "e5m2", "e5m2")
            assert int(bits[i, j]) == result_bits(expected)
    assert np.all(bits[0] == 0x7FFFFFFF)


def test_mma_fp16_accumulator_and_ml_dtypes_inputs():
    dp = Datapath(block_size=16, fraction_bits=25, output_rounding="rne", min_exp_limit=-21)
    a = np.array([[1.0, 2.0], [np.nan, 1.0]]).astype(np.float16)
    b = np.array([[0.5, 1.0], [0.25, 1.0]]).astype(ml_dtypes.bfloat16)
    c = np.zeros((2, 2), np.float32)
    d = mma(a, b, c, dp, "fp16", "bf16", acc="fp16")
    assert d.dtype == np.float16
    assert d[0, 0] == 1.0 and d[0, 1] == 3.0
    assert np.all(d[1].view(np.uint16) == 0x7FFF)


# ---------------------------------------------------------------------------------------------
# Input checking
# ---------------------------------------------------------------------------------------------
def test_input_errors():
    with pytest.raises(FormatError):
        block_fma([1.1], [1.0], 0.0, H100, "e4m3", "e4m3")
    with pytest.raises(FormatError):
        block_fma([512.0], [1.0], 0.0, H100, "e4m3", "e4m3")  # beyond 448
    with pytest.raises(FormatError):
        block_fma([1.0], [1 + 2**-8], 0.0, EXACT, "fp16", "bf16")
    with pytest.raises(ShapeError):
        block_fma([1.0] * 33, [1.0] * 33, 0.0, H100, "e4m3", "e4m3")
    with pytest.raises(ShapeError):
        dot([1.0, 1.0], [1.0], 0.0, H100, "e4m3", "e4m3")
    with pytest.raises(ShapeError):
        mma(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)), H100, "e4m3", "e4m3")
    with pytest.raises(ConfigError):
        block_fma([1.0], [1.0], 0.0, H100, "e4m3", "e4m3", acc="fp16")  # 14 bits > fp16's 11
    with pytest.raises(FormatError):
        block_fma([1.0], [1.0], 0.0, H100, "e4m3", "e4m3", acc="bf16")


# ---------------------------------------------------------------------------------------------
# The one rounding routine (round_pack) against numpy's IEEE casts
# ---------------------------------------------------------------------------------------------
def test_round_pack_is_ieee_rne_for_fp32_and_fp16():
    """float64 -> float32 / float16 casts are IEEE RNE with one rounding (subnormals, overflow
    to Inf, signed underflow): round_pack into (24, -126, 127) / (11, -14, 15) agrees on values
    spread over both ranges, ties included."""
    from tcsim.reference import round_pack
    rng = np.random.default_rng(8)
    x = rng.standard_normal(3000) * 2.0 ** rng.integers(-160, 140, 3000)
    ties = (np.float64(np.float32(1.0)) + 2.0 ** -24) * 2.0 ** rng.integers(-140, 120, 200)
    for v in np.concatenate([x, ties, -ties, [0.0, 65520.0, 65519.0, 2.0 ** -25, 2.0 ** -150]]):
        for p, emin, emax, dtype in ((24, -126, 127, np.float32), (11, -14, 15, np.float16)):
            with np.errstate(over="ignore"):
                want = float(dtype(v))
            assert same(float(round_pack(Fraction(v), p, emin, emax, "rne")), want), (v, dtype)


def test_round_pack_overflow_flush_and_zero_sign():
    from tcsim.reference import round_pack
    big = Fraction(70000)
    assert float(round_pack(big, 11, -14, 15, "rz")) == FP16_MAX           # ieee: RZ saturates
    assert float(round_pack(-big, 11, -14, 15, "rne")) == -math.inf
    assert float(round_pack(big, 11, -14, 15, "rne", overflow="saturate")) == FP16_MAX
    assert float(round_pack(big, 11, -14, 15, "rz", overflow="inf")) == math.inf
    tiny = Fraction(3, 2 ** 20)                                             # an fp16 subnormal
    assert float(round_pack(tiny, 11, -14, 15, "rne")) == 3 * 2.0 ** -20
    assert same(float(round_pack(-tiny, 11, -14, 15, "rne", flush=True)), -0.0)
    assert same(float(round_pack(Fraction(-1, 2 ** 30), 11, -14, 15, "rz")), -0.0)
    assert same(float(round_pack(Fraction(0), 11, -14, 15, "rne", zero_negative=True)), -0.0)


# round_to_grid of x = v / quantum, worked by hand: x in quarters, ties at +-2.5 and +-1.5,
# inexact values +-1.25 and +-2.75, an integer 3 (exact in every mode)
GRID_X = (Fraction(5, 2), Fraction(-5, 2), Fraction(3, 2), Fraction(-3, 2), Fraction(5, 4),
          Fraction(-5, 4), Fraction(11, 4), Fraction(-11, 4), Fraction(3))
GRID_N = {
    Rounding.RZ: (2, -2, 1, -1, 1, -1, 2, -2, 3),         # toward zero
    Rounding.RD: (2, -3, 1, -2, 1, -2, 2, -3, 3),         # toward -inf
    Rounding.RU: (3, -2, 2, -1, 2, -1, 3, -2, 3),         # toward +inf
    Rounding.RNE: (2, -2, 2, -2, 1, -1, 3, -3, 3),        # nearest, ties to even
    Rounding.RNA: (3, -3, 2, -2, 1, -1, 3, -3, 3),        # nearest, ties away from zero
    Rounding.RTO: (3, -3, 1, -1, 1, -1, 3, -3, 3),        # truncate, odd when inexact
}


@pytest.mark.parametrize("name", sorted(ROUNDING_NAMES))
def test_round_to_grid_takes_every_rounding_name(name):
    """Every spelling of tcsim.rounding names a mode round_to_grid rounds in, by the hand-worked
    table above (stochastic rounding: below); a new mode in tcsim.rounding fails here until
    the oracle and the table have it."""
    from tcsim.reference import round_to_grid
    mode = Rounding.from_name(name)
    assert set(GRID_N) | {Rounding.SR} == set(Rounding)
    quantum = Fraction(1, 8)
    for x, n in zip(GRID_X, GRID_N.get(mode, ())):
        assert round_to_grid(x * quantum, quantum, name) == n * quantum, (name, x)
        assert round_to_grid(x * quantum, quantum, mode) == n * quantum, (mode, x)
    if mode == Rounding.SR:
        # |x| = 1.25: the first 2 discarded bits are D = 1 (0.25 * 4); up when R < D
        for x in (Fraction(5, 4), Fraction(-5, 4)):
            sign = 1 if x > 0 else -1
            assert round_to_grid(x, Fraction(1), name, (0, 2)) == sign * 2
            assert round_to_grid(x, Fraction(1), name, (1, 2)) == sign * 1
    with pytest.raises(ValueError, match="unknown rounding mode"):
        round_to_grid(Fraction(1), Fraction(1), "nearest")


@pytest.mark.parametrize("mode", list(Rounding))
def test_round_pack_overflow_follows_the_rounding_direction(mode):
    """IEEE overflow: the largest value where the mode rounds toward zero (RZ, RTO, RD of a
    positive value, RU of a negative one), Inf otherwise (tcsim.overflow)."""
    from tcsim.reference import round_pack
    big = Fraction(70000)
    sr = (0, 8)
    for v in (big, -big):
        toward = mode in (Rounding.RZ, Rounding.RTO) or \
            mode == (Rounding.RU if v < 0 else Rounding.RD)
        got = float(round_pack(v, 11, -14, 15, mode, sr=sr))
        assert got == math.copysign(FP16_MAX if toward else math.inf, v), (mode, v)
        assert float(round_pack(v, 11, -14, 15, mode, overflow="inf", sr=sr)) == \
            math.copysign(math.inf, v)
        assert float(round_pack(v, 11, -14, 15, mode, overflow="saturate", sr=sr)) == \
            math.copysign(FP16_MAX, v)
