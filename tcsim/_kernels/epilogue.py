"""Promotion epilogue: scale a tensor-core partial and add it into the FP32 accumulator (private).

IEEE binary32 arithmetic, round to nearest even, subnormals kept, as the CUDA cores do it
(FMUL/FFMA without -ftz): numba's float32 arithmetic is IEEE binary32 (no fastmath), and
``fma_f32`` is LLVM's fused multiply-add intrinsic (one rounding of the exact x*y + z), which
compiles to the CPU's FMA instruction.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

EPI_DEEPGEMM = 0   # fma(sa*sb, p, acc)
EPI_1D1D = 1       # fma(p*sa, sb, acc)
EPI_2D1D = 2       # fma(p*sb, sa, acc)
EPI_2D2D = 3       # fma(p, sa*sb, acc)
EPI_MUL_ADD = 4    # acc + (p*sa)*sb, each operation rounded
EPILOGUE_CODES = {"deepgemm": EPI_DEEPGEMM, "1d1d": EPI_1D1D, "2d1d": EPI_2D1D,
                  "2d2d": EPI_2D2D, "mul_add": EPI_MUL_ADD}


@intrinsic
def fma_f32(typingctx, x, y, z):
    """IEEE binary32 fused multiply-add x*y + z with a single rounding (llvm.fma.f32)."""
    if not all(isinstance(t, types.Float) and t.bitwidth == 32 for t in (x, y, z)):
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f32],
                                              ir.FunctionType(f32, [f32, f32, f32]))
        return builder.call(fn, args)

    return types.float32(types.float32, types.float32, types.float32), codegen


if numba.config.DISABLE_JIT:    # pure Python (NUMBA_DISABLE_JIT=1): an intrinsic cannot run
    def fma_f32(x, y, z):       # noqa: F811
        """x*y + z exact (Fractions), rounded once to binary32 RNE: q = |s| / 2^(e-23) rounded
        half-even to an integer, e = max(floor(log2 |s|), -126) (subnormals on the emin grid)."""
        x, y, z = float(x), float(y), float(z)
        if not all(map(math.isfinite, (x, y, z))) or x * y == 0 == z:
            return np.float32(x * y + z)   # IEEE specials / signed zeros: float64 is exact here
        s = Fraction(x) * Fraction(y) + Fraction(z)
        if s == 0:
            return np.float32(0.0)
        e = abs(s).numerator.bit_length() - abs(s).denominator.bit_length()
        e -= abs(s) < Fraction(2) ** e     # floor(log2 |s|), the estimate is high by at most 1
        unit = Fraction(2) ** (max(e, -126) - 23)
        r = abs(round(s / unit) * unit)    # round(): half to even
        return np.float32(math.copysign(float(r) if r < 2 ** 128 else math.inf, s))


@njit(cache=True)
def promote(acc, partials, sa, sb, mode):
    """acc[i, j] <- epilogue(acc[i, j], partials[c, i, j], sa[c, i], sb[c, j]) for c = 0, 1, ...
    in order (one promotion per tensor-core partial, in K order), for every output.

    acc: (M, N) float32, updated in place; partials: (C, M, N) float32 tensor-core partial sums
    of C consecutive K chunks; sa: (C, M), sb: (C, N) float32 scales of each chunk's K-group.
    Serial: about 1% of a GEMM's time, and a parallel kernel compiles two to three times slower.
    """
    C, M, N = partials.shape
    for i in range(M):
        arow = acc[i]
        for c in range(C):
            a = sa[c, i]
            prow = partials[c, i]
            brow = sb[c]
            if mode == EPI_DEEPGEMM or mode == EPI_2D2D:
                for j in range(N):
                    arow[j] = fma_f32(a * brow[j], prow[j], arow[j])
            elif mode == EPI_1D1D:
                for j in range(N):
                    arow[j] = fma_f32(prow[j] * a, brow[j], arow[j])
            elif mode == EPI_2D1D:
                for j in range(N):
                    arow[j] = fma_f32(prow[j] * brow[j], a, arow[j])
            else:
                for j in range(N):
                    arow[j] = arow[j] + (prow[j] * a) * brow[j]
