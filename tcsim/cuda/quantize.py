"""The quantisation of tcsim.quant on the device: amaxes, scales and codes, the same bits.

tcsim.quant (its module docstring states the arithmetic) quantises an operand in three steps;
each has a kernel here, and a function on device arrays with the contract of the CPU step:

==================  ========================================  ================================
step                CPU (tcsim.quant / _kernels.quantize)     here
==================  ========================================  ================================
amax per group      quant._group_amax(x, g0, g1)              :func:`group_amax`
tensor amax         float(amax.max(initial=0.0))              :func:`tensor_amax`
scales              quant._scales + history max, divisors     :func:`scales`
NVFP4 scales        quant._nvfp4_scales                       :func:`nvfp4_scales`
codes               _kernels.quantize.scale_and_round         :func:`scale_and_round`
==================  ========================================  ================================

The checks that raise (dtype, shape, NaN/Inf in x, a history's values) stay on the host, in
tcsim.quant: they read a scalar (the tensor amax) at most. The scales are elementwise in the
amaxes, so :func:`scales` / :func:`nvfp4_scales` take the amaxes in x's own layout (as
group_amax gives them) and return the scales and fp32 divisors in that layout: quant's
canonical transpose (role b) before and after them cancels.

Arithmetic, as on the CPU: amaxes are maxima of bit patterns (exact, order-free); the scale
steps are the same float32 divisions (``div.rn.f32``), float64 power-of-two scalings (exact)
and exact comparisons; the one rounded float32 product, NVFP4's divisor RN32(s * sg), is
``scalar.mul_rn``; the codes are the CPU's own ``round_pack`` / ``codec.round_value``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types

from .. import cuda as tcsim_cuda
from .._kernels.codec import N_PARAMS, round_value
from .._kernels.roundpack import (FREE_EMAX, NO_FLUSH, NO_RANDOM, NO_RANDOM_BITS, NO_RESIDUAL,
                                  f64_as_i64, pow2, round_pack)
from .._kernels.scalar import mul_rn
from ..config import Scaling
from ..errors import FormatError
from ..formats import format_params, get_format
from ..overflow import OVERFLOW_SATURATE
from ..rounding import RNE

cuda = tcsim_cuda.cuda()

# ---- scale kinds (how a group's scale follows from its amax: tcsim.quant, step 2) ------------
SCALE_FP32 = 0    # RN32(RN32(A) / max_finite), at least 2^-149, times 2^margin
SCALE_POW2 = 1    # the smallest 2^e with 2^e * max_finite >= A, e >= -149, plus margin
SCALE_UE8M0 = 2   # as SCALE_POW2, the exponent clamped to E8M0's [-127, 127]
SCALE_MX = 3      # 2^(floor(log2 A) - emax_elem + margin), clamped to [-127, 127]
SCALE_KINDS = {"fp32": SCALE_FP32, "pow2": SCALE_POW2, "ue8m0": SCALE_UE8M0}

FP32_MIN_EXP = -149                        # 2^-149: the smallest positive float32
FP32_MAX = float(np.finfo(np.float32).max)
E8M0_MIN_EXP, E8M0_MAX_EXP = -127, 127
MAGNITUDE = (1 << 63) - 1                  # all bits of a binary64 but the sign
# NVFP4's per-tensor divisor: the e4m3 scale range times the e2m1 element range (448 * 6)
NVFP4_GLOBAL_DIVISOR = get_format("e4m3").max_finite * get_format("e2m1").max_finite
NVFP4_ELEMENT_MAX = get_format("e2m1").max_finite

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


@njit(cache=True)
def pow2_exponent(amax, max_finite):
    """Smallest integer e with 2^e * max_finite >= amax (amax > 0, finite): quant._pow2_exponent
    for one value, by the same exact comparisons. frexp gives amax in [2^(ea-1), 2^ea) and
    max_finite in [2^(ef-1), 2^ef): e = ea - ef - 1 is a lower bound, at most two steps short.
    ldexp(max_finite, e) is C's (numpy's) ldexp: exact unless it lands in binary64's subnormal
    range, where both round it the same way."""
    ea = math.frexp(amax)[1]
    ef = math.frexp(max_finite)[1]
    e = ea - ef - 1
    for _ in range(2):
        if math.ldexp(max_finite, e) < amax:
            e += 1
    return e


@njit(cache=True)
def scale_of(amax, kind, max_finite, emax_elem, margin):
    """The dequantisation scale (a float32 value, as float64) of a group of amax ``amax``
    (finite, >= 0): quant._scales for one value (tcsim.quant, step 2). An all-zero group gets 1.

    SCALE_FP32: RN32(RN32(A) / max_finite) (float32 division), 2^-149 if it underflows to 0,
    times 2^margin (exact: a float64 scaling of a value >= 2^-149 by at most 2^64).
    The others are 2^e with e in [-149, 184], built in the exponent field (pow2)."""
    if amax == 0.0:
        return 1.0
    if kind == SCALE_MX:
        e = math.frexp(amax)[1] - 1 - emax_elem + margin     # floor(log2 A) - emax + margin
        return pow2(min(max(e, E8M0_MIN_EXP), E8M0_MAX_EXP))
    if kind == SCALE_FP32:
        s = np.float64(np.float32(amax) / np.float32(max_finite))
        if s == 0.0:
            s = pow2(FP32_MIN_EXP)
        return s * pow2(margin)
    e = max(pow2_exponent(amax, max_finite), FP32_MIN_EXP) + margin
    if kind == SCALE_UE8M0:
        e = min(max(e, E8M0_MIN_EXP), E8M0_MAX_EXP)
    return pow2(e)


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
def scales_kernel(amax, hmax, kind, max_finite, emax_elem, margin, scales, div, too_big):
    """scales[g] = scale_of(max(amax[g], hmax)), div[g] = the same as float32, one thread per
    group g; too_big[0] <- 1 where a scale exceeds float32's range (div is then Inf)."""
    t = cuda.grid(1)
    rows, cols = amax.shape
    if t >= rows * cols:
        return
    i = t // cols
    j = t - i * cols
    a = amax[i, j]
    if hmax > a:        # np.maximum(amax, hmax): a NaN amax stays NaN (the comparison is false)
        a = hmax
    s = scale_of(a, kind, max_finite, emax_elem, margin)
    scales[i, j] = s
    if s > FP32_MAX:
        too_big[0] = 1                  # the host raises FormatError (div left unwritten)
    else:
        div[i, j] = np.float32(s)       # exact: s is a float32 value


@cuda.jit
def nvfp4_scales_kernel(amax, sg, fp, scales, div):
    """NVFP4 block scales, one thread per group: s = e4m3 RNE with saturation of
    RN32(RN32(A / 6) / sg) (1 where it is 0), divisor RN32(s * sg) (2^-149 where it is 0);
    quant._nvfp4_scales for one value. sg: the fp32 tensor scale; fp: e4m3's codec parameters
    (tcsim.formats.format_params as a tuple), rounded by the codec's own round_value."""
    t = cuda.grid(1)
    rows, cols = amax.shape
    if t >= rows * cols:
        return
    i = t // cols
    j = t - i * cols
    g32 = np.float32(sg)
    q = (np.float32(amax[i, j]) / np.float32(NVFP4_ELEMENT_MAX)) / g32
    s = round_value(np.float64(q), fp, RNE, OVERFLOW_SATURATE, 0, 1)
    if s == 0.0:
        s = 1.0
    # s has at most 4 significant bits, sg up to 24: the product is rounded (mul_rn, never
    # fused), as numpy's float32 multiply rounds it
    d = mul_rn(np.float32(s), g32)
    if d == 0.0:
        d = np.float32(pow2(FP32_MIN_EXP))
    scales[i, j] = s
    div[i, j] = d


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
def _launch(kernel, n):
    """kernel configured for n threads of one dimension."""
    return kernel[tcsim_cuda.blocks(n), tcsim_cuda.THREADS]


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
    _launch(group_amax_kernel, n0 * tiles0 * n1 * tiles1)(
        x, g0, g1, tile_rows, tile_cols, tiles0, tiles1, out_bits)
    return out_bits.view(np.float64)


def tensor_amax(amax) -> float:
    """The largest of the amaxes (a 2-D float64 device array), 0 for none: ``float(amax.max(
    initial=0.0))`` of tcsim.quant, by the same bit maximum; only this scalar comes back."""
    r, c = amax.shape
    return float(group_amax(amax, max(r, 1), max(c, 1)).copy_to_host().reshape(-1)[0]) \
        if r * c else 0.0


def scales(amax, scaling: Scaling, fmt: str, hmax: float = 0.0):
    """quant._scales of max(amax, hmax) on the device (tcsim.quant, step 2), for every
    granularity but "nvfp4": returns (scales float64, divisors float32) device arrays of amax's
    shape (the divisors the same fp32 values). amax: 2-D float64 device array of finite amaxes
    (tcsim.quant rejects NaN/Inf first); hmax: the delayed-scaling history max (0: none).
    FormatError where a scale exceeds float32's range after the margin (as the CPU)."""
    f = get_format(fmt)
    kind = SCALE_MX if scaling.granularity == "mx" else SCALE_KINDS[scaling.scale_dtype]
    rows, cols = amax.shape
    out = cuda.device_array((rows, cols), dtype=np.float64)
    div = cuda.device_array((rows, cols), dtype=np.float32)
    too_big = cuda.to_device(np.zeros(1, dtype=np.int64))
    _launch(scales_kernel, rows * cols)(amax, float(hmax), kind, float(f.max_finite),
                                        int(f.emax), int(scaling.margin), out, div, too_big)
    if too_big.copy_to_host()[0]:
        raise FormatError(f"quantize: a scale exceeds the float32 range after the margin "
                          f"2^{int(scaling.margin)} (amax {max(tensor_amax(amax), hmax)}); "
                          f"lower scaling.margin")
    return out, div


def nvfp4_scales(amax, amax_tensor: float):
    """quant._nvfp4_scales on the device: (ue4m3 scales float64, sg, divisors float32) for the
    2-D float64 device array of block amaxes ``amax`` and the tensor amax (a float). sg, the
    fp32 tensor scale, is one scalar: RN32(RN32(amax_tensor) / 2688), 1 for an all-zero tensor,
    2^-149 if it underflows, computed here on the host as tcsim.quant does."""
    with np.errstate(under="ignore"):
        sg = np.float32(amax_tensor) / np.float32(NVFP4_GLOBAL_DIVISOR)
    sg = float(sg) if amax_tensor > 0 else 1.0
    if sg == 0.0:
        sg = 2.0 ** FP32_MIN_EXP
    rows, cols = amax.shape
    out = cuda.device_array((rows, cols), dtype=np.float64)
    div = cuda.device_array((rows, cols), dtype=np.float32)
    fp = tuple(int(v) for v in format_params("e4m3"))   # a tuple: no device array to read
    _launch(nvfp4_scales_kernel, rows * cols)(amax, sg, fp, out, div)
    return out, sg, div


def scale_and_round(x, div, r0, c0, g0, g1, p, emin, max_finite, along_k, out):
    """tcsim._kernels.quantize.scale_and_round on device arrays, bit for bit (same arguments:
    x the whole operand, float32 or float64; div its compact float32 divisors; out float64
    (B, R, C), written). Returns out."""
    n = out.shape[0] * out.shape[1] * out.shape[2]
    _launch(scale_and_round_kernel, n)(x, div, int(r0), int(c0), int(g0), int(g1), int(p),
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
KERNELS["scales_kernel"] = (scales_kernel, (_arr(2, _F), _F, _I, _F, _I, _I, _arr(2, _F),
                                            _arr(2, types.float32), _arr(1, _I)))
KERNELS["nvfp4_scales_kernel"] = (nvfp4_scales_kernel, (
    _arr(2, _F), _F, types.UniTuple(_I, N_PARAMS), _arr(2, _F), _arr(2, types.float32)))
