"""tcsim.quant: FP8 operand quantisation, checked against independent references.

References: group amaxes and scales recomputed per group with Python loops and exact
``fractions.Fraction`` arithmetic (RN32 of a rational done by hand); FP8 codes compared with
ml_dtypes' float32 -> float8 casts of RN32(RN32(x) / s), clipped to +-max finite (ml_dtypes
overflows to NaN/Inf, the quantiser saturates); hand-computed examples for each granularity.
"""

from __future__ import annotations

import math
import zlib
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from tcsim import quant
from tcsim.errors import ConfigError, FormatError, ShapeError, TcsimError
from tcsim.formats.conversion import check_representable
from tcsim.quant import Quantized, pad_k, quantize
from tcsim.recipe import Recipe, Scaling

ML = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}
MAXF = {"e4m3": 448.0, "e5m2": 57344.0}
MANT = {"e4m3": 3, "e5m2": 2}
EMIN = {"e4m3": -6, "e5m2": -14}
EMAX = {"e4m3": 8, "e5m2": 15}


# ---- independent references ------------------------------------------------------------------
def rn32(v: Fraction) -> Fraction:
    """IEEE binary32 round-to-nearest-even of a nonnegative rational (no overflow handling)."""
    if v == 0:
        return Fraction(0)
    e = math.floor(math.log2(v))
    while Fraction(2) ** e > v:
        e -= 1
    while Fraction(2) ** (e + 1) <= v:
        e += 1
    ulp = Fraction(2) ** (max(e, -126) - 23)
    n = v / ulp
    fl = math.floor(n)
    rem = n - fl
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and fl % 2 == 1):
        fl += 1
    return fl * ulp


def ref_scale(amax: float, sc: Scaling, fmt: str) -> float:
    """The scale of a group with amax_used ``amax``, from the documented rules, exactly."""
    if amax == 0:
        return 1.0
    maxf = Fraction(MAXF[fmt])
    a = Fraction(amax)
    if sc.granularity == "mx":
        e = math.frexp(amax)[1] - 1 - EMAX[fmt] + sc.margin   # floor(log2 amax) - emax_elem
        return 2.0 ** min(max(e, -127), 127)
    if sc.scale_dtype == "fp32":
        s = rn32(rn32(a) / maxf)
        if s == 0:
            s = Fraction(2) ** -149
        return float(s * Fraction(2) ** sc.margin)
    e = -200
    while Fraction(2) ** e * maxf < a:          # smallest e with 2^e * max >= amax
        e += 1
    e = max(e, -149) + sc.margin
    if sc.scale_dtype == "ue8m0":
        e = min(max(e, -127), 127)
    return 2.0 ** e


def ref_groups(shape_rk, sc: Scaling):
    """(compact index (i, j), row slice, K slice) of every scale group, canonical (R, K) layout."""
    r, k = shape_rk
    g = sc.group_size
    gran = sc.granularity
    if gran == "tensor":
        return [((0, 0), slice(0, r), slice(0, k))]
    if gran == "channel":
        return [((i, 0), slice(i, i + 1), slice(0, k)) for i in range(r)]
    if gran in ("group", "mx"):
        return [((i, j), slice(i, i + 1), slice(j * g, (j + 1) * g))
                for i in range(r) for j in range(k // g)]
    return [((bi, j), slice(bi * g, min(r, (bi + 1) * g)), slice(j * g, (j + 1) * g))
            for bi in range(-(-r // g)) for j in range(k // g)]


def expected_scale_shape(role, shape, sc):
    g = sc.group_size
    if role == "a":
        m, k = shape
        return {"tensor": (1, 1), "channel": (m, 1), "group": (m, k // g),
                "block": (-(-m // g), k // g), "mx": (m, k // 32)}[sc.granularity]
    k, n = shape
    return {"tensor": (1, 1), "channel": (1, n), "group": (k // g, n),
            "block": (k // g, -(-n // g)), "mx": (k // 32, n)}[sc.granularity]


def ml_codes(q32: np.ndarray, fmt: str) -> np.ndarray:
    """ml_dtypes' cast of float32 ``q32`` with saturation (clip first), as uint8 bits."""
    m = np.float32(MAXF[fmt])
    return np.clip(q32, -m, m).astype(ML[fmt]).view(np.uint8)


def fp8_ulp(v: np.ndarray, fmt: str) -> np.ndarray:
    """ulp of the FP8 grid at |v| (the subnormal step below the normal range)."""
    a = np.abs(v)
    _, e = np.frexp(np.where(a == 0, 1.0, a))
    return np.ldexp(1.0, np.maximum(e - 1, EMIN[fmt]) - MANT[fmt])


def fp32_ulp(v: np.ndarray) -> np.ndarray:
    a = np.abs(v)
    _, e = np.frexp(np.where(a == 0, 1.0, a))
    return np.ldexp(1.0, np.maximum(e - 1, -126) - 23)


# ---- the sweep: every granularity x scale dtype x role x format ------------------------------
SCALINGS = [Scaling(granularity=gr, group_size=16, scale_dtype=sd)
            for gr in ("tensor", "channel", "group", "block") for sd in ("fp32", "pow2", "ue8m0")]
SCALINGS.append(Scaling(granularity="mx", group_size=32, scale_dtype="ue8m0"))


def sample(shape, seed, dtype=np.float32):
    """Normal data with a wide per-element dynamic range, some exact zeros and ties."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * np.ldexp(1.0, rng.integers(-12, 6, size=shape))
    x[rng.random(shape) < 0.05] = 0.0
    x[rng.random(shape) < 0.02] *= -0.0
    return x.astype(dtype)


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@pytest.mark.parametrize("role", ["a", "b"])
@pytest.mark.parametrize("sc", SCALINGS, ids=lambda s: f"{s.granularity}-{s.scale_dtype}")
def test_sweep(sc, role, fmt):
    rows, k = 37, 64                         # 37: a partial last block along M/N (g = 16)
    shape = (rows, k) if role == "a" else (k, rows)
    x = sample(shape, seed=zlib.crc32(f"{sc.granularity}{sc.scale_dtype}{role}{fmt}".encode()))
    qz = quantize(x, fmt, sc, role)
    assert isinstance(qz, Quantized)
    assert qz.fmt == fmt and qz.role == role and qz.scaling is sc
    assert qz.amax == float(np.abs(x).max())
    assert qz.values.shape == x.shape and qz.values.dtype == np.float64
    assert qz.scales.shape == expected_scale_shape(role, shape, sc)
    assert qz.scales.dtype == np.float64
    nk = 1 if sc.granularity in ("tensor", "channel") else k // sc.group_size
    assert qz.k_scales().shape == ((rows, nk) if role == "a" else (nk, rows))

    # scales: recomputed group by group from exact amaxes
    cx = x if role == "a" else x.T
    cs = qz.scales if role == "a" else qz.scales.T
    ks = qz.k_scales() if role == "a" else qz.k_scales().T
    full = np.empty(cx.shape)
    for (i, j), rs, kslice in ref_groups(cx.shape, sc):
        amax = float(np.abs(cx[rs, kslice].astype(np.float64)).max())
        s = ref_scale(amax, sc, fmt)
        assert cs[i, j] == s, (i, j, amax)
        assert np.all(ks[rs, j] == s)
        full[rs, kslice] = s
    assert np.all(np.float32(qz.scales).astype(np.float64) == qz.scales)   # fp32 values
    if sc.scale_dtype != "fp32":
        assert np.all(np.frexp(qz.scales)[0] == 0.5)                       # powers of two
    full_t = full if role == "a" else full.T

    # values: representable; codes = ml_dtypes cast of RN32(RN32(x) / s), saturating
    check_representable(qz.values, fmt, "values")
    q32 = x.astype(np.float32) / full_t.astype(np.float32)
    got = qz.values.astype(np.float32).astype(ML[fmt]).view(np.uint8)
    np.testing.assert_array_equal(got, ml_codes(q32, fmt))
    assert np.array_equal(np.signbit(qz.values), np.signbit(q32))

    # dequantize = values * scale, exactly; error bound
    deq = qz.dequantize()
    np.testing.assert_array_equal(deq, qz.values * full_t)
    q = q32.astype(np.float64)
    sat = np.abs(q) > MAXF[fmt]
    assert np.all(np.abs(qz.values[sat]) == MAXF[fmt])
    ok = ~sat
    assert np.all(np.abs(qz.values - q)[ok] <= fp8_ulp(q, fmt)[ok] / 2)
    bound = full_t * (fp8_ulp(q, fmt) / 2 + (fp32_ulp(q) / 2 if sc.scale_dtype == "fp32" else 0))
    assert np.all(np.abs(deq - x)[ok] <= bound[ok])
    normal = ok & (np.abs(q) >= 2.0 ** EMIN[fmt])
    rel = np.abs(deq - x)[normal] / np.abs(x)[normal]
    assert rel.max() <= 2.0 ** -(MANT[fmt] + 1) * (1 + 2.0 ** -20)
    if sc.scale_dtype != "fp32":
        assert np.array_equal(q32.astype(np.float64), x.astype(np.float64) / full_t)  # exact

    # the amax element of each group maps to max finite (fp32) / within a factor 2 (pow2)
    vals = qz.values if role == "a" else qz.values.T
    for (i, j), rs, kslice in ref_groups(cx.shape, sc):
        blk = np.abs(cx[rs, kslice])
        if blk.max() == 0:
            continue
        top = np.abs(vals[rs, kslice]).reshape(-1)[np.argmax(blk)]
        if sc.granularity == "mx":
            assert 2.0 ** EMAX[fmt] <= top <= MAXF[fmt]
        elif sc.scale_dtype == "fp32":
            assert top == MAXF[fmt]
        else:
            assert MAXF[fmt] / 2 <= top <= MAXF[fmt]


@pytest.mark.parametrize("sc", [SCALINGS[1], SCALINGS[8], SCALINGS[-1]],
                         ids=["tensor-pow2", "block-pow2", "mx"])
def test_float64_input(sc):
    x64 = sample((20, 64), seed=5, dtype=np.float64) * (1 + 2.0 ** -40)  # not fp32 values
    qz = quantize(x64, "e4m3", sc, "a")
    full = qz.element_scales()
    q32 = x64.astype(np.float32) / full.astype(np.float32)
    got = qz.values.astype(np.float32).astype(ML["e4m3"]).view(np.uint8)
    np.testing.assert_array_equal(got, ml_codes(q32, "e4m3"))
    assert qz.amax == np.abs(x64).max()


def test_fp32_scale_double_rounding():
    """x = 0.3f, fp32 scale: q = RN32(0.3f / RN32(0.3f/448)) then RNE to e4m3."""
    x = np.array([[np.float32(0.3), np.float32(0.1)]], dtype=np.float32)
    qz = quantize(x, "e4m3", Scaling(), "a")
    s = float.fromhex("0x1.5f15f2p-11")                 # RN32(RN32(0.3) / 448)
    assert qz.scales[0, 0] == s
    assert qz.values[0, 0] == 448.0
    q = np.float32(0.1) / np.float32(s)                  # 149.33...: e4m3 step 16 -> 144
    assert qz.values[0, 1] == 144.0 and abs(q - 149.33) < 0.01


# ---- hand-computed examples ------------------------------------------------------------------
def test_hand_tensor():
    x = np.array([[1.0, -2.0], [3.0, 0.5]], dtype=np.float32)
    # fp32: s = RN32(3 / 448) = 0x1.b6db6ep-8; pow2: 2^-7 (2^-8 * 448 = 1.75 < 3 <= 3.5)
    q = quantize(x, "e4m3", Scaling(), "a")
    assert q.scales.tolist() == [[float.fromhex("0x1.b6db6ep-8")]]
    assert q.values[1, 0] == 448.0
    q = quantize(x, "e4m3", Scaling(scale_dtype="pow2"), "a")
    assert q.scales.tolist() == [[2.0 ** -7]]
    assert q.values.tolist() == [[128.0, -256.0], [384.0, 64.0]]
    np.testing.assert_array_equal(q.dequantize(), x)
    assert q.k_scales().tolist() == [[2.0 ** -7], [2.0 ** -7]]
    # e5m2, pow2: 3 / 57344 -> 2^-14 (2^-15 * 57344 = 1.75 < 3)
    q = quantize(x, "e5m2", Scaling(scale_dtype="pow2"), "b")
    assert q.scales.tolist() == [[2.0 ** -14]] and q.k_scales().shape == (1, 2)


def test_hand_channel():
    w = np.array([[1.0, 0.0, -448.0], [2.0, 0.0, 100.0]], dtype=np.float32)   # (K=2, N=3)
    q = quantize(w, "e4m3", Scaling(granularity="channel"), "b")
    # columns: amax 2 -> RN32(2/448) = 0x1.24924ap-8 (2/7 * 2^-6); 0 -> 1.0; 448 -> 1.0
    assert q.scales.tolist() == [[float.fromhex("0x1.24924ap-8"), 1.0, 1.0]]
    assert q.k_scales().tolist() == q.scales.tolist()
    assert q.values[:, 2].tolist() == [-448.0, 96.0]          # 100: tie of 96 / 104 -> 96 (even)
    assert q.values[:, 1].tolist() == [0.0, 0.0]
    qa = quantize(w.T.copy(), "e4m3", Scaling(granularity="channel"), "a")
    np.testing.assert_array_equal(qa.scales, q.scales.T)
    np.testing.assert_array_equal(qa.values, q.values.T)


def test_hand_group():
    x = np.zeros((2, 8), dtype=np.float32)
    x[0, :4] = [4.0, -1.0, 0.25, 3.0]
    x[0, 4:] = [0.5, 0.0, -0.125, 0.0]
    x[1, :4] = [448.0, 1.0, 0.0, 0.0]                       # second group of row 1: all zero
    sc = Scaling(granularity="group", group_size=4, scale_dtype="pow2")
    q = quantize(x, "e4m3", sc, "a")
    # 4/448 in (2^-7, 2^-6] -> 2^-6; 0.5/448 in (2^-10, 2^-9] -> 2^-9; 448 -> 1; 0 -> 1
    assert q.scales.tolist() == [[2.0 ** -6, 2.0 ** -9], [1.0, 1.0]]
    assert q.values[0].tolist() == [256.0, -64.0, 16.0, 192.0, 256.0, 0.0, -64.0, 0.0]
    q = quantize(x, "e4m3", Scaling(granularity="group", group_size=4), "a")
    assert q.scales.tolist() == [[float.fromhex("0x1.24924ap-7"), float.fromhex("0x1.24924ap-10")],
                                 [1.0, 1.0]]
    qb = quantize(x.T.copy(), "e4m3", Scaling(granularity="group", group_size=4), "b")
    assert qb.scales.shape == (2, 2)
    np.testing.assert_array_equal(qb.scales, q.scales.T)


def test_hand_block():
    x = np.array([[1.0, 2.0, 0.0, 0.0],
                  [-8.0, 0.5, 0.0, 0.0],
                  [0.25, 0.0, 7.0, -14.0]], dtype=np.float32)   # (M=3, K=4), g=2
    sc = Scaling(granularity="block", group_size=2, scale_dtype="pow2")
    q = quantize(x, "e4m3", sc, "a")
    # blocks rows {0,1} x K {0,1}: amax 8 -> 2^-5 (8/448 in (2^-6, 2^-5]); rows {0,1} x K {2,3}:
    # 0 -> 1; row {2} (partial) x K {0,1}: 0.25 -> 2^-10; row {2} x K {2,3}: 14 -> 2^-5
    assert q.scales.tolist() == [[2.0 ** -5, 1.0], [2.0 ** -10, 2.0 ** -5]]
    assert q.k_scales().tolist() == [[2.0 ** -5, 1.0], [2.0 ** -5, 1.0], [2.0 ** -10, 2.0 ** -5]]
    np.testing.assert_array_equal(q.dequantize(), x)            # all exact here
    qb = quantize(x.T.copy(), "e4m3", sc, "b")                  # (K=4, N=3)
    assert qb.scales.tolist() == [[2.0 ** -5, 2.0 ** -10], [1.0, 2.0 ** -5]]
    assert qb.k_scales().shape == (2, 3)
    np.testing.assert_array_equal(qb.k_scales(), q.k_scales().T)


def test_hand_mx():
    sc = Scaling(granularity="mx", group_size=32, scale_dtype="ue8m0")
    x = np.zeros((2, 64), dtype=np.float32)
    x[0, :3] = [3.0, -1.0, 0.0078125]            # amax 3: shared_exp = 1 - 8 = -7
    x[0, 32] = 1.9375                            # floor(log2) = 0 -> 2^-8: 496 saturates to 448
    x[0, 33] = -1.875                            # 480 -> -448
    x[0, 34] = 1.75                              # 448
    x[1, 32] = 2.0 ** -140                       # 2^(-140-8) clamps to 2^-127
    q = quantize(x, "e4m3", sc, "a")
    assert q.scales.tolist() == [[2.0 ** -7, 2.0 ** -8], [1.0, 2.0 ** -127]]
    assert q.values[0, :3].tolist() == [384.0, -128.0, 1.0]
    assert q.values[0, 32:35].tolist() == [448.0, -448.0, 448.0]
    assert q.values[1, 32] == 0.0                # 2^-140 / 2^-127 = 2^-13 < 2^-10: rounds to 0
    qe5 = quantize(x, "e5m2", sc, "a")
    assert qe5.scales[0, 0] == 2.0 ** (1 - 15)
    assert qe5.values[0, 0] == 3.0 * 2 ** 14


def test_deepseek_layout():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 512)).astype(np.float32)
    w = rng.standard_normal((512, 384)).astype(np.float32)
    r = Recipe.deepseek_v3()
    qa = quantize(x, r.a_format, r.a_scaling, "a")
    qb = quantize(w, r.b_format, r.b_scaling, "b")
    assert qa.scales.shape == (256, 4) and qa.k_scales().shape == (256, 4)
    assert qb.scales.shape == (4, 3) and qb.k_scales().shape == (4, 384)
    np.testing.assert_array_equal(qb.k_scales()[:, 128:256],
                                  np.repeat(qb.scales[:, 1:2], 128, axis=1))
    assert qa.scales[7, 2] == np.float32(np.abs(x[7, 256:384]).max()) / np.float32(448)
    blk = np.abs(w[128:256, 256:384]).max()
    assert qb.scales[1, 2] == np.float32(blk) / np.float32(448)
    # the GEMM of the dequantised operands is close to the exact one
    ref = x.astype(np.float64) @ w.astype(np.float64)
    got = qa.dequantize() @ qb.dequantize()
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.05


def test_mx_recipe_layout():
    r = Recipe.mxfp8()
    x = sample((8, 96), seed=1)
    w = sample((96, 5), seed=2)
    assert quantize(x, "e4m3", r.a_scaling, "a").k_scales().shape == (8, 3)
    assert quantize(w, "e4m3", r.b_scaling, "b").k_scales().shape == (3, 5)


# ---- delayed scaling, margins, zero and tiny amaxes ------------------------------------------
def test_delayed_scaling_history():
    x = np.array([[3.0, -1.0], [0.5, 2.0]], dtype=np.float32)
    hist = np.array([1.0, 50.0, 2.0, 10.0, 4.0])
    fp32 = lambda a: float(np.float32(a) / np.float32(448))   # noqa: E731
    cases = {1: 3.0, 2: 4.0, 3: 10.0, 5: 50.0, 6: 50.0, 1024: 50.0}  # L -> amax_used
    for L, used in cases.items():
        q = quantize(x, "e4m3", Scaling(amax_history=L), "a", amax_history=hist)
        assert q.scales[0, 0] == fp32(used), L
        assert q.amax == 3.0                                   # the current amax
    q = quantize(x, "e4m3", Scaling(amax_history=4), "a", amax_history=None)
    assert q.scales[0, 0] == fp32(3.0)
    q = quantize(x, "e4m3", Scaling(amax_history=4), "a", amax_history=np.array([]))
    assert q.scales[0, 0] == fp32(3.0)
    # margin: an exact power-of-two multiple; the history max can saturate nothing
    q = quantize(x, "e4m3", Scaling(amax_history=3, margin=2), "a", amax_history=hist)
    assert q.scales[0, 0] == fp32(10.0) * 4
    v = np.float32(3.0) / np.float32(fp32(10.0) * 4)
    assert q.values[0, 0] == np.float32(v).astype(ML["e4m3"]).astype(np.float64)
    # the history as a caller keeps it: append the current amax
    hist2 = np.append(hist, q.amax)
    q2 = quantize(x * 0, "e4m3", Scaling(amax_history=2), "a", amax_history=hist2)
    assert q2.scales[0, 0] == fp32(3.0) and q2.amax == 0.0
    np.testing.assert_array_equal(q2.values, 0.0)


def test_margin_other_dtypes():
    x = np.array([[3.0, 1.0]], dtype=np.float32)
    q = quantize(x, "e4m3", Scaling(scale_dtype="pow2", margin=3), "a")
    assert q.scales[0, 0] == 2.0 ** -4                   # 2^-7 * 2^3
    q = quantize(x, "e4m3", Scaling(scale_dtype="ue8m0", margin=1), "a")
    assert q.scales[0, 0] == 2.0 ** -6


def test_zero_amax():
    for sc in SCALINGS:
        k = 64
        x = np.zeros((5, k), dtype=np.float32)
        q = quantize(x, "e4m3", sc, "a")
        assert np.all(q.scales == 1.0) and q.amax == 0.0
        np.testing.assert_array_equal(q.values, 0.0)
    q = quantize(np.zeros((2, 2), np.float32), "e4m3", Scaling(margin=5), "a")
    assert q.scales[0, 0] == 1.0                          # no margin on an all-zero group
    q = quantize(-np.zeros((2, 2), np.float32), "e4m3", Scaling(), "a")
    assert np.all(np.signbit(q.values))                   # -0 kept


def test_tiny_amax():
    tiny = np.float32(2.0 ** -149)                        # smallest fp32 subnormal
    x = np.array([[tiny, -tiny, 0.0]], dtype=np.float32)
    q = quantize(x, "e4m3", Scaling(), "a")               # RN32(2^-149 / 448) = 0 -> 2^-149
    assert q.scales[0, 0] == 2.0 ** -149
    assert q.values.tolist() == [[1.0, -1.0, 0.0]]
    np.testing.assert_array_equal(q.dequantize(), x)
    assert quantize(x, "e4m3", Scaling(scale_dtype="pow2"), "a").scales[0, 0] == 2.0 ** -149
    q = quantize(x, "e4m3", Scaling(scale_dtype="ue8m0"), "a")
    assert q.scales[0, 0] == 2.0 ** -127 and np.all(q.values == 0)
    x64 = np.array([[1e-300, 0.0]])                       # below fp32: RN32 gives 0
    q = quantize(x64, "e4m3", Scaling(), "a")
    assert q.amax == 1e-300 and q.scales[0, 0] == 2.0 ** -149 and q.values[0, 0] == 0.0


def test_large_amax_and_margin_overflow():
    x = np.array([[3.0e38, -1.0]], dtype=np.float32)
    q = quantize(x, "e4m3", Scaling(), "a")
    assert q.values[0, 0] == 448.0
    q = quantize(x, "e5m2", Scaling(scale_dtype="ue8m0"), "a")
    assert q.values[0, 0] <= 57344.0
    with pytest.raises(FormatError, match="margin"):
        quantize(x, "e4m3", Scaling(margin=64), "a")


# ---- padding and errors ----------------------------------------------------------------------
def test_pad_k():
    x = sample((3, 100), seed=3)
    xp = pad_k(x, 32, role="a")
    assert xp.shape == (3, 128) and xp.dtype == np.float32
    np.testing.assert_array_equal(xp[:, :100], x)
    assert np.all(xp[:, 100:] == 0)
    wp = pad_k(x.T, 32, role="b")
    assert wp.shape == (128, 3)
    assert pad_k(xp, 32, "a") is not xp and pad_k(xp, 32, "a").shape == (3, 128)
    sc = Scaling(granularity="mx", group_size=32, scale_dtype="ue8m0")
    q = quantize(xp, "e4m3", sc, "a")
    assert q.scales.shape == (3, 4)
    q1 = quantize(xp[:, :96], "e4m3", sc, "a")
    np.testing.assert_array_equal(q.values[:, :96], q1.values)
    with pytest.raises(ShapeError):
        pad_k(x, 0, "a")
    with pytest.raises(ShapeError):
        pad_k(x, 4, "c")


def test_k_not_multiple():
    x = np.ones((4, 1000), np.float32)
    msg = ("K = 1000 is not a multiple of the group size 128: pad K to 1024 with zeros, "
           "e.g. tcsim.quant.pad_k(x, 128, role='a')")
    with pytest.raises(ShapeError) as ei:
        quantize(x, "e4m3", Scaling(granularity="group"), "a")
    assert str(ei.value) == msg
    with pytest.raises(ShapeError, match=r"pad_k\(x, 128, role='b'\)"):
        quantize(x.T, "e4m3", Scaling(granularity="block"), "b")
    with pytest.raises(ShapeError, match="mx block size 32: pad K to 1024"):
        quantize(np.ones((2, 1000), np.float32), "e4m3",
                 Scaling(granularity="mx", group_size=32, scale_dtype="ue8m0"), "a")
    # tensor / channel need no padding
    assert quantize(x, "e4m3", Scaling(granularity="channel"), "a").scales.shape == (4, 1)


def test_nan_inf():
    x = np.ones((4, 8), np.float32)
    x[3, 5] = np.inf
    x[3, 6] = np.nan
    with pytest.raises(FormatError) as ei:
        quantize(x, "e4m3", Scaling(), "a")
    assert str(ei.value) == "quantize: x[3, 5] = inf; NaN/Inf cannot be scaled"
    y = np.ones((2, 2))
    y[1, 0] = np.nan
    with pytest.raises(FormatError, match=r"x\[1, 0\] = nan"):
        quantize(y, "e5m2", Scaling(), "b")
    with pytest.raises(FormatError, match="overflows float32"):
        quantize(np.array([[1e39, 1.0]]), "e4m3", Scaling(), "a")


def test_bad_inputs():
    x = np.ones((4, 8), np.float32)
    for bad in (x.astype(np.float16), x.astype(np.int32), x.astype(ml_dtypes.bfloat16)):
        with pytest.raises(FormatError, match="float32 or float64"):
            quantize(bad, "e4m3", Scaling(), "a")
    with pytest.raises(ShapeError, match="role"):
        quantize(x, "e4m3", Scaling(), "c")
    with pytest.raises(ShapeError, match="2-D"):
        quantize(np.ones(8, np.float32), "e4m3", Scaling(), "a")
    with pytest.raises(ShapeError, match="2-D"):
        quantize(np.ones((2, 2, 2), np.float32), "e4m3", Scaling(), "b")
    with pytest.raises(FormatError):
        quantize(x, "fp16", Scaling(), "a")
    with pytest.raises(FormatError):
        quantize(x, "nope", Scaling(), "a")
    with pytest.raises(ConfigError):
        quantize(x, "e4m3", {"granularity": "tensor"}, "a")
    with pytest.raises(ConfigError, match="delayed scaling is off"):
        quantize(x, "e4m3", Scaling(), "a", amax_history=np.array([1.0]))
    with pytest.raises(ShapeError, match="1-D"):
        quantize(x, "e4m3", Scaling(amax_history=4), "a", amax_history=np.ones((2, 2)))
    with pytest.raises(FormatError, match=r"amax_history\[1\]"):
        quantize(x, "e4m3", Scaling(amax_history=4), "a", amax_history=np.array([1.0, np.nan]))
    for exc in (FormatError, ShapeError, ConfigError):
        assert issubclass(exc, TcsimError)


def test_quantized_is_frozen():
    q = quantize(np.ones((2, 4), np.float32), "e4m3", Scaling(), "a")
    with pytest.raises(Exception):
        q.fmt = "e5m2"
    assert q.values.flags.c_contiguous and q.scales.flags.c_contiguous
    assert quant.EMAX_ELEM == {"e4m3": 8, "e5m2": 15, "e2m1": 2}   # OCP MX v1.0 table


def test_fast_cast_equals_the_codec():
    """quantize's ml_dtypes cast (after clipping) equals round_to_format with RNE and
    saturation, the independently tested codec, on every code, its float32 neighbours and
    values beyond max (saturated)."""
    from tcsim.formats.conversion import decode, round_to_format
    from tcsim.quant import quantize
    from tcsim.recipe import Scaling
    for fmt in ("e4m3", "e5m2"):
        vals = decode(np.arange(256, dtype=np.uint8), fmt)
        vals = vals[np.isfinite(vals)].astype(np.float32)
        probe = np.concatenate([vals, np.nextafter(vals, np.float32(np.inf)),
                                np.nextafter(vals, np.float32(-np.inf)), vals * np.float32(1.03),
                                vals * np.float32(1.5)])
        x = probe.reshape(1, -1)
        q = quantize(x, fmt, Scaling(), "a")                 # per-tensor fp32 scale
        s = np.float32(q.scales[0, 0])
        want = round_to_format((x / s).astype(np.float64), fmt, rounding="rne",
                                       overflow="saturate")
        np.testing.assert_array_equal(q.values, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blockwise_group_amax_is_exact(dtype, monkeypatch):
    """quantize's amax pass works a block of rows at a time in x's own dtype (no float64 copy):
    with tiny blocks, every way a block meets the groups (whole groups, parts of one group, a
    partial last group along either axis) gives the exact float64 group maxima."""
    monkeypatch.setattr(quant, "_BLOCK_ELEMENTS", 50)
    rng = np.random.default_rng(3)
    for rows, cols, g0, g1 in ((37, 30, 5, 7), (30, 7, 12, 1), (100, 3, 100, 3), (5, 200, 1, 16),
                               (61, 9, 61, 9), (41, 20, 8, 8)):
        x = (rng.standard_normal((rows, cols)) * np.exp2(rng.integers(-60, 60, (rows, cols))))
        x = x.astype(dtype)
        want = np.zeros((-(-rows // g0), -(-cols // g1)))
        for i in range(want.shape[0]):
            for j in range(want.shape[1]):
                block = x[i * g0:(i + 1) * g0, j * g1:(j + 1) * g1].astype(np.float64)
                want[i, j] = np.abs(block).max()
        np.testing.assert_array_equal(quant._group_amax(x, g0, g1), want)
    x = sample((40, 64), seed=2, dtype=dtype)
    x[23, 5] = np.nan
    with pytest.raises(FormatError, match=r"x\[23, 5\] = nan"):
        quantize(x, "e4m3", Scaling(granularity="tensor"), "a")
