"""Kernel of tcsim.quant (private): the scale-and-cast pass q = RN32(RN32(x) / s), then RNE to
an FP8/FP4 format with saturation. It reads x in its own dtype and layout (no float64 copy).
Serial: it is a few per cent of a GEMM's time, and a parallel kernel takes numba two to three
times as long to compile (cold start); serial code also cannot depend on a thread count."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def scale_and_round(x, scales, r0, c0, g0, g1, p, emin, max_finite, along_k, out):
    """out[b, r, c] = RNE_sat(RN32(RN32(x[i, j]) / scales[i // g0, j // g1])) for the blocks
    of x that out covers: i = r0 + r, j = c0 + b * C + c when along_k == 1 (consecutive column
    blocks, K of role "a"), i = r0 + b * R + r, j = c0 + c when along_k == 0 (row blocks).

    x: 2-D float32 or float64, the whole operand in its own layout; scales: float32 divisors of
    the whole operand (compact, x's layout); out: float64 (B, R, C) inside x.
    RN32 is float32 arithmetic (IEEE, no fastmath). q is clipped to +-max_finite first (which
    saturation makes equivalent), then rounded to p significant bits, round to nearest even:
    * |q| >= 2^emin (normal in the format): in q's binary32 bits, add 2^(s-1) - 1 plus the
      lowest kept bit and clear the s = 24 - p low bits (RNE on the significand; a carry moves
      into the exponent field, as it should); the sign bit is untouched;
    * |q| < 2^emin (the format's subnormals, fixed spacing 2^(emin+1-p)): rint(q * 2^(p-1-emin))
      * 2^(emin+1-p), both products exact power-of-two scalings; a sign of zero is kept.
    """
    B, R, C = out.shape
    shift = 24 - p
    half = np.uint32((1 << (shift - 1)) - 1)
    low = np.uint32((1 << shift) - 1)
    up = np.float32(2.0 ** (p - 1 - emin))
    down = np.float32(2.0 ** (emin + 1 - p))
    tiny = np.float32(2.0 ** emin)
    top = np.float32(max_finite)
    for t in range(B * R):
        b = t // R
        r = t - b * R
        i = r0 + r + (1 - along_k) * b * R
        j0 = c0 + along_k * b * C
        srow = scales[i // g0]
        orow = out[b, r]
        q = np.empty(C, dtype=np.float32)
        for c in range(C):
            v = np.float32(x[i, j0 + c]) / srow[(j0 + c) // g1]
            q[c] = min(max(v, -top), top)
        bits = q.view(np.uint32)
        for c in range(C):
            if abs(q[c]) < tiny:
                orow[c] = np.rint(q[c] * up) * down
            else:
                v = bits[c]
                bits[c] = (v + half + ((v >> shift) & np.uint32(1))) & ~low
                orow[c] = q[c]
