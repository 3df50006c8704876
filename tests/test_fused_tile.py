"""The fused float32 kernel (tcsim._kernels.fused) bit for bit against the staged kernel
(the general route of every finite-fraction-bits datapath) and against the exact oracle
(tcsim.reference).

"staged" below is tcsim.mma with the fused route switched off (route.fused_serves -> False), so
the same operands run through tcsim._kernels.staged; every comparison is of uint32 / uint16 bit
patterns, signed zeros and NaN payloads included. Each test first checks that the fused route
really serves the case, so that none can pass by running the old kernel twice.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import (
    assert_same_bits_whatever_the_thread_count,
    bits,
    describe_routes,
    recorded_routes,
)
from strategies import datapath_modes
from tcsim import load_model, reference, route
from tcsim._kernels import fused
from tcsim.datapath import Datapath
from tcsim.formats.catalog import code_dtype, get_format
from tcsim.formats.conversion import decode, round_to_format
from tcsim.mma import mma
from tcsim.presets import preset_names
from tcsim.route import fits_float32, fused_serves

FP8_AND_FP16 = ("e4m3", "e5m2", "fp16")


def _served(dp, a_fmt, b_fmt, acc, k) -> bool:
    return (fits_float32(dp, a_fmt, b_fmt, k) and fused_serves(dp, a_fmt, b_fmt, acc, False))


def _staged(monkeypatch, a, b, c, dp, a_fmt, b_fmt, acc):
    """tcsim.mma through the staged kernel (the fused route switched off), and the routes it
    took (helpers.recorded_routes)."""
    with monkeypatch.context() as m, recorded_routes() as routes:
        m.setattr(route, "fused_serves", lambda *args: False)
        return mma(a, b, c, model=dp, a_format=a_fmt, b_format=b_fmt, acc=acc), routes


def _assert_same(got, want, what="", routes=()):
    """Same dtype and bits; a failure names ``what`` is compared and the kernel routes that
    ran."""
    assert got.dtype == want.dtype
    bad = np.flatnonzero(bits(got) != bits(want))
    assert bad.size == 0, (
        f"{what}: {bad.size} of {got.size} outputs differ; first at index {bad[0]}: "
        f"{got.flat[bad[0]]!r} ({bits(got).flat[bad[0]]:#x}) vs "
        f"{want.flat[bad[0]]!r} ({bits(want).flat[bad[0]]:#x})\n{describe_routes(routes)}")


def _fused_mma(a, b, c, dp, a_fmt, b_fmt, acc):
    """tcsim.mma, checked to have run the fused kernel (fused.run called)."""
    assert _served(dp, a_fmt, b_fmt, acc, a.shape[-1]), "the fused route does not serve this"
    calls = []
    real = fused.run
    with pytest.MonkeyPatch.context() as m:
        m.setattr(fused, "run", lambda *args: calls.append(1) or real(*args))
        got = mma(a, b, c, model=dp, a_format=a_fmt, b_format=b_fmt, acc=acc)
    assert calls, "tcsim.mma did not run the fused kernel"
    return got


def _check_staged(monkeypatch, a, b, c, dp, a_fmt, b_fmt, acc="fp32"):
    got = _fused_mma(a, b, c, dp, a_fmt, b_fmt, acc)
    want, routes = _staged(monkeypatch, a, b, c, dp, a_fmt, b_fmt, acc)
    _assert_same(got, want, "fused vs staged", routes)
    return got


def _check_oracle(a, b, c, dp, a_fmt, b_fmt, acc="fp32"):
    with recorded_routes() as routes:
        got = _fused_mma(a, b, c, dp, a_fmt, b_fmt, acc)
    _assert_same(got, reference.mma(a, b, c, dp, a_fmt, b_fmt, acc), "fused vs oracle", routes)
    return got


def _preset_cases():
    """Every (preset, path, format, accumulator) of models/ that the fused route serves."""
    cases = []
    for name in preset_names():
        for path in load_model(name).paths:
            for fmt in path.inputs:
                dp = path.datapath()
                if _served(dp, fmt, fmt, path.output, 4096):
                    cases.append(pytest.param(name, path.name, fmt, path.output,
                                              id=f"{name}-{path.name}-{fmt}-{path.output}"))
    return cases


PRESET_CASES = _preset_cases()


def test_preset_discovery_finds_the_fp8_paths():
    """The FP8 paths of Hopper and Ada run on the fused kernel (fp32 and fp16 output)."""
    ids = {p.id for p in PRESET_CASES}
    for want in ("h100-wgmma-e4m3-fp32", "h100-wgmma-e5m2-fp16", "h200-wgmma-e4m3-fp32",
                 "ada-mma.sync-e4m3-fp32", "l40s-mma.sync-e5m2-fp16"):
        assert want in ids


def _operands(rng, fmt, m, k, n, acc, spread=3, zeros=0.1):
    """Random operands of ``fmt`` over a wide exponent range, with zeros of both signs."""
    a = rng.standard_normal((m, k)) * 2.0 ** rng.integers(-spread, spread + 1, (m, k))
    b = rng.standard_normal((k, n)) * 2.0 ** rng.integers(-spread, spread + 1, (k, n))
    a[rng.random(a.shape) < zeros] = 0.0
    b[rng.random(b.shape) < zeros] = -0.0
    a = round_to_format(a, fmt, overflow="saturate")
    b = round_to_format(b, fmt, overflow="saturate")
    top = 3000.0 if acc == "fp16" else 1e30
    c = rng.standard_normal((m, n)) * np.exp(rng.uniform(-30.0, math.log(top), (m, n)))
    c = np.clip(c, -60000.0, 60000.0) if acc == "fp16" else c
    c[rng.random(c.shape) < 0.1] = 0.0
    c[rng.random(c.shape) < 0.05] = -0.0
    return a, b, c.astype(np.float16 if acc == "fp16" else np.float32)


@pytest.mark.parametrize("model,path,fmt,acc", PRESET_CASES)
def test_presets_equal_staged_kernel_across_tile_edges(monkeypatch, model, path, fmt, acc):
    """M, N not multiples of the 16 x 512 tile, K not a multiple of the block."""
    dp = load_model(model).find_path(fmt, fmt, acc, path).datapath()
    rng = np.random.default_rng(abs(hash((model, path, fmt, acc))) % 2**32)
    a, b, c = _operands(rng, fmt, 19, 2 * dp.block_size + 5, 515, acc)
    _check_staged(monkeypatch, a, b, c, dp, fmt, fmt, acc)


@pytest.mark.parametrize("model,path,fmt,acc", PRESET_CASES)
def test_presets_equal_oracle(model, path, fmt, acc):
    dp = load_model(model).find_path(fmt, fmt, acc, path).datapath()
    rng = np.random.default_rng(abs(hash((model, fmt, acc))) % 2**32)
    a, b, c = _operands(rng, fmt, 3, 3 * dp.block_size - 7, 4, acc)
    _check_oracle(a, b, c, dp, fmt, fmt, acc)


H100_FP32 = load_model("h100").find_path("e4m3", "e4m3", "fp32").datapath()
H100_FP16 = load_model("h100").find_path("e4m3", "e4m3", "fp16").datapath()


def test_zero_results_and_signs(monkeypatch):
    """Exact zeros (+0 under zero_sign plus, whatever the signs of C and of zero products),
    cancellation to an exact zero, and nonzero sums that round to a signed zero."""
    dp = H100_FP16
    a = np.array([[0.0, 0.0], [-0.0, 0.0], [1.0, -1.0], [2.0 ** -14, 0.0], [-(2.0 ** -16), 0.0]])
    b = np.array([[-0.0, 1.0, 2.0 ** -16], [0.0, 1.0, 0.0]])
    c = np.array([[-0.0, 0.0, -0.0]] * 5, dtype=np.float16)
    got = _check_oracle(a, b, c, dp, "e5m2", "e5m2", "fp16")
    assert not np.signbit(got[:3]).any()                 # exact zeros are +0
    # -2^-16 * 2^-16 = -2^-32 rounds to an fp16 zero (below half the 2^-24 spacing): its sign
    # stays; 2^-14 * 2^-16 = 2^-30 likewise rounds to +0
    assert got[4, 2] == 0 and np.signbit(got[4, 2])
    assert got[3, 2] == 0 and not np.signbit(got[3, 2])
    _check_staged(monkeypatch, a, b, c, dp, "e5m2", "e5m2", "fp16")


def test_subnormal_results_and_subnormal_c(monkeypatch):
    """fp32 subnormal C (E at -126, grid 2^(-126-13)), fp16 subnormal results of tiny
    products, and C alone in a block of zero products."""
    rng = np.random.default_rng(5)
    tiny = np.ldexp(rng.integers(-2 ** 23 + 1, 2 ** 23, (4, 6)).astype(np.float64), -149)
    a = np.zeros((4, 40))
    a[:, :3] = rng.choice([2.0 ** -9, -(2.0 ** -8), 0.0], (4, 3))
    b = round_to_format(rng.standard_normal((40, 6)) * 2.0 ** -6, "e4m3")
    c32 = tiny.astype(np.float32)
    assert (np.abs(c32) < np.finfo(np.float32).tiny).all()
    _check_oracle(a, b, c32, H100_FP32, "e4m3", "e4m3")
    _check_staged(monkeypatch, a, b, c32, H100_FP32, "e4m3", "e4m3")
    c16 = np.ldexp(rng.integers(-1023, 1024, (4, 6)).astype(np.float64), -24).astype(np.float16)
    got = _check_oracle(a, b, c16, H100_FP16, "e4m3", "e4m3", "fp16")
    assert (np.abs(got[got != 0]) < 2.0 ** -14).any()    # some results are fp16 subnormals
    _check_staged(monkeypatch, a, b, c16, H100_FP16, "e4m3", "e4m3", "fp16")


def test_values_near_overflow(monkeypatch):
    """fp32 C at the top of the range (RZ keeps the largest 14-bit value), fp16 results that
    overflow to Inf (RNE) and stay Inf through the next blocks of the chain."""
    big = np.float32(np.finfo(np.float32).max)
    a = np.full((2, 70), 448.0)
    a[1] *= -1
    b = np.full((70, 3), 448.0)
    c = np.array([[big, -big, 3e38], [big, 1.0, -3e38]], dtype=np.float32)
    got = _check_oracle(a, b, c, H100_FP32, "e4m3", "e4m3")
    assert np.isfinite(got).all()
    _check_staged(monkeypatch, a, b, c, H100_FP32, "e4m3", "e4m3")
    a5 = np.full((2, 70), 57344.0)
    a5[1, :40] = -57344.0
    b5 = np.full((70, 3), 2.0)
    c16 = np.array([[60000, -60000, 0], [1, 65504, -65504]], dtype=np.float16)
    got = _check_oracle(a5, b5, c16, H100_FP16, "e5m2", "e5m2", "fp16")
    assert np.isinf(got).any()
    _check_staged(monkeypatch, a5, b5, c16, H100_FP16, "e5m2", "e5m2", "fp16")


@pytest.mark.parametrize("overflow", ["ieee", "inf", "saturate"])
def test_c_term_rounding_past_the_float32_range(monkeypatch, overflow):
    """A C just below 2^128 whose term rounds up to 2^128 (f = 0, nearest terms): the block sum
    S * 2^(E-f) overflows the kernel's float32 state, and the result must be the overflow
    result (RZ, IEEE: the largest finite value; found by hypothesis in CI)."""
    dp = Datapath(block_size=1, fraction_bits=0, term_rounding="rne", output_rounding="rz",
                  overflow=overflow)
    a = np.array([[0.001953125], [-0.001953125]])
    b = np.array([[-0.03515625, 0.1875, 0.625]])
    c = np.array([[-2.6737467e38, 2.6737467e38, 1.0], [2.6737467e38, -3e38, -1.0]],
                 dtype=np.float32)
    got = _check_oracle(a, b, c, dp, "e4m3", "e4m3")
    _check_staged(monkeypatch, a, b, c, dp, "e4m3", "e4m3")
    assert np.isinf(got[0, :2]).all() == (overflow == "inf")


# The modes the fused tile leaves to the staged kernel (route.fused_serves), each with why;
# test_excluded_modes_are_not_served checks that the route refuses every one.
FUSED_EXCLUDED = {
    "term_rounding": {"floor": "a floored term below the float32 range is not the exact "
                               "value's (route.fits_float32)",
                      "sr": "stochastic terms are a stage of the staged kernel"},
    "output_rounding": {"sr": "the tile rounds its output with RZ or RNE only"},
    "zero_sign": {"ieee": "the tile gives +0 for every zero result"},
}


def _fused_modes(field: str):
    return datapath_modes(field, FUSED_EXCLUDED.get(field))


@st.composite
def served_datapaths(draw, acc: str):
    """Datapaths of the family the fused kernel serves (fused sum, C inside, unnormalised
    products, float32-exact sums), every other field drawn (the modes from Datapath's own
    values less FUSED_EXCLUDED)."""
    n = draw(st.sampled_from([1, 2, 3, 4, 8, 16, 32, 64]))
    f_max = 24 - 2 - math.ceil(math.log2(n + 1))
    p_max = get_format(acc).precision
    return Datapath(
        block_size=n, fraction_bits=draw(st.integers(0, f_max)),
        term_rounding=draw(_fused_modes("term_rounding")),
        output_precision=draw(st.one_of(st.none(), st.integers(2, p_max))),
        output_rounding=draw(_fused_modes("output_rounding")),
        min_exp_limit=draw(st.one_of(st.none(), st.integers(-140, 10))),
        zero_operand_exponent=draw(st.sampled_from([None, None, -64, -14, -6, 0, 20, 63])),
        subnormal_inputs=draw(_fused_modes("subnormal_inputs")),
        subnormal_outputs=draw(_fused_modes("subnormal_outputs")),
        zero_sign=draw(_fused_modes("zero_sign")),
        overflow=draw(_fused_modes("overflow")))


@pytest.mark.parametrize("field,mode", [(f, m) for f, modes in FUSED_EXCLUDED.items()
                                        for m in modes])
def test_excluded_modes_are_not_served(field, mode):
    """Each mode served_datapaths leaves out is one the fused route refuses (so the exclusion
    list cannot hide a mode the tile claims to serve)."""
    dp = Datapath(block_size=32, fraction_bits=13, **{field: mode})
    assert not _served(dp, "e4m3", "e4m3", "fp32", 64), (field, mode)


@st.composite
def problems(draw, max_mn: int, max_k: int):
    acc = draw(st.sampled_from(["fp32", "fp32", "fp16"]))
    dp = draw(served_datapaths(acc))
    a_fmt = draw(st.sampled_from(route.INT8_EXPONENT_FORMATS))
    b_fmt = draw(st.sampled_from([a_fmt] + list(route.INT8_EXPONENT_FORMATS)))
    m, n = draw(st.integers(1, max_mn)), draw(st.integers(1, max_mn))
    k = draw(st.integers(1, max_k))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    style = draw(st.sampled_from(["codes", "narrow", "cancel"]))

    def operand(fmt, shape):
        f = get_format(fmt)
        if style == "codes":        # every code of the format, NaN/Inf codes made zero
            codes = rng.integers(0, 1 << f.bits, shape).astype(code_dtype(fmt))
            x = decode(codes, fmt)
            return np.where(np.isfinite(x), x, 0.0)
        x = rng.standard_normal(shape) * 2.0 ** rng.integers(-2, 3, shape)
        x = round_to_format(x * 2.0 ** rng.integers(f.emin, f.emax + 1), fmt,
                                    overflow="saturate")
        return x

    a, b = operand(a_fmt, (m, k)), operand(b_fmt, (k, n))
    if style == "cancel" and k >= 2:    # products that cancel exactly in pairs
        b[k // 2:2 * (k // 2)] = b[:k // 2]
        a[:, k // 2:2 * (k // 2)] = -a[:, :k // 2]
    for x, fmt in ((a, a_fmt), (b, b_fmt)):
        if not get_format(fmt).has_negative_zero:     # FNUZ: no -0
            x[x == 0] = 0.0
    acc_fmt = get_format(acc)
    codes = rng.integers(0, 1 << acc_fmt.bits, (m, n)).astype(code_dtype(acc))
    c = decode(codes, acc)
    c = np.where(np.isfinite(c), c, 0.0) * (rng.random((m, n)) < 0.8)
    return dp, a_fmt, b_fmt, acc, a, b, c.astype(np.float16 if acc == "fp16" else np.float32)


SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@SETTINGS
@given(problems(max_mn=3, max_k=70))
def test_random_datapaths_equal_oracle(problem):
    dp, a_fmt, b_fmt, acc, a, b, c = problem
    _check_oracle(a, b, c, dp, a_fmt, b_fmt, acc)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(problems(max_mn=40, max_k=150), st.integers(0, 3))
def test_random_datapaths_equal_staged_kernel_on_tile_edges(monkeypatch, problem, wide):
    """Shapes up to a few tile rows (and one with N past the 512-column tile edge)."""
    dp, a_fmt, b_fmt, acc, a, b, c = problem
    if wide == 0:       # cross the column tile edge: repeat the columns to N > 512
        reps = 513 // b.shape[1] + 1
        b, c = np.tile(b, (1, reps)), np.tile(c, (1, reps))
    _check_staged(monkeypatch, a, b, c, dp, a_fmt, b_fmt, acc)


def test_thread_count_does_not_change_results():
    """Each tile is computed whole by one thread: 1 thread and all threads, same bits."""
    rng = np.random.default_rng(11)
    a, b, c = _operands(rng, "e4m3", 70, 200, 600, "fp32")
    assert_same_bits_whatever_the_thread_count(
        lambda: _fused_mma(a, b, c, H100_FP32, "e4m3", "e4m3", "fp32"))


def test_bit_helpers():
    """pow2_f32 = 2^e over the float32 range (subnormal powers included); shift_round = the
    truncated / nearest-even quotient, against Python integers."""
    for e in range(-149, 128):
        assert fused.pow2_f32(np.int32(e)) == np.float32(math.ldexp(1.0, e)), e
    rng = np.random.default_rng(2)
    sigs = list(rng.integers(0, 1 << 24, 300)) + [0, 1, 2, 3, (1 << 24) - 1, 1 << 23, 6, 10]
    for sig in sigs:
        for k in range(0, 26):
            sig32, k32 = np.int32(sig), np.int32(k)
            assert fused.shift_round(sig32, k32, False) == sig >> k
            q, rem = divmod(int(sig), 1 << k)
            if 2 * rem > (1 << k) or (2 * rem == (1 << k) and q % 2 == 1):
                q += 1
            assert fused.shift_round(sig32, k32, True) == q, (sig, k)


def test_not_served_cases_stay_on_the_other_kernels():
    """NaN/Inf inputs, the IEEE zero sign, stochastic rounding, floor terms and C after the
    product sum are not the fused kernel's: fused_serves() says so."""
    base = dict(block_size=32, fraction_bits=13)
    assert fused_serves(Datapath(**base), "e4m3", "e4m3", "fp32", False)
    assert not fused_serves(Datapath(**base), "e4m3", "e4m3", "fp32", True)
    for extra in (dict(zero_sign="ieee"), dict(output_rounding="sr"),
                  dict(term_rounding="floor"), dict(zero_operand_exponent=-126),
                  dict(c_placement="after", product_sum_precision=24),
                  dict(product_alignment="normalized")):
        assert not fused_serves(Datapath(**base, **extra), "e4m3", "e4m3", "fp32", False), extra
    assert not fused_serves(Datapath(**base), "bf16", "bf16", "fp32", False)


@pytest.mark.parametrize("rounding", ["rz", "rne"])
@pytest.mark.parametrize("acc", ["fp32", "fp16"])
def test_flushed_results_keep_their_sign(monkeypatch, rounding, acc):
    """subnormal_outputs = flush: a result below 2^emin becomes a zero of its own sign (both
    rounding routes of the finish: the fp32 RZ mask and the general rounding)."""
    dp = Datapath(block_size=16, fraction_bits=13, output_rounding=rounding,
                  subnormal_outputs="flush")
    tiny = 2.0 ** -140 if acc == "fp32" else 2.0 ** -13
    a = np.array([[2.0 ** -9, 0.0], [-(2.0 ** -9), 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = np.array([[2.0 ** -9, 0.0, 1.0], [0.0, 0.0, 0.0]])
    dtype = np.float32 if acc == "fp32" else np.float16
    c = np.array([[0.0, -tiny * 3, tiny], [0.0, -tiny, 0.0], [-(tiny / 4), tiny * 5, 0.0],
                  [1.0, -1.0, 0.0]]).astype(dtype)
    got = _check_oracle(a, b, c, dp, "e4m3", "e4m3", acc)
    _check_staged(monkeypatch, a, b, c, dp, "e4m3", "e4m3", acc)
    if acc == "fp16":   # (an fp32 block result of these inputs is never subnormal: C is
        # flushed on entry, and a nonzero product puts the sum on a grid >= 2^-43)
        assert np.signbit(got[got == 0]).any()   # a negative result flushed to -0


def test_kernel_source_runs_as_python():
    """NUMBA_DISABLE_JIT=1 (the kernel source run by the Python interpreter, bit casts and int32
    shifts through their numpy fallbacks) gives the compiled kernel's bits, fp32 RZ and fp16
    RNE output."""
    import subprocess
    import sys
    script = """
import numpy as np
from tcsim._kernels import fused
from tcsim.kernel_constants import NO_CLAMP
rng = np.random.default_rng(4)
a = np.ldexp(rng.integers(-15, 16, (1, 3, 37)), rng.integers(-6, 4, (1, 3, 37))).astype(np.float32)
b = np.ldexp(rng.integers(-15, 16, (1, 37, 5)), rng.integers(-6, 4, (1, 37, 5))).astype(np.float32)
pa = np.where(a == 0, fused.ZERO_EXP8, np.floor(np.log2(np.abs(a) + (a == 0)))).astype(np.int8)
pb = np.where(b == 0, fused.ZERO_EXP8, np.floor(np.log2(np.abs(b) + (b == 0)))).astype(np.int8)
c = (rng.standard_normal((1, 3, 5)) * 100).astype(np.float16).astype(np.float32)
for args in ((16, 13, 0, 14, 0, -126, 127, 0, 0, NO_CLAMP),
             (16, 13, 2, 11, 1, -14, 15, 0, 1, -21)):
    d = fused.fused_kernel(a, b, pa, pb, c, *args, fused.NO_PRODUCT)
    print(" ".join(f"{x:08x}" for x in d.view(np.uint32).ravel()))
"""
    runs = {}
    for jit in ("0", "1"):
        env = dict(os.environ, NUMBA_DISABLE_JIT=jit)
        runs[jit] = subprocess.run([sys.executable, "-c", script], env=env, check=True,
                                   capture_output=True, text=True).stdout
    assert runs["0"].count(" ") > 20 and runs["0"] == runs["1"]
