"""The numba kernels against the exact oracle (tcsim.reference), bit for bit.

Hypothesis draws datapaths (every configuration field), formats and blocks that exercise NaN,
Inf, signed zeros, subnormal inputs and products, the whole exponent range, exact cancellation,
carries and chains of many blocks with a nonzero C. Values are drawn as codes and decoded, so
every value is exactly representable.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcsim import formats, reference
from tcsim.config import Datapath
from tcsim.mma import mma
from tcsim.params import FLOAT64_SUM_BITS

INPUTS = ("e4m3", "e5m2", "fp16", "bf16", "tf32", "e4m3fnuz", "e5m2fnuz", "e2m3", "e3m2",
          "e2m1")
SETTINGS = settings(max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _decode_codes(codes, fmt):
    return formats.decode(np.asarray(codes, dtype=np.uint64).astype(formats.code_dtype(fmt)), fmt)


def _code_for(fmt: str) -> st.SearchStrategy[int]:
    """A code of the format: uniform over all codes, or one with a small exponent window."""
    f = formats.get_format(fmt)
    if fmt == "tf32":   # 32-bit fp32 patterns with the low 13 bits clear
        return st.integers(0, (1 << 19) - 1).map(lambda c: c << 13)
    return st.integers(0, (1 << f.bits) - 1)


@st.composite
def values(draw, fmt: str, count: int, allow_special: bool):
    """``count`` values of ``fmt``: wide spread, narrow spread (carries), zeros, cancellation."""
    f = formats.get_format(fmt)
    style = draw(st.sampled_from(["wide", "narrow", "narrow", "cancel"]))
    if style == "wide":
        codes = draw(st.lists(_code_for(fmt), min_size=count, max_size=count))
        vals = _decode_codes(codes, fmt)
    else:
        e0 = draw(st.integers(f.emin - f.mantissa_bits, f.emax))
        mant = draw(st.lists(st.integers(-(1 << f.precision) + 1, (1 << f.precision) - 1),
                             min_size=count, max_size=count))
        shifts = draw(st.lists(st.integers(0, 3), min_size=count, max_size=count))
        vals = np.array([math.ldexp(m, e0 - f.mantissa_bits - s) for m, s in zip(mant, shifts)])
        vals = formats.round_to_format(vals, fmt, rounding="rz", overflow="saturate")
        if style == "cancel" and count >= 2:
            half = count // 2
            vals[half:2 * half] = -vals[:half]
    if not allow_special:
        vals = np.where(np.isfinite(vals), vals, 0.0)
    if not f.has_negative_zero:            # FNUZ formats: -0 does not exist
        vals = np.where(vals == 0, 0.0, vals)
    return vals


@st.composite
def datapaths(draw, acc: str, exact: bool | None = None):
    fields = {}
    n = draw(st.sampled_from([1, 2, 3, 4, 8, 16, 32]))
    fields["block_size"] = n
    if exact is None:
        exact = draw(st.booleans())
    if exact:
        fields["fraction_bits"] = None
        if draw(st.booleans()):
            fields["block_size"] = None
    else:
        limit = FLOAT64_SUM_BITS - 2 - math.ceil(math.log2(n + 1))
        fields["fraction_bits"] = draw(st.integers(0, min(limit, 40)))
        fields["term_rounding"] = draw(st.sampled_from(["truncate", "floor", "rne"]))
    fields["product_alignment"] = draw(st.sampled_from(["unnormalized", "normalized"]))
    if fields["product_alignment"] == "unnormalized" and draw(st.integers(0, 3)) == 0:
        fields["zero_operand_exponent"] = draw(st.sampled_from([-126, -14, -6, 0, 20]))
    if draw(st.integers(0, 3)) == 0:
        fields["c_placement"] = "after"
        fields["product_sum_precision"] = draw(st.integers(2, 48))
        fields["product_sum_rounding"] = draw(st.sampled_from(["rz", "rne"]))
    cap = formats.get_format(acc).precision
    fields["output_precision"] = draw(st.one_of(st.none(), st.integers(2, cap)))
    fields["output_rounding"] = draw(st.sampled_from(["rz", "rne", "sr"]))
    if fields["output_rounding"] == "sr":
        fields["sr_bits"] = draw(st.integers(1, 32))
        fields["sr_seed"] = draw(st.integers(0, 2 ** 63 - 1))
    fields["min_exp_limit"] = draw(st.one_of(st.none(), st.integers(-140, 10)))
    fields["subnormal_inputs"] = draw(st.sampled_from(["keep", "flush"]))
    fields["subnormal_outputs"] = draw(st.sampled_from(["keep", "flush"]))
    fields["zero_sign"] = draw(st.sampled_from(["plus", "ieee", "unsigned"]))
    fields["overflow"] = draw(st.sampled_from(["ieee", "inf", "saturate"]))
    return Datapath(**fields)


@st.composite
def problems(draw, exact: bool | None = None, special: bool | None = None):
    acc = draw(st.sampled_from(["fp32", "fp32", "fp16"]))
    dp = draw(datapaths(acc, exact))
    a_fmt = draw(st.sampled_from(INPUTS))
    b_fmt = draw(st.sampled_from([a_fmt, a_fmt] + list(INPUTS)))
    m, n = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = draw(st.integers(1, 70))
    if special is None:
        special = draw(st.integers(0, 4)) == 0
    a = draw(values(a_fmt, m * k, special)).reshape(m, k)
    b = draw(values(b_fmt, k * n, special)).reshape(k, n)
    acc_fmt = formats.get_format(acc)
    c_style = draw(st.sampled_from(["zero", "codes", "narrow"]))
    if c_style == "zero":
        c = np.zeros(m * n) * draw(st.sampled_from([1.0, -1.0]))
    elif c_style == "codes":
        c = _decode_codes(draw(st.lists(st.integers(0, (1 << acc_fmt.bits) - 1),
                                        min_size=m * n, max_size=m * n)), acc)
    else:
        c = draw(values("fp16" if acc == "fp16" else "bf16", m * n, False))
    if not special:
        c = np.where(np.isfinite(c), c, 0.0)
    c = c.reshape(m, n).astype(np.float16 if acc == "fp16" else np.float32)
    return dp, a_fmt, b_fmt, acc, a, b, c


def _bits(x: np.ndarray) -> np.ndarray:
    return x.view(np.uint32 if x.dtype == np.float32 else np.uint16)


def _check(problem):
    dp, a_fmt, b_fmt, acc, a, b, c = problem
    got = mma(a, b, c, model=dp, a_format=a_fmt, b_format=b_fmt, acc=acc)
    want = reference.mma(a, b, c, dp, a_fmt, b_fmt, acc)
    assert got.dtype == want.dtype
    bad = np.flatnonzero(_bits(got) != _bits(want))
    if bad.size:
        i, j = np.unravel_index(bad[0], got.shape)
        raise AssertionError(
            f"{bad.size} of {got.size} outputs differ; first at {(i, j)}: kernel "
            f"{got[i, j]!r} ({_bits(got)[i, j]:#x}) vs oracle {want[i, j]!r} "
            f"({_bits(want)[i, j]:#x})\ndatapath {dp!r}\na row {a[i].tolist()}\n"
            f"b col {b[:, j].tolist()}\nc {c[i, j]!r}")


@SETTINGS
@given(problems(exact=False, special=False))
def test_grid_kernel_equals_oracle(problem):
    _check(problem)


@SETTINGS
@given(problems(exact=True, special=False))
def test_exact_kernel_equals_oracle(problem):
    _check(problem)


@SETTINGS
@given(problems(special=True))
def test_special_values_equal_oracle(problem):
    _check(problem)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.sampled_from(["e4m3", "e5m2", "fp16"]))
def test_float32_product_loops_equal_oracle(seed, fmt):
    """The H100-like datapath on e4m3/e5m2/fp16 runs the float32 product loops
    (params.fits_float32): bit-equal to the oracle on shapes spanning several tiles' rows."""
    rng = np.random.default_rng(seed)
    dp = Datapath(block_size=32, fraction_bits=13, output_precision=14)
    a = formats.round_to_format(rng.standard_normal((9, 100)) * 4.0 ** rng.integers(-3, 3),
                                fmt, overflow="saturate")
    b = formats.round_to_format(rng.standard_normal((100, 5)), fmt, overflow="saturate")
    c = rng.standard_normal((9, 5)).astype(np.float32)
    got = mma(a, b, c, model=dp, a_format=fmt, b_format=fmt)
    want = reference.mma(a, b, c, dp, fmt, fmt)
    np.testing.assert_array_equal(_bits(got), _bits(want))


def test_thread_count_does_not_change_results():
    """Tiles are computed whole by one thread: 1 thread and all threads give the same bits."""
    import numba
    rng = np.random.default_rng(7)
    a = formats.round_to_format(rng.standard_normal((70, 300)), "e4m3")
    b = formats.round_to_format(rng.standard_normal((300, 300)), "e4m3")
    c = rng.standard_normal((70, 300)).astype(np.float32)
    full = mma(a, b, c, model="h100", a_format="e4m3", b_format="e4m3")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = mma(a, b, c, model="h100", a_format="e4m3", b_format="e4m3")
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(_bits(full), _bits(one))


@pytest.mark.parametrize("model", ["h100", "ada", "b200", "ideal", "fp32-fma"])
def test_presets_equal_oracle_on_random_fp8(model):
    rng = np.random.default_rng(3)
    a = formats.round_to_format(rng.standard_normal((4, 96)), "e4m3")
    b = formats.round_to_format(rng.standard_normal((96, 3)), "e5m2")
    c = rng.standard_normal((4, 3)).astype(np.float32)
    from tcsim import load_model
    dp = load_model(model).find_path("e4m3", "e5m2", "fp32").datapath()
    got = mma(a, b, c, model=model, a_format="e4m3", b_format="e5m2")
    np.testing.assert_array_equal(_bits(got), _bits(reference.mma(a, b, c, dp, "e4m3", "e5m2")))
