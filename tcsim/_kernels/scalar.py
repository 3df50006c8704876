"""Scalar float operations that compile for both targets: the CPU kernels (numba) and the CUDA
kernels (numba-cuda, tcsim.cuda).

The per-element arithmetic of the kernels (the exponent of a float from its bits, a term onto the
grid, tcsim._kernels.roundpack.round_pack, ...) is written once, as ``@njit`` functions. A CUDA
kernel calls the same functions: numba-cuda compiles a CPU dispatcher's Python source for the
device when a kernel calls it (and numba's ``@intrinsic`` bit casts lower there too). What does
not carry over is numpy's scalar ufuncs: numba-cuda has no np.floor / np.rint / np.trunc /
np.isfinite / np.signbit on scalars. The functions here are those operations with one statement
per target:

- CPU (numba): the numpy ufunc, so the CPU kernels compile to exactly what they did before;
- CUDA (numba-cuda): the libdevice function of the same IEEE meaning (floor, rint = nearest-even,
  trunc, isfinite, signbit), registered by :func:`register_cuda` when tcsim.cuda loads;
- Python (NUMBA_DISABLE_JIT, and the CUDA simulator, which runs kernels as Python): numpy.

``mul_rn`` / ``add_rn`` are the IEEE binary operations, never fused: numba-cuda leaves libNVVM's
default FMA contraction on (even without fastmath), so in a CUDA kernel ``x * y + z`` may
compile to one ``fma.rn`` that skips the rounding of ``x * y``. Kernel code writes ``*`` only
where the product is exact (then fma and mul + add agree), and ``mul_rn`` where it is not.
"""

from __future__ import annotations

import numpy as np
from numba.extending import overload


def floor(x):
    """floor(x), a float of x's type."""
    return np.floor(x)


def rint(x):
    """x rounded to the nearest integer, ties to even, a float of x's type."""
    return np.rint(x)


def trunc(x):
    """x rounded toward zero, a float of x's type."""
    return np.trunc(x)


def isfinite(x):
    """True for a finite x (not NaN, not +-Inf)."""
    return bool(np.isfinite(x))


def signbit(x):
    """True when x's sign bit is set (-0.0 and NaNs with the bit included)."""
    return bool(np.signbit(x))


def mul_rn(x, y):
    """x * y rounded once (nearest-even), never fused into a following add."""
    return x * y


def add_rn(x, y):
    """x + y rounded once (nearest-even), never fused with a preceding multiply."""
    return x + y


# ---- CPU: the numpy ufuncs (what the kernels wrote before these functions existed) ----------
@overload(floor, inline="always")
def _floor_cpu(x):
    return lambda x: np.floor(x)


@overload(rint, inline="always")
def _rint_cpu(x):
    return lambda x: np.rint(x)


@overload(trunc, inline="always")
def _trunc_cpu(x):
    return lambda x: np.trunc(x)


@overload(isfinite, inline="always")
def _isfinite_cpu(x):
    return lambda x: np.isfinite(x)


@overload(signbit, inline="always")
def _signbit_cpu(x):
    return lambda x: np.signbit(x)


@overload(mul_rn, inline="always")
def _mul_cpu(x, y):
    return lambda x, y: x * y        # numba's CPU target never contracts without fastmath


@overload(add_rn, inline="always")
def _add_cpu(x, y):
    return lambda x, y: x + y


_CUDA_REGISTERED = False


def register_cuda() -> None:
    """Register the CUDA statements of these functions (libdevice) with numba-cuda; called once
    by tcsim.cuda before any kernel compiles. Needs numba-cuda."""
    global _CUDA_REGISTERED
    if _CUDA_REGISTERED:
        return
    from numba import types
    from numba.cuda import libdevice
    from numba.cuda.extending import overload as cuda_overload

    def by_width(f32, f64):
        """An overload body choosing the float32 or float64 libdevice function."""
        def typer(x):
            if isinstance(x, types.Float):
                return f32 if x.bitwidth == 32 else f64
            return None
        return typer

    cuda_overload(floor, target="cuda")(by_width(lambda x: libdevice.floorf(x),
                                                 lambda x: libdevice.floor(x)))
    cuda_overload(rint, target="cuda")(by_width(lambda x: libdevice.rintf(x),
                                                lambda x: libdevice.rint(x)))
    cuda_overload(trunc, target="cuda")(by_width(lambda x: libdevice.truncf(x),
                                                 lambda x: libdevice.trunc(x)))
    cuda_overload(isfinite, target="cuda")(by_width(lambda x: libdevice.finitef(x) != 0,
                                                    lambda x: libdevice.isfinited(x) != 0))
    cuda_overload(signbit, target="cuda")(by_width(lambda x: libdevice.signbitf(x) != 0,
                                                   lambda x: libdevice.signbitd(x) != 0))

    def binary(f32, f64):
        def typer(x, y):
            if isinstance(x, types.Float) and isinstance(y, types.Float):
                return f32 if x.bitwidth == 32 and y.bitwidth == 32 else f64
            return None
        return typer

    cuda_overload(mul_rn, target="cuda")(binary(lambda x, y: libdevice.fmul_rn(x, y),
                                                lambda x, y: libdevice.dmul_rn(x, y)))
    cuda_overload(add_rn, target="cuda")(binary(lambda x, y: libdevice.fadd_rn(x, y),
                                                lambda x, y: libdevice.dadd_rn(x, y)))
    _CUDA_REGISTERED = True
