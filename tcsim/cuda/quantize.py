"""The quantisation of tcsim.quant on the device: the two steps that read every element of x.

tcsim.quant (its module docstring states the arithmetic) quantises an operand in three steps.
For a CUDA-array x, :func:`tcsim.quant.quantize_plan` runs the two that read x here and the
middle one on the host:

==================  ========================================  ================================
step                CPU (tcsim.quant / _kernels.quantize)     device x
==================  ========================================  ================================
amax per group      quant._group_amax(x, g0, g1)              :func:`group_amax` (here)
scales              quant._scales / quant._nvfp4_scales       the same host code, on the
                                                              amaxes copied back (small)
codes               _kernels.quantize.scale_and_round         :func:`scale_and_round` (here)
==================  ========================================  ================================

The scales are stated once, in tcsim.quant; only their compact fp32 divisors go to the device.
The checks that raise (dtype, shape, NaN/Inf in x, a history's values) stay on the host too.

Arithmetic, as on the CPU: amaxes are maxima of bit patterns (exact, order-free); the codes are
the same float32 division (``div.rn.f32``) and the CPU's own ``round_pack``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

from .. import cuda as tcsim_cuda
from .._kernels.roundpack import (
    FREE_EMAX,
    NO_FLUSH,
    NO_RANDOM,
    NO_RANDOM_BITS,
    NO_RESIDUAL,
    f64_as_i64,
    round_pack,
)
from ..overflow import OVERFLOW_SATURATE
from ..rounding import RNE
from .prep import launch

cuda = tcsim_cuda.cuda()

MAGNITUDE = (1 << 63) - 1                  # all bits of a binary64 but the sign

TILE_ROWS = 8     # amax: each thread takes the max of a tile of up to TILE_ROWS x TILE_COLS
TILE_COLS = 32    # elements of one group, then one atomic max into the group's amax


# ---- per-element arithmetic (jitted: the CPU runs these in the simulator, the device compiles
# their source) ----------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def magnitude_bits(v):
    """The bits of |v| (v float32 or float64, widened exactly to float64) as an int64 >= 0.

    For x, y >= 0 the binary64 patterns order as the values do (exponent field above the
    fraction), so max over these integers is max |x|, exactly and in any order; a NaN
    (all-ones exponent, nonzero fraction) sorts above +Inf, so a group holding one has a NaN
    amax, as numpy's max gives. Clearing the sign bit is |v|."""
    return f64_as_i64(np.float64(v)) & MAGNITUDE


# ---- kernels ---------------------------------------------------------------------------------
@cuda.jit
def group_amax_kernel(x, g0, g1, tile_rows, tile_cols, tiles0, tiles1, out_bits):
    """out_bits[gi, gj] <- max(out_bits[gi, gj], bits of max |x| over each tile of a group).

    A group is g0 rows x g1 columns of x (the last ones partial); each group is cut into tiles
    of tile_rows x tile_cols (tiles0 x tiles1 of them; those past x's edge are empty), one per
    thread, thread t = (tile row, tile column) in row-major order. out_bits starts at 0 (+0.0,
    the amax of an empty group)."""
    t = cuda.grid(1)
    r, c = x.shape
    n_cols = (c + g1 - 1) // g1 * tiles1
    if t >= (r + g0 - 1) // g0 * tiles0 * n_cols:
        return
    ti = t // n_cols
    tj = t - ti * n_cols
    gi = ti // tiles0
    gj = tj // tiles1
    i0 = gi * g0 + (ti - gi * tiles0) * tile_rows
    j0 = gj * g1 + (tj - gj * tiles1) * tile_cols
    i1 = min(i0 + tile_rows, gi * g0 + g0, r)
    j1 = min(j0 + tile_cols, gj * g1 + g1, c)
    best = 0
    for i in range(i0, i1):
        for j in range(j0, j1):
            best = max(best, magnitude_bits(x[i, j]))
    if best > 0:
        cuda.atomic.max(out_bits, (gi, gj), best)


@cuda.jit
def scale_and_round_kernel(x, div, r0, c0, g0, g1, p, emin, max_finite, along_k, out):
    """out[b, r, c] = RNE_sat(RN32(RN32(x[i, j]) / div[i // g0, j // g1])), one thread per
    element of out (B, R, C); i = r0 + r, j = c0 + b * C + c when along_k == 1, i = r0 + b * R
    + r, j = c0 + c when along_k == 0 (tcsim._kernels.quantize.scale_and_round, whose
    docstring states the rounding: the clip to +-max_finite, then round_pack RNE)."""
    t = cuda.grid(1)
    n_b, n_r, n_c = out.shape
    if t >= n_b * n_r * n_c:
        return
    c = t % n_c
    br = t // n_c
    r = br % n_r
    b = br // n_r
    i = r0 + r + (1 - along_k) * b * n_r
    j = c0 + along_k * b * n_c + c
    top = np.float32(max_finite)
    v = np.float32(x[i, j]) / div[i // g0, j // g1]
    q = min(max(v, -top), top)
    out[b, r, c] = round_pack(np.float64(q), NO_RESIDUAL, p, emin, FREE_EMAX, RNE,
                              OVERFLOW_SATURATE, NO_FLUSH, NO_RANDOM, NO_RANDOM_BITS)


# ---- functions on device arrays ----------------------------------------------------------------
def group_amax(x, g0: int, g1: int):
    """quant._group_amax on the device: max |x| (float64, exact) over each g0 x g1 group of the
    2-D device array x (float32 or float64, C order, its own layout; the last groups partial).
    Returns a float64 device array (ceil(rows / g0), ceil(cols / g1)); an empty group has 0, a
    group holding a NaN a NaN (of the largest payload: numpy gives one of its NaNs)."""
    r, c = x.shape
    g0, g1 = int(g0), int(g1)
    tile_rows, tile_cols = min(g0, TILE_ROWS), min(g1, TILE_COLS)
    tiles0 = -(-min(g0, max(r, 1)) // tile_rows)       # tiles along a group's rows
    tiles1 = -(-min(g1, max(c, 1)) // tile_cols)
    n0, n1 = -(-r // g0), -(-c // g1)
    out_bits = cuda.to_device(np.zeros((n0, n1), dtype=np.int64))
    launch(group_amax_kernel, n0 * tiles0 * n1 * tiles1)(
        x, g0, g1, tile_rows, tile_cols, tiles0, tiles1, out_bits)
    return out_bits.view(np.float64)


def scale_and_round(x, div, r0, c0, g0, g1, p, emin, max_finite, along_k, out):
    """tcsim._kernels.quantize.scale_and_round on device arrays, bit for bit (same arguments:
    x the whole operand, float32 or float64; div its compact float32 divisors; out float64
    (B, R, C), written). Returns out."""
    n = out.shape[0] * out.shape[1] * out.shape[2]
    launch(scale_and_round_kernel, n)(x, div, int(r0), int(c0), int(g0), int(g1), int(p),
                                       int(emin), float(max_finite), int(along_k), out)
    return out


def _arr(ndim, dtype):
    return types.Array(dtype, ndim, "C")


_I = types.int64
_F = types.float64

KERNELS = {}
for _name, _dt in (("float32", types.float32), ("float64", types.float64)):
    KERNELS[f"group_amax_kernel[{_name}]"] = (group_amax_kernel, (
        _arr(2, _dt), _I, _I, _I, _I, _I, _I, _arr(2, types.int64)))
    KERNELS[f"scale_and_round_kernel[{_name}]"] = (scale_and_round_kernel, (
        _arr(2, _dt), _arr(2, types.float32), _I, _I, _I, _I, _I, _I, _F, _I, _arr(3, _F)))
