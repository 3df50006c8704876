"""The device preparation functions (tcsim.cuda.prep) bit for bit against the CPU functions
they stand for: tcsim._kernels.prep.prepare_operand, tcsim.mma.flush_subnormals, run_datapath's
CDNA flush and NaN/Inf check, tcsim.mma.to_accumulator and the zero_sign "unsigned" rule.

Inputs hold zeros of both signs, subnormals of the formats, NaNs (payloads and signs), +-Inf,
rounding ties and overflows of the accumulator formats; comparisons are of uint bit patterns.
The kernels run in numba's CUDA simulator here (tests/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba.cuda.extending")

import tcsim.cuda  # noqa: E402

if not tcsim.cuda.available():
    pytest.skip("no CUDA GPU and no simulator", allow_module_level=True)

from helpers import bits  # noqa: E402
from tcsim._kernels.prep import prepare_operand as cpu_prepare_operand  # noqa: E402
from tcsim.cuda import prep  # noqa: E402
from tcsim.formats.catalog import get_format  # noqa: E402
from tcsim.formats.conversion import round_to_format  # noqa: E402
from tcsim.kernel_constants import NO_TERM  # noqa: E402
from tcsim.mma import flush_subnormals, to_accumulator  # noqa: E402

cuda = tcsim.cuda.cuda()


def _assert_bits(got, want, what=""):
    got = got.copy_to_host() if prep.on_device(got) else np.asarray(got)
    assert got.dtype == want.dtype and got.shape == want.shape, what
    bad = np.flatnonzero(bits(got) != bits(want))
    assert bad.size == 0, (f"{what}: {bad.size} differ; first {got.flat[bad[0]]!r} "
                           f"({bits(got).flat[bad[0]]:#x}) vs {want.flat[bad[0]]!r} "
                           f"({bits(want).flat[bad[0]]:#x})")


def _nan(pattern):
    return np.array([pattern], np.uint64).view(np.float64)[0]


SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, _nan(0x7FF0000000000001),
            _nan(0xFFF8000000000123), 1.0, -1.0, 448.0, -57344.0, 65504.0]


def _values(rng, shape=(2, 3, 41)):
    """float64 values of the FP8 / fp16 / fp32 formats: normals, subnormals of each, zeros,
    NaN/Inf (SPECIALS at the front)."""
    size = int(np.prod(shape))
    parts = [np.array(SPECIALS)]
    for fmt in ("e4m3", "e5m2", "fp16", "fp32"):
        f = get_format(fmt)
        sub = f.min_normal * rng.random(size // 8) * np.where(rng.random(size // 8) < 0.5, -1, 1)
        norm = rng.standard_normal(size // 8) * 2.0 ** rng.integers(-8, 9, size // 8)
        parts += [round_to_format(np.concatenate([sub, norm]), fmt, rounding="rz",
                                          overflow="saturate"),
                  np.array([f.min_normal, -f.min_normal, f.max_finite])]
    vals = np.concatenate(parts)
    vals = np.concatenate([vals, np.zeros(max(0, size - vals.size))])[:size]
    return vals.reshape(shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fmt,zero_exp", [("e4m3", NO_TERM), ("fp16", -14), ("e5m2", 20)])
def test_prepare_operand_equals_cpu(dtype, fmt, zero_exp):
    vals = _values(np.random.default_rng(1))
    emin = get_format(fmt).emin
    want_v, want_e = np.empty(vals.shape, dtype), np.empty(vals.shape, np.int16)
    want_n = cpu_prepare_operand(vals, emin, zero_exp, want_v, want_e)
    got_v = cuda.device_array(vals.shape, dtype)
    got_e = cuda.device_array(vals.shape, np.int16)
    got_n = prep.prepare_operand(cuda.to_device(vals), emin, zero_exp, got_v, got_e)
    assert got_n == want_n == 6         # the 2 infinities and 4 NaNs of SPECIALS
    _assert_bits(got_v, want_v, "values")
    _assert_bits(got_e, want_e, "exponents")


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2", "fp16", "fp32"])
def test_flush_subnormals_equals_cpu(fmt):
    vals = _values(np.random.default_rng(2))
    want = flush_subnormals(vals, fmt)
    assert (bits(want) != bits(vals)).any()             # something was flushed
    _assert_bits(prep.flush_subnormals(cuda.to_device(vals), fmt), want, fmt)


@pytest.mark.parametrize("fmt", ["e4m3", "fp16", "fp32"])
def test_flush_below_normal_equals_cdna_rule(fmt):
    """run_datapath's dp.flush_nodes branch: below the smallest normal -> +0."""
    vals = _values(np.random.default_rng(3))
    want = np.where(np.abs(vals) < get_format(fmt).min_normal, 0.0, vals)
    _assert_bits(prep.flush_below_normal(vals, fmt), want, fmt)


def test_has_special():
    rng = np.random.default_rng(4)
    a, b, c = (rng.standard_normal(shape) for shape in ((1, 3, 70), (1, 70, 2), (1, 3, 2)))
    a[0, 0, 0] = -0.0
    assert not prep.has_special(a, b, c)
    for which, value in ((0, np.nan), (1, np.inf), (2, -np.inf), (1, _nan(0xFFF8000000000123))):
        arrs = [x.copy() for x in (a, b, c)]
        arrs[which].flat[-1] = value        # the last element: the end of each array counts
        assert prep.has_special(*[cuda.to_device(x) for x in arrs]), (which, value)
        assert (not np.isfinite(arrs[0]).all() or not np.isfinite(arrs[1]).all()
                or not np.isfinite(arrs[2]).all())


def _results(rng, acc):
    """float64 results: rounding ties and overflows of ``acc``, underflows to +-0, NaNs."""
    f = get_format(acc)
    ulp1 = 2.0 ** -f.mantissa_bits
    tiny = 2.0 ** (f.emin - f.mantissa_bits)            # smallest subnormal
    edge = [1 + ulp1 / 2, 1 + 3 * ulp1 / 2, -(1 + ulp1 / 2), f.max_finite * (1 + ulp1 / 4),
            f.max_finite * (1 + ulp1 / 2), -f.max_finite * (1 + ulp1), tiny / 2, -tiny / 2,
            tiny / 4, -tiny * 0.75, tiny * 1.5, -0.0, 0.0] + SPECIALS
    wide = rng.standard_normal(200) * 2.0 ** rng.uniform(f.emin - 14, f.emax + 2, 200)
    return np.concatenate([edge, wide]).reshape(1, -1)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning",
                            "ignore:invalid value encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("unsigned_zero", [False, True])
@pytest.mark.parametrize("src", [np.float64, np.float32])
@pytest.mark.parametrize("acc", ["fp32", "fp16"])
def test_to_accumulator_equals_cpu(acc, src, unsigned_zero):
    vals = _results(np.random.default_rng(5), acc).astype(src)
    want = to_accumulator(vals, acc)
    if unsigned_zero:               # run_datapath's _unsigned_zero
        want[want == 0] = 0
    assert np.signbit(want[want == 0]).any() != unsigned_zero
    got = prep.to_accumulator(cuda.to_device(vals), acc, unsigned_zero)
    _assert_bits(got, want, f"{acc} from {np.dtype(src)}")


def test_device_arrays_are_checked():
    with pytest.raises(TypeError):
        prep.device_array(cuda.to_device(np.zeros(3, np.float32)), np.float64)
    with pytest.raises(ValueError):
        prep.device_array(cuda.to_device(np.zeros((3, 4)))[:, ::2])
