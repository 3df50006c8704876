"""tcsim.cuda.epilogue: the device promotion epilogue equals tcsim._kernels.epilogue.promote's
bits for every mode of EPILOGUE_CODES (taken from the table: a new mode is tested without
editing this file).

Run under numba's CUDA simulator (tests/conftest.py) or on a GPU (NUMBA_ENABLE_CUDASIM=0).
Reference: the CPU kernel (IEEE float32, its fma LLVM's llvm.fma.f32, the CPU's FMA
instruction); results compared as uint32 bit patterns, NaNs made canonical first on both sides
(tcsim.gemm canonicalises them: a NaN's payload is the hardware's, x86 and CUDA differ). The
data is checked to tell a fused from a separately rounded operation, so a mode computed the
other way fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

import tcsim.cuda
from tcsim._kernels.epilogue import EPI_MUL_ADD, EPILOGUE_CODES, fma_f32, promote

if not tcsim.cuda.available():
    pytest.skip("numba-cuda (and a GPU or NUMBA_ENABLE_CUDASIM=1) needed", allow_module_level=True)

from numba import cuda  # noqa: E402

from tcsim.cuda import epilogue as de  # noqa: E402

C, M, N = 3, 9, 20        # M * N = 180 outputs: two blocks of tcsim.cuda.THREADS


@njit(cache=True)
def cpu_fma(x, y, z, out):
    """out[i] = fma_f32(x[i], y[i], z[i]): the CPU's single-rounding FMA."""
    for i in range(x.shape[0]):
        out[i] = fma_f32(x[i], y[i], z[i])


def canonical_bits(a) -> np.ndarray:
    """uint32 bits with every NaN as 0x7FFFFFFF (tcsim.gemm's canonical NaN)."""
    b = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).copy()
    b[np.isnan(a)] = 0x7FFFFFFF
    return b


def assert_bits(got, want, what):
    g, w = canonical_bits(got), canonical_bits(want)
    diff = np.flatnonzero(g != w)
    assert diff.size == 0, (f"{what}: {diff.size} of {w.size} differ, first at flat "
                            f"{diff[0]}: {np.ravel(got)[diff[0]]!r} != "
                            f"{np.ravel(want)[diff[0]]!r}")


def f32(rng, shape, lo, hi):
    """Random float32 with a random sign and exponent in [lo, hi)."""
    v = rng.uniform(1, 2, shape) * np.exp2(rng.integers(lo, hi, shape))
    return (v * rng.choice([-1.0, 1.0], shape)).astype(np.float32)


def fma_triples(n, seed):
    """Random and edge float32 triples: products near z (cancellation), z = -RN32(x*y) (the
    result is the product's rounding error), subnormal results, the overflow edge, exact
    midpoints, signed zeros, Inf and NaN, sums next to a midpoint (double-rounding traps)."""
    rng = np.random.default_rng(seed)
    x, y = f32(rng, n, -70, 70), f32(rng, n, -70, 70)
    z = f32(rng, n, -140, 127)
    q = n // 8
    with np.errstate(over="ignore"):
        z[:q] = -(x[:q] * y[:q]) * np.float32(1 + 2.0 ** -20)             # near cancellation
        z[q:2 * q] = -(x[q:2 * q] * y[q:2 * q])                           # the rounding error
    x[2 * q:3 * q] = f32(rng, q, -80, -60)                                # subnormal results
    y[2 * q:3 * q] = f32(rng, q, -80, -60)
    z[2 * q:3 * q] = f32(rng, q, -149, -126)
    x[3 * q:4 * q] = f32(rng, q, 63, 64)                                  # the overflow edge
    y[3 * q:4 * q] = f32(rng, q, 63, 64)
    z[3 * q:4 * q] = f32(rng, q, 125, 127)
    x[4 * q:4 * q + 4] = [2.0 ** -24, 1 + 2.0 ** -23, 3.0, -0.0]          # midpoints, zeros
    y[4 * q:4 * q + 4] = [1.0, 2.0 ** -24, 2.0 ** -25, 5.0]
    z[4 * q:4 * q + 4] = [1.0, 1.0, 1.0, 0.0]
    x[4 * q + 4:4 * q + 8] = [np.inf, np.inf, np.nan, 0.0]
    y[4 * q + 4:4 * q + 8] = [0.0, 1.0, 1.0, -1.0]
    z[4 * q + 4:4 * q + 8] = [1.0, -np.inf, 1.0, -0.0]
    # x*y = +-2^(e-24) (1 - 2^-46), just short of half an ulp of z = odd * 2^(e-23): the exact
    # sum rounds to z, but its binary64 rounding is the midpoint, which a second rounding (ties
    # to even, z odd) takes to z's neighbour
    k = slice(4 * q + 8, 5 * q)
    size = 5 * q - 4 * q - 8
    e, a = rng.integers(-90, 100, size), rng.integers(-10, 10, size)
    x[k] = (1 + 2.0 ** -23) * np.exp2(a)
    y[k] = (1 - 2.0 ** -23) * np.exp2(e - 24 - a) * rng.choice([-1.0, 1.0], size)
    z[k] = (2 * rng.integers(1 << 22, 1 << 23, size) + 1) * np.exp2(e - 23.0) * rng.choice(
        [-1.0, 1.0], size)
    return x, y, z


def test_fma_rn_is_one_rounding():
    """fma_rn's Python body (what the simulator runs; the device runs libdevice fmaf) equals the
    CPU's FMA instruction, and the data tells it from a product rounded first."""
    x, y, z = fma_triples(8000, seed=0)
    want = np.empty_like(x)
    cpu_fma(x, y, z, want)
    with np.errstate(over="ignore", invalid="ignore"):
        got = np.array([de.fma_rn(a, b, c) for a, b, c in zip(x, y, z)], dtype=np.float32)
        twice = x * y + z                       # numpy float32: two roundings
    assert_bits(got, want, "fma_rn")
    assert np.count_nonzero(canonical_bits(twice) != canonical_bits(want)) > 1000


def reference_unfused(acc, partials, sa, sb, mode):
    """The epilogue with every operation rounded on its own (numpy float32): what an fma mode
    would give computed without its fma; for mul_add, the one with its last multiply-add fused."""
    acc = acc.copy()
    for c in range(partials.shape[0]):
        a, b, p = sa[c][:, None], sb[c][None, :], partials[c]
        if mode == EPI_MUL_ADD:
            t = (p * a).reshape(-1)
            out = np.empty(acc.size, dtype=np.float32)
            cpu_fma(t, np.ascontiguousarray(np.broadcast_to(b, acc.shape)).reshape(-1),
                    acc.reshape(-1), out)
            acc = out.reshape(acc.shape)
        else:
            acc = acc + (a * b) * p
    return acc


# the simulator's float32 arithmetic warns where a result overflows to Inf, as it should here
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("name", sorted(EPILOGUE_CODES))
def test_promote_bits_equal_cpu(name):
    mode = EPILOGUE_CODES[name]
    rng = np.random.default_rng(len(name))
    partials = f32(rng, (C, M, N), -20, 20)
    sa, sb = f32(rng, (C, M), -10, 10), f32(rng, (C, N), -10, 10)
    acc = f32(rng, (M, N), -20, 20)
    acc[0, :4] = [0.0, -0.0, 2.0 ** -149, -2.0 ** -140]
    partials[:, 0, :4] = [0.0, -0.0, 2.0 ** -140, 0.0]          # signed zeros, subnormals
    sa[:, 1] = 2.0 ** -70                                       # subnormal products
    partials[0, 2, :3] = [np.nan, np.inf, -np.inf]              # specials propagate
    partials[1, 3, :2] = [3.0e38, -3.0e38]                      # overflow to Inf
    sa[1, 3] = 4.0
    partials[:, 4, :] = 0.0                                     # a row of zero partials
    want = acc.copy()
    promote(want, partials, sa, sb, mode)
    d_acc = cuda.to_device(acc)
    de.promote(d_acc, cuda.to_device(partials), cuda.to_device(sa), cuda.to_device(sb), mode)
    assert_bits(d_acc.copy_to_host(), want, name)
    assert np.isinf(want).any() and np.isnan(want).any()
    with np.errstate(over="ignore", invalid="ignore"):
        other = reference_unfused(acc, partials, sa, sb, mode)
    assert np.count_nonzero(canonical_bits(other) != canonical_bits(want)) > 10


def test_kernels_listed():
    """Every CUDA kernel of the module is in KERNELS (CI compiles those for real GPUs)."""
    kind = type(de.promote_kernel)
    kernels = {id(v) for v in vars(de).values() if isinstance(v, kind)}
    assert kernels == {id(k) for k, _ in de.KERNELS.values()}
