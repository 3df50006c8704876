"""Kernel of tcsim.quant (private): the scale-and-cast pass q = RN32(RN32(x) / s), then RNE to
an FP8/FP4 format with saturation, by the kernels' one rounding routine (round_pack). It reads x
in its own dtype and layout (no float64 copy).
Serial: it is a few per cent of a GEMM's time, and a parallel kernel takes numba two to three
times as long to compile (cold start); serial code also cannot depend on a thread count."""

from __future__ import annotations

import numpy as np
from numba import njit

from ..overflow import OVERFLOW_SATURATE
from ..rounding import RNE
from .roundpack import FREE_EMAX, NO_FLUSH, NO_RANDOM, NO_RANDOM_BITS, NO_RESIDUAL, round_pack


@njit(cache=True)
def scale_and_round(x, scales, r0, c0, g0, g1, p, emin, max_finite, along_k, out):
    """out[b, r, c] = RNE_sat(RN32(RN32(x[i, j]) / scales[i // g0, j // g1])) for the blocks
    of x that out covers: i = r0 + r, j = c0 + b * C + c when along_k == 1 (consecutive column
    blocks, K of role "a"), i = r0 + b * R + r, j = c0 + c when along_k == 0 (row blocks).

    x: 2-D float32 or float64, the whole operand in its own layout; scales: float32 divisors of
    the whole operand (compact, x's layout); out: float64 (B, R, C) inside x.
    RN32 is float32 arithmetic (IEEE, no fastmath). q is clipped to +-max_finite first (which
    saturation makes equivalent: max_finite is a format value, and a rounding is monotonic),
    then round_pack rounds it (exactly, in float64) to p significant bits, nearest even, on
    the format's grid: 2^(e + 1 - p) for |q| in binade e >= emin, the fixed subnormal spacing
    2^(emin + 1 - p) below 2^emin; a sign of zero is kept. The mode is a constant, so the
    inlined round_pack is its RNE branch only.
    """
    B, R, C = out.shape
    top = np.float32(max_finite)
    q = np.empty(C, dtype=np.float32)
    for t in range(B * R):
        b = t // R
        r = t - b * R
        i = r0 + r + (1 - along_k) * b * R
        j0 = c0 + along_k * b * C
        srow = scales[i // g0]
        orow = out[b, r]
        # two passes over the row: the scaling (a gather of scales), then a plain map that
        # vectorises
        for c in range(C):
            v = np.float32(x[i, j0 + c]) / srow[(j0 + c) // g1]
            q[c] = min(max(v, -top), top)
        for c in range(C):
            # (the saturation is never reached: q is clipped)
            orow[c] = round_pack(np.float64(q[c]), NO_RESIDUAL, p, emin, FREE_EMAX, RNE,
                                 OVERFLOW_SATURATE, NO_FLUSH, NO_RANDOM, NO_RANDOM_BITS)
