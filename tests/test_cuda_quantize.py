"""tcsim.quant on CUDA arrays: amaxes, scales and codes equal the host pipeline's, bit for bit.

Run under numba's CUDA simulator (tests/conftest.py) or on a GPU (NUMBA_ENABLE_CUDASIM=0).
For a device x, tcsim.quant.quantize_plan takes the group amaxes on the device
(tcsim.cuda.quantize.group_amax), computes the scales on the host with its own _scales /
_nvfp4_scales, and rounds the values on the device (tcsim.cuda.quantize.scale_and_round). The
end-to-end tests call quantize_plan / quantize on cuda.to_device(x) and on the host x and compare
the results: scales, amax, global_scale, divisors and values as uint64 / uint32 bit patterns, the
errors by type and message. Every (granularity, scale dtype, element format) that tcsim.recipe /
tcsim.quant accept is taken from their own name tables, so a new one is tested without editing
this file; each runs for both roles and both input dtypes on a small operand holding edge
values. The two kernels are also tested on their own against the CPU steps (quant._group_amax,
_kernels.quantize.scale_and_round) where the pipeline does not reach their corners.
"""

from __future__ import annotations

import typing

import numpy as np
import pytest

import tcsim.cuda
from tcsim import quant
from tcsim.errors import FormatError
from tcsim.formats.catalog import get_format
from tcsim.formats.conversion import round_to_format
from tcsim.recipe import Granularity, Scaling

if not tcsim.cuda.available():
    pytest.skip("numba-cuda (and a GPU or NUMBA_ENABLE_CUDASIM=1) needed", allow_module_level=True)

from numba import cuda  # noqa: E402

from helpers import bits  # noqa: E402
from tcsim._kernels.quantize import scale_and_round as cpu_scale_and_round  # noqa: E402
from tcsim.cuda import arrays  # noqa: E402
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


def test_scalings_reach_every_granularity_and_scale_format():
    """The combinations _scalings keeps reach every granularity and every scale format of the
    config (a filter that left one out would drop its tests without a word)."""
    kept = {(p.values[0].granularity, p.values[0].scale_dtype) for p in SCALINGS}
    assert {g for g, _ in kept} == set(typing.get_args(Granularity))
    assert {d for _, d in kept} == \
        set(typing.get_args(Scaling.model_fields["scale_dtype"].annotation))


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


def plans(x, fmt, scaling, role, history=None):
    """quantize_plan on the device copy of x and on x itself: ((device plan, its Quantized),
    (host plan, its Quantized)); the device plan's x is the device array itself."""
    xd = cuda.to_device(x)
    dev = quant.quantize_plan(xd, fmt, scaling, role, history)
    host = quant.quantize_plan(x, fmt, scaling, role, history)
    assert isinstance(dev[0], quant.DeviceQuantPlan) and dev[0].x is xd
    assert isinstance(host[0], quant.QuantPlan)
    return dev, host


def assert_same_quantized(got, want):
    """Every field of two Quantized operands: arrays and floats by bits, the rest equal."""
    assert_bits(got.scales, want.scales, "scales")
    assert_bits(np.float64(got.amax), np.float64(want.amax), "tensor amax")
    assert_bits(np.float64(got.global_scale), np.float64(want.global_scale), "global scale")
    assert (got.fmt, got.role, got.scaling) == (want.fmt, want.role, want.scaling)
    assert got.values.shape == want.values.shape


def fill_both(dev_plan, host_plan, shape, r0=0, c0=0, along_k=False):
    """plan.fill of a block (2-D shape: one block; 3-D: B blocks) into a device buffer and a
    numpy buffer, both starting as NaN (a value left unwritten shows); returns both on the host."""
    got = arrays.to_device(np.full(shape, np.nan))
    want = np.full(shape, np.nan)
    assert dev_plan.fill(r0, c0, got, along_k) is got
    host_plan.fill(r0, c0, want, along_k)
    assert not np.isnan(want).any()
    return got.copy_to_host(), want


@pytest.mark.parametrize("scaling,fmt,role,dtype", SCALINGS)
def test_quantize_plan_device_equals_host(scaling, fmt, role, dtype):
    x = operand(dtype, fmt, seed=len(scaling.granularity) + ord(role))
    if role == "b":
        x = np.ascontiguousarray(x.T)
    (dplan, qd), (hplan, qh) = plans(x, fmt, scaling, role)
    assert_same_quantized(qd, qh)
    assert_bits(dplan.div.copy_to_host(), hplan.div, "divisors")
    assert (dplan.g0, dplan.g1, dplan.f) == (hplan.g0, hplan.g1, hplan.f)

    # the whole operand into a fresh device buffer (2-D out)
    got = arrays.empty(x.shape, np.float64)
    dplan.fill(0, 0, got)
    want = hplan.fill(0, 0, np.empty(x.shape))
    assert_bits(got.copy_to_host(), want, "values")
    assert np.any(want != 0) and np.any(want == 0)         # the operand is not degenerate
    # tcsim.gemm's chunked use: B blocks side by side along K (role a: x's columns; role b:
    # x's rows), from an offset that is not a group edge along the other axis
    shape, r0, c0 = ((2, 5, GROUP), 3, GROUP) if role == "a" else ((2, GROUP, 5), GROUP, 3)
    assert_bits(*fill_both(dplan, hplan, shape, r0, c0, along_k=role == "a"), "blocks")


@pytest.mark.parametrize("scale_dtype", ["fp32", "pow2", "ue8m0"])
def test_delayed_scaling_history_and_margin(scale_dtype):
    """Delayed scaling: the history's max (tcsim.quant, step 1) decides the scale; quantize()
    of a device x gives the host's Quantized, values included."""
    scaling = Scaling(granularity="tensor", scale_dtype=scale_dtype, amax_history=4, margin=3)
    x = operand(np.float32, "e4m3", seed=7)[:5, :32].copy()
    history = np.array([1.0, 3.5e4, 2.0, 0.5])             # the max of the last 3: 3.5e4
    got = quant.quantize(cuda.to_device(x), "e4m3", scaling, "a", amax_history=history)
    want = quant.quantize(x, "e4m3", scaling, "a", amax_history=history)
    assert quant._history_max(history, scaling) > want.amax  # the history decides the scale
    assert isinstance(got.values, np.ndarray)
    assert_same_quantized(got, want)
    assert_bits(got.values, want.values, "values")
    # without the history the scale differs: the history reached the device path
    plain = quant.quantize(cuda.to_device(x), "e4m3", scaling, "a")
    assert np.any(bits(plain.scales) != bits(got.scales))


@pytest.mark.parametrize("scale_dtype", ["fp32", "pow2", "ue8m0"])
@pytest.mark.parametrize("fill", [0.0, 2.0 ** -149, 1e-310])
def test_degenerate_groups(scale_dtype, fill):
    """An all-zero tensor (scale 1), the smallest float32 (fp32: amax / max_finite underflows
    to 0 -> 2^-149) and a binary64 subnormal (below float32's range: it quantises to 0)."""
    scaling = Scaling(granularity="channel", scale_dtype=scale_dtype)
    x = np.full((3, 8), fill)
    x[1, 2] = -fill
    got = quant.quantize(cuda.to_device(x), "e5m2", scaling, "a")
    want = quant.quantize(x, "e5m2", scaling, "a")
    assert_same_quantized(got, want)
    assert_bits(got.values, want.values, "values")


def test_scale_beyond_float32_raises_like_cpu():
    """A scale beyond float32 after the margin: the host's _scales raises, reached from a
    device x, with the host's message."""
    scaling = Scaling(granularity="tensor", scale_dtype="pow2", margin=64)
    x = np.full((2, 4), 1e35, dtype=np.float32)
    with pytest.raises(FormatError, match="exceeds the float32 range") as host:
        quant.quantize(x, "e4m3", scaling, "a")
    with pytest.raises(FormatError, match="exceeds the float32 range") as dev:
        quant.quantize_plan(cuda.to_device(x), "e4m3", scaling, "a")
    assert str(dev.value) == str(host.value)


@pytest.mark.parametrize("role", ["a", "b"])
@pytest.mark.parametrize("dtype,bad,what", [
    (np.float32, np.nan, "nan;"), (np.float64, -np.inf, "-inf;"),
    (np.float64, 2.0 ** 128, r"\S+ overflows float32")])
def test_nan_inf_in_device_x_named(role, dtype, bad, what):
    """A NaN / Inf (or a float64 beyond float32) in a device x: FormatError naming the element
    by its index in x, as the host check does (only then is x copied to the host)."""
    x = operand(dtype, "e4m3", seed=9)[:6, :32].copy()
    if role == "b":
        x = np.ascontiguousarray(x.T)
    i, j = (4, 17) if role == "a" else (17, 4)
    x[i, j] = bad
    x[i, j + 1] = bad            # a later one is not named
    scaling = Scaling(granularity="group", scale_dtype="fp32", group_size=GROUP)
    with pytest.raises(FormatError, match=rf"^quantize: x\[{i}, {j}\] = {what}") as dev:
        quant.quantize_plan(cuda.to_device(x), "e4m3", scaling, role)
    with pytest.raises(FormatError) as host:
        quant.quantize_plan(x, "e4m3", scaling, role)
    assert str(dev.value) == str(host.value)


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
    kind = type(dq.group_amax_kernel)
    kernels = {id(v) for v in vars(dq).values() if isinstance(v, kind)}
    assert kernels == {id(k) for k, _ in dq.KERNELS.values()}
