"""The promotion epilogue (tcsim._kernels.epilogue.promote) as a CUDA kernel: the same bits.

Each tensor-core partial p is scaled and added into the FP32 accumulator acc in the recipe's
order (EPILOGUE_CODES); IEEE binary32, round to nearest even, subnormals kept, as the CPU kernel
and the CUDA cores (FMUL / FADD / FFMA without -ftz) compute it:

=========  ==========================  ======================================
mode       CPU (epilogue.promote)      here
=========  ==========================  ======================================
deepgemm   fma(sa*sb, p, acc)          fma_rn(mul_rn(sa, sb), p, acc)
2d2d       fma(sa*sb, p, acc)          fma_rn(mul_rn(sa, sb), p, acc)
1d1d       fma(p*sa, sb, acc)          fma_rn(mul_rn(p, sa), sb, acc)
2d1d       fma(p*sb, sa, acc)          fma_rn(mul_rn(p, sb), sa, acc)
mul_add    acc + (p*sa)*sb             add_rn(acc, mul_rn(mul_rn(p, sa), sb))
=========  ==========================  ======================================

The one fused operation is :func:`fma_rn` (libdevice ``fmaf``: one ``fma.rn.f32``, a single
rounding of the exact x*y + z); every other product and sum is ``scalar.mul_rn`` /
``scalar.add_rn``, rounded on its own: numba-cuda leaves libNVVM's FMA contraction on, and a
plain ``p * sa`` feeding an add or an fma could be fused into it (skipping its rounding).
In the PTX every ``fma.rn.f32`` is fma_rn's (the chunk loop is unrolled and copied per mode:
25 of them on sm_80/89/90, one per chunk on any path of an fma mode, none for mul_add), and
every other float32 operation is ``mul.rn`` / ``add.rn``, which neither NVVM nor ptxas fuses.

One thread per output, its partials applied in K order (c = 0, 1, ...): deterministic.
"""

from __future__ import annotations

import math

import numpy as np
from numba import types

from .. import cuda as tcsim_cuda
from .._kernels.epilogue import EPI_1D1D, EPI_2D1D, EPI_2D2D, EPI_DEEPGEMM
from .._kernels.scalar import add_rn, mul_rn

cuda = tcsim_cuda.cuda()

# |v| from here on rounds to +-Inf in binary32 (the midpoint between the largest float32,
# 2^128 - 2^104, and 2^128; the tie goes to the even 2^128, i.e. Inf)
_F32_OVERFLOW = 2.0 ** 128 - 2.0 ** 103


def fma_rn(x, y, z):
    """float32 x*y + z rounded once (nearest even): ``fma.rn.f32`` on the device.

    This Python body is what numba's CUDA simulator runs (its own ``cuda.fma`` is x*y + z in
    two roundings). The product x*y of two binary32 values is exact in binary64 (24 + 24 <= 53
    significant bits, exponents within binary64's normal range), and the sum s = RN64(p + z)
    misses the exact sum by e (TwoSum, exact). Round to odd then rounds once more correctly:
    RO64(v) is s when e == 0 or s's last bit is odd, else s's neighbour towards e; and
    RN32(RO64(v)) = RN32(v) since 53 >= 24 + 2 (Boldo & Melquiond 2008). Binary32 subnormals
    are binary64 normals, so this holds for them too. Non-finite operands: binary64 gives the
    IEEE result (Inf, or NaN for Inf*0 and Inf - Inf).
    """
    p = float(x) * float(y)
    zf = float(z)
    s = p + zf
    if math.isfinite(s):
        bp = s - zf                      # TwoSum (Knuth): e = (p - bp) + (z - (s - bp)) exactly
        e = (p - bp) + (zf - (s - bp))
        if e != 0.0 and (np.float64(s).view(np.int64) & 1) == 0:
            s = math.nextafter(s, math.copysign(math.inf, e))   # round to odd
        if abs(s) >= _F32_OVERFLOW:      # RO preserves this comparison (the bound is a 25-bit
            s = math.copysign(math.inf, s)   # float with an even last bit)
    return np.float32(s)


def _register_fma() -> None:
    """fma_rn on the CUDA target: libdevice fmaf (one fma.rn.f32)."""
    from numba.cuda import libdevice
    from numba.cuda.extending import overload as cuda_overload

    def typer(x, y, z):
        if all(isinstance(t, types.Float) and t.bitwidth == 32 for t in (x, y, z)):
            return lambda x, y, z: libdevice.fmaf(x, y, z)
        return None

    cuda_overload(fma_rn, target="cuda")(typer)


_register_fma()


@cuda.jit
def promote_kernel(acc, partials, sa, sb, mode):
    """acc[i, j] <- epilogue(acc[i, j], partials[c, i, j], sa[c, i], sb[c, j]) for c = 0, 1, ...
    in order; one thread per output (i, j) = divmod(thread, N). The products and sums are
    rounded on their own (mul_rn / add_rn); fma_rn is the recipe's one fused operation."""
    t = cuda.grid(1)
    n_chunks, m, n = partials.shape
    if t >= m * n:
        return
    i = t // n
    j = t - i * n
    v = acc[i, j]
    for c in range(n_chunks):
        a = sa[c, i]
        b = sb[c, j]
        p = partials[c, i, j]
        if mode == EPI_DEEPGEMM or mode == EPI_2D2D:
            v = fma_rn(mul_rn(a, b), p, v)
        elif mode == EPI_1D1D:
            v = fma_rn(mul_rn(p, a), b, v)
        elif mode == EPI_2D1D:
            v = fma_rn(mul_rn(p, b), a, v)
        else:
            v = add_rn(v, mul_rn(mul_rn(p, a), b))
    acc[i, j] = v


def promote(acc, partials, sa, sb, mode):
    """tcsim._kernels.epilogue.promote on device arrays, bit for bit: acc (M, N) float32,
    updated in place, with partials (C, M, N) float32 of C consecutive K chunks, sa (C, M) and
    sb (C, N) float32 scales, ``mode`` an EPILOGUE_CODES value. Returns acc."""
    m, n = acc.shape
    promote_kernel[tcsim_cuda.blocks(m * n), tcsim_cuda.THREADS](acc, partials, sa, sb, int(mode))
    return acc


def _arr(ndim, dtype):
    return types.Array(dtype, ndim, "C")


KERNELS = {
    "promote_kernel": (promote_kernel, (_arr(2, types.float32), _arr(3, types.float32),
                                        _arr(2, types.float32), _arr(2, types.float32),
                                        types.int64)),
}
