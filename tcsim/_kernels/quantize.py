"""Scale-and-cast kernel of tcsim.quant (private): q = RN32(RN32(x) / s), then RNE to an FP8
format with saturation, one pass, parallel over rows."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .blockfma import pow2_floor, recip_pow2


@njit(cache=True, parallel=True)
def scale_and_round(x, scales, g0, g1, p, emin, max_finite, out):
    """out[r, c] = RNE_sat(RN32(RN32(x[r, c]) / scales[r // g0, c // g1])) for a 2-D float64 x.

    RN32 via float32 arithmetic (IEEE). The FP8 rounding of q (clipped to +-max_finite first,
    which saturation makes equivalent): the grid is G = max(2^floor(log2|q|), 2^emin) * 2^(1-p)
    (p significant bits, fixed spacing below 2^emin), q / G is an exact power-of-two scaling and
    rint rounds it to nearest even; r * G is exact.
    """
    R, C = x.shape
    grid_shift = math.ldexp(1.0, 1 - p)
    emin_pow = math.ldexp(1.0, emin)
    for r in prange(R):
        srow = scales[r // g0]
        for c in range(C):
            q = np.float64(np.float32(x[r, c]) / np.float32(srow[c // g1]))
            q = min(max(q, -max_finite), max_finite)
            G = max(pow2_floor(q), emin_pow) * grid_shift
            out[r, c] = np.rint(q * recip_pow2(G)) * G
