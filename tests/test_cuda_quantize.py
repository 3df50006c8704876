"""tcsim.cuda.quantize: the device amaxes, scales and codes equal tcsim.quant's, bit for bit.

Run under numba's CUDA simulator (tests/conftest.py) or on a GPU (NUMBA_ENABLE_CUDASIM=0). Every
(granularity, scale dtype, element format) that tcsim.config / tcsim.quant accept is taken from
their own name tables, so a new one is tested without editing this file; each runs for both
roles and both input dtypes on a small operand holding edge values. References: the CPU steps
(quant._group_amax, quant._scales, quant._nvfp4_scales, _kernels.quantize.scale_and_round) and
the public result (quant.quantize_plan / quantize): amaxes, scales, divisors and values are
compared as uint64 / uint32 bit patterns.
"""

from __future__ import annotations

import typing

import numpy as np
import pytest

import tcsim.cuda
from tcsim import quant
from tcsim.config import Granularity, Scaling
from tcsim.errors import FormatError
from tcsim.formats import get_format, round_to_format

if not tcsim.cuda.available():
    pytest.skip("numba-cuda (and a GPU or NUMBA_ENABLE_CUDASIM=1) needed", allow_module_level=True)

from numba import cuda  # noqa: E402

from tcsim._kernels.quantize import scale_and_round as cpu_scale_and_round  # noqa: E402
from tcsim.cuda import quantize as dq  # noqa: E402

M, K = 13, 64          # role a's (rows, K); role b gets the transpose: (K, N = 13)
GROUP = 16             # group / block size where the scaling lets the test choose


def _scalings():
    """(granularity, scale_dtype, element format, Scaling) for every combination the config
    validates and the quantiser accepts (group size GROUP, else the one the granularity fixes)."""
    out = []
    dtypes = typing.get_args(Scaling.model_fields["scale_dtype"].annotation)
    for gran in typing.get_args(Granularity):
        for sd in dtypes:
            scaling = None
            for g in (GROUP, 32):
                try:
                    scaling = Scaling(granularity=gran, scale_dtype=sd, group_size=g, margin=2)
                    break
                except ValueError:
                    continue
            if scaling is None:
                continue
            for fmt in quant.ELEMENT_FORMATS:
                try:
                    quant._fp8_format(fmt, scaling)
                except FormatError:
                    continue
                # both roles, each dtype once per role over consecutive combinations
                dtypes_ab = (np.float32, np.float64)[::1 if len(out) % 4 == 0 else -1]
                for role, dt in zip("ab", dtypes_ab):
                    out.append(pytest.param(scaling, fmt, role, dt,
                                            id=f"{gran}-{sd}-{fmt}-{role}-{dt.__name__}"))
    return out


SCALINGS = _scalings()


def bits(a) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view({8: np.uint64, 4: np.uint32}[a.dtype.itemsize])


def assert_bits(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, what
    diff = np.flatnonzero(bits(got) != bits(want))
    assert diff.size == 0, (f"{what}: {diff.size} of {want.size} differ, first at "
                            f"{np.unravel_index(diff[0], want.shape)}: "
                            f"{got.reshape(-1)[diff[0]]!r} != {want.reshape(-1)[diff[0]]!r}")


def operand(dtype, fmt, seed) -> np.ndarray:
    """(M, K) values over many binades with edge values: signed zeros, float32 subnormals, an
    all-zero group, and per row one element at 1.9375 * 2^k (above max_finite after an MX scale:
    it saturates) and exact multiples of max_finite (land on max_finite after a pow2 scale)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((M, K)) * np.exp2(rng.integers(-12, 12, (M, K)))
    x[0, :6] = [0.0, -0.0, 2.0 ** -149, -3 * 2.0 ** -140, 1.9375 * 2.0 ** 5, -1.0]
    x[1, :GROUP] = 0.0                                      # an all-zero group (scale 1)
    x[2, :] = rng.standard_normal(K) * 2.0 ** -135          # a row of float32 subnormals
    x[3, 5] = get_format(fmt).max_finite * 2.0 ** -3        # exactly max_finite * a power of 2
    x[4, 7] = -1.9375 * 2.0 ** 9
    if dtype == np.float64:
        x[5, :3] = [1e-300, -2.0 ** -160, 1.0 + 2.0 ** -40]  # below / between float32 values
    return np.ascontiguousarray(x.astype(dtype))


def device_quantize(x, fmt, scaling, role, hmax=0.0):
    """The device pipeline: amaxes, tensor amax, scales / divisors, values (x's layout)."""
    c = quant._canonical(x, role)
    g0, g1 = quant._groups(scaling.granularity, scaling.group_size, *c.shape, role)
    xd = cuda.to_device(x)
    amax = dq.group_amax(xd, g0, g1)
    amax_tensor = dq.tensor_amax(amax)
    if scaling.granularity == "nvfp4":
        sc, sg, div = dq.nvfp4_scales(amax, amax_tensor)
    else:
        sc, div = dq.scales(amax, scaling, fmt, hmax)
        sg = 1.0
    f = get_format(fmt)
    values = cuda.device_array((1,) + x.shape, dtype=np.float64)
    dq.scale_and_round(xd, div, 0, 0, g0, g1, f.precision, f.emin, f.max_finite, 1, values)
    return (amax.copy_to_host(), amax_tensor, sc.copy_to_host(), sg, div.copy_to_host(),
            values.copy_to_host()[0])


@pytest.mark.parametrize("scaling,fmt,role,dtype", SCALINGS)
def test_quantize_bits_equal_cpu(scaling, fmt, role, dtype):
    x = operand(dtype, fmt, seed=len(scaling.granularity) + ord(role))
    if role == "b":
        x = np.ascontiguousarray(x.T)
    amax, amax_tensor, sc, sg, div, values = device_quantize(x, fmt, scaling, role)

    c = quant._canonical(x, role)
    g0, g1 = quant._groups(scaling.granularity, scaling.group_size, *c.shape, role)
    want_amax = quant._group_amax(x, g0, g1)
    assert_bits(amax, want_amax, "group amax")
    plan, q = quant.quantize_plan(x, fmt, scaling, role)
    assert_bits(np.float64(amax_tensor), np.float64(q.amax), "tensor amax")
    assert_bits(sc, q.scales, "scales")
    assert_bits(np.float64(sg), np.float64(q.global_scale), "global scale")
    assert_bits(div, plan.div, "divisors")
    assert_bits(values, plan.quantized(q).values, "values")
    # the step functions themselves, on the same amaxes
    if scaling.granularity == "nvfp4":
        s_cpu, sg_cpu, d_cpu = quant._nvfp4_scales(want_amax, q.amax)
        assert_bits(div, d_cpu.astype(np.float32), "nvfp4 divisors")
    else:
        assert_bits(sc, quant._scales(want_amax, scaling, fmt), "quant._scales")
    assert np.any(values != 0) and np.any(values == 0)      # the operand is not degenerate


@pytest.mark.parametrize("scale_dtype", ["fp32", "pow2", "ue8m0"])
def test_delayed_scaling_history_and_margin(scale_dtype):
    """Delayed scaling: the history max enters as hmax (tcsim.quant, step 1)."""
    scaling = Scaling(granularity="tensor", scale_dtype=scale_dtype, amax_history=4, margin=3)
    x = operand(np.float32, "e4m3", seed=7)[:5, :32].copy()
    history = np.array([1.0, 3.5e4, 2.0, 0.5])             # the max of the last 3: 3.5e4
    hmax = quant._history_max(history, scaling)
    *_, sc, _, div, values = device_quantize(x, "e4m3", scaling, "a", hmax=hmax)
    plan, q = quant.quantize_plan(x, "e4m3", scaling, "a", amax_history=history)
    assert hmax > q.amax                                    # the history decides the scale
    assert_bits(sc, q.scales, "scales")
    assert_bits(div, plan.div, "divisors")
    assert_bits(values, plan.quantized(q).values, "values")


@pytest.mark.parametrize("scale_dtype", ["fp32", "pow2", "ue8m0"])
@pytest.mark.parametrize("fill", [0.0, 2.0 ** -149, 1e-310])
def test_degenerate_groups(scale_dtype, fill):
    """An all-zero tensor (scale 1), the smallest float32 (fp32: amax / max_finite underflows
    to 0 -> 2^-149) and a binary64 subnormal (below float32's range: it quantises to 0)."""
    scaling = Scaling(granularity="channel", scale_dtype=scale_dtype)
    x = np.full((3, 8), fill)
    x[1, 2] = -fill
    *_, sc, _, div, values = device_quantize(x, "e5m2", scaling, "a")
    plan, q = quant.quantize_plan(x, "e5m2", scaling, "a")
    assert_bits(sc, q.scales, "scales")
    assert_bits(div, plan.div, "divisors")
    assert_bits(values, plan.quantized(q).values, "values")


def test_scale_beyond_float32_raises_like_cpu():
    scaling = Scaling(granularity="tensor", scale_dtype="pow2", margin=64)
    x = np.full((2, 4), 1e35, dtype=np.float32)
    with pytest.raises(FormatError, match="exceeds the float32 range"):
        quant.quantize(x, "e4m3", scaling, "a")
    with pytest.raises(FormatError, match="exceeds the float32 range"):
        device_quantize(x, "e4m3", scaling, "a")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_amax_shapes_nan_inf(dtype):
    """quant._group_amax for groups that the amax kernel's tiles (TILE_ROWS x TILE_COLS) do
    not divide, and partial last groups; it accepts NaN / Inf (quantize then rejects them): a
    group holding one has a NaN / Inf amax, the others are unaffected."""
    rng = np.random.default_rng(3)
    # |x| rising, then falling, in row-major order: an element counted in a wrong group (a
    # tile crossing a group edge) changes that group's amax
    rank = np.arange(M * K, dtype=np.float64).reshape(M, K) + 1.0
    ranked = [rank * rng.choice([-1.0, 1.0], (M, K)), rank[::-1, ::-1].copy()]
    x = operand(dtype, "e4m3", seed=3)
    x[0, 3] = np.nan
    x[6, 40] = -np.inf
    for g0, g1 in [(1, GROUP), (1, 1), (12, 48), (5, 20), (9, 33), (M, K), (100, 7)]:
        for y in ranked:
            assert_bits(dq.group_amax(cuda.to_device(y.astype(dtype)), g0, g1).copy_to_host(),
                        quant._group_amax(y.astype(dtype), g0, g1), f"ranked amax {g0}x{g1}")
        got = dq.group_amax(cuda.to_device(x), g0, g1).copy_to_host()
        want = quant._group_amax(x, g0, g1)
        assert_bits(got, want, f"amax {g0}x{g1}")
        same = (0, 3 // g1) == (6 // g0, 40 // g1)       # the NaN's group holds the Inf
        assert np.isnan(got[0, 3 // g1]) and np.isinf(got).sum() == (not same)


@pytest.mark.parametrize("along_k", [1, 0])
def test_scale_and_round_blocks(along_k):
    """The whole operand, and tcsim.gemm's chunked use: B blocks side by side along K (role a)
    or along the rows (role b), from an offset, with 2-D divisors of 21 significant bits.
    Half the elements of x (float64) sit at an e5m2 midpoint times their divisor, perturbed
    below float32's precision: the RN32 of x before the float32 division decides how they
    round (checked: RN32(x / s) without it rounds some of them otherwise)."""
    f = get_format("e5m2")
    g0, g1 = 4, GROUP
    rng = np.random.default_rng(5)
    div = np.exp2(rng.integers(-3, 4, (-(-M // g0), K // g1))).astype(np.float32)
    div *= rng.integers(1 << 20, 1 << 21, div.shape).astype(np.float32) * np.float32(2 ** -20)
    divs = np.repeat(np.repeat(div, g0, 0)[:M], g1, 1).astype(np.float64)
    mid = (rng.integers(4, 8, (M, K)) + 0.5) * np.exp2(rng.integers(-5, 3, (M, K)) - 2.0)
    near = mid * divs * (1 + rng.uniform(-2.0 ** -23, 2.0 ** -23, (M, K)))
    x = np.where(rng.random((M, K)) < 0.5, near, operand(np.float64, "e5m2", seed=11))
    blocks = ((3, 5, GROUP), 2, GROUP) if along_k else ((2, 4, 24), 3, 17)
    for shape, r0, c0 in (((1, M, K), 0, 0), blocks):
        want = np.full(shape, np.nan)
        cpu_scale_and_round(x, div, r0, c0, g0, g1, f.precision, f.emin, f.max_finite,
                            along_k, want)
        got = cuda.to_device(np.full(shape, np.nan))
        dq.scale_and_round(cuda.to_device(x), cuda.to_device(div), r0, c0, g0, g1,
                           f.precision, f.emin, f.max_finite, along_k, got)
        assert_bits(got.copy_to_host(), want, f"values {shape}")
        assert not np.isnan(want).any()
        if shape == (1, M, K):
            whole = want[0]
    q = np.clip((x / divs).astype(np.float32), -f.max_finite, f.max_finite)
    other = round_to_format(q.astype(np.float64), "e5m2", rounding="rne", overflow="saturate")
    assert np.any(bits(other) != bits(whole))


def test_kernels_listed():
    """Every CUDA kernel of the module is in KERNELS (CI compiles those for real GPUs)."""
    kind = type(dq.scales_kernel)
    kernels = {id(v) for v in vars(dq).values() if isinstance(v, kind)}
    assert kernels == {id(k) for k, _ in dq.KERNELS.values()}
