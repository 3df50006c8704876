"""Small device-array operations the GPU dispatch needs between kernels (copies, casts, a
transpose, a NaN test): one thread per element, results independent of the launch."""

from __future__ import annotations

import numpy as np

from . import arrays, cuda
from .prep import flat, launch

_cuda = cuda()


@_cuda.jit
def _copy_flat(src, dst):
    """dst.flat[t] = src.flat[t] (numeric conversion to dst's dtype; float64 -> float32 is
    exact for the values the kernels hold: see astype)."""
    t = _cuda.grid(1)
    if t < src.size:
        dst[t] = src[t]


@_cuda.jit
def _nan_to_zero_flat(src, dst):
    """dst.flat[t] = 0 where src is NaN, else src."""
    t = _cuda.grid(1)
    if t < src.size:
        x = src[t]
        dst[t] = 0.0 if x != x else x


@_cuda.jit
def _any_nan_flat(src, flag):
    """flag[0] = 1 when some element is NaN (every writer writes the same 1: no race on the
    result)."""
    t = _cuda.grid(1)
    if t < src.size:
        x = src[t]
        if x != x:
            flag[0] = 1


@_cuda.jit
def _transpose_kn(src, dst):
    """dst[bi, j, k] = src[bi, k, j] (B x K x N -> B x N x K)."""
    t = _cuda.grid(1)
    nb, k, n = src.shape
    if t < nb * k * n:
        bi, r = t // (k * n), t % (k * n)
        kk, j = r // n, r % n
        dst[bi, j, kk] = src[bi, kk, j]


def copy(x):
    """A new device array equal to x."""
    return astype(x, x.dtype, force=True)


def astype(x, dtype, force: bool = False):
    """x converted to ``dtype`` on the device (x itself when it already has it, unless
    ``force``). float64 -> float32 is only used on values that float32 holds exactly
    (tcsim.route.fits_float32), so no rounding mode is involved."""
    dtype = np.dtype(dtype)
    if np.dtype(x.dtype) == dtype and not force:
        return x
    out = arrays.empty(x.shape, dtype)
    if x.size:
        launch(_copy_flat, x.size)(flat(x), flat(out))
    return out


def nan_to_zero(x):
    """A copy of x with NaNs replaced by 0."""
    out = arrays.empty(x.shape, x.dtype)
    if x.size:
        launch(_nan_to_zero_flat, x.size)(flat(x), flat(out))
    return out


def any_nan(x) -> bool:
    """True when some element of x is NaN (one flag read back to the host)."""
    if x.size == 0:
        return False
    flag = arrays.to_device(np.zeros(1, np.int32))
    launch(_any_nan_flat, x.size)(flat(x), flag)
    return bool(flag.copy_to_host()[0])


def transpose_kn(x):
    """(B, K, N) -> a contiguous (B, N, K) device array."""
    nb, k, n = x.shape
    out = arrays.empty((nb, n, k), x.dtype)
    if x.size:
        launch(_transpose_kn, x.size)(x, out)
    return out


KERNELS = {
    "copy_f64_f32": (_copy_flat, "void(float64[:], float32[:])"),
    "copy_f32_f64": (_copy_flat, "void(float32[:], float64[:])"),
    "copy_f16_f64": (_copy_flat, "void(float16[:], float64[:])"),
    "copy_f16_f32": (_copy_flat, "void(float16[:], float32[:])"),
    "nan_to_zero": (_nan_to_zero_flat, "void(float64[:], float64[:])"),
    "any_nan": (_any_nan_flat, "void(float64[:], int32[:])"),
    "transpose_kn": (_transpose_kn, "void(float64[:, :, :], float64[:, :, :])"),
}

