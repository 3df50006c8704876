"""The exact block FMA kernel and the rounding helpers of the kernels (private; use
:func:`tcsim.mma`).

``exact_kernel``: exact alignment (f = None). The terms of a block are added into a
non-overlapping floating-point expansion (Shewchuk's grow-expansion, as in Python's math.fsum),
which holds their sum exactly; the top of the expansion gives a float64 ``hi`` and the sign of
the exact remainder, which is all a rounding to <= 49 significant bits needs. Finite fraction
bits run on the staged kernel (tcsim._kernels.staged) or, for the common FP8 paths, the fused
float32 tile (tcsim._kernels.fused).

Every kernel rounds with ``roundpack.round_pack``, the one round-and-pack routine; the settings
are tcsim.params.KernelParams, read by field name.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..overflow import OVERFLOW_IEEE
from ..rounding import SR
from .roundpack import (
    FREE_EMAX,
    FREE_EMIN,
    NO_FLUSH,
    NO_RANDOM,
    NO_RANDOM_BITS,
    round_pack,
    sr_random,
)
from .tiles import run_strided


@njit(cache=True, inline="always")
def round_result(v, lo, prm, u):
    """The exact nonzero v + lo rounded with the output settings (round_pack)."""
    return round_pack(v, lo, prm.out_prec, prm.acc_emin, prm.acc_emax, prm.out_rnd,
                      prm.overflow, prm.flush_out, u, prm.sr_bits)


@njit(cache=True, inline="always")
def round_product_sum(v, lo, prm):
    """The exact nonzero product sum v + lo rounded to product_sum_precision bits, with no
    exponent limits (c_placement "after"; FREE_EMIN / FREE_EMAX never bind, so neither the
    overflow policy nor flushing ever acts)."""
    return round_pack(v, lo, prm.psum_prec, FREE_EMIN, FREE_EMAX, prm.psum_rnd, OVERFLOW_IEEE,
                      NO_FLUSH, NO_RANDOM, NO_RANDOM_BITS)


@njit(cache=True)
def two_sum_round(x, y, prm, u):
    """Round x + y (both float64, exact values) with the output settings: TwoSum gives the exact
    sum as hi + lo with |lo| <= half a spacing of hi (Knuth)."""
    hi = x + y
    yv = hi - x
    lo = (x - (hi - yv)) + (y - yv)
    if hi == 0.0:
        return 0.0
    return round_result(hi, lo, prm, u)


@njit(cache=True)
def _zero_result(neg_zeros_only, prm):
    """An exact-zero result: -0 only under the IEEE rule when every term was a -0."""
    if prm.zero_ieee and neg_zeros_only:
        return -0.0
    return 0.0


@njit(cache=True)
def _grow(parts, count, x):
    """Add x to the non-overlapping expansion parts[:count] exactly; return the new count."""
    kept = 0
    for t in range(count):
        y = parts[t]
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)                # exact error of hi = fl(x + y) when |x| >= |y|
        if lo != 0.0:
            parts[kept] = lo
            kept += 1
        x = hi
    parts[kept] = x
    return kept + 1


@njit(cache=True)
def _top(parts, count):
    """(hi, lo): hi the leading float64 of the expansion, lo whose sign is that of sum - hi."""
    if count == 0:
        return 0.0, 0.0
    count -= 1
    hi = parts[count]
    lo = 0.0
    while count > 0:
        x = hi
        count -= 1
        y = parts[count]
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            break                        # the rest is smaller than |lo|: it cannot flip its sign
    return hi, lo


def exact_kernel(a, b, a_raw, b_raw, c, prm):
    """D = A*B + C through a chain of exactly aligned block FMAs (fraction_bits = None)."""
    B, M, K = a.shape
    d = np.empty((B, M, b.shape[2]))
    run_strided(_exact_rows, B * M, a, b, a_raw, b_raw, c, prm, d)
    return d


@njit(cache=True, nogil=True)
def _exact_rows(a, b, a_raw, b_raw, c, prm, d, first, step):
    """Output rows first, first + step, ... of exact_kernel (one thread's share)."""
    B, M, K = a.shape
    N = b.shape[2]
    n = prm.block
    c_after = prm.c_after
    has_special = prm.has_special
    parts = np.empty(128)
    for t in range(first, B * M, step):
        bi = t // M
        i = t - bi * M
        for j in range(N):
            acc = c[bi, i, j]
            for k0 in range(0, K, n):
                k1 = min(k0 + n, K)
                sp = acc if not np.isfinite(acc) else 0.0   # Inf may come from an overflow
                if has_special:
                    for k in range(k0, k1):
                        q = a_raw[bi, i, k] * b_raw[bi, k, j]
                        if not np.isfinite(q):
                            sp += q
                if sp != 0.0:
                    acc = sp
                    continue
                count = 0
                nonzero_terms = False
                neg = np.signbit(acc)
                if not c_after and acc != 0.0:
                    count = _grow(parts, count, acc)
                    nonzero_terms = True
                for k in range(k0, k1):
                    q = a[bi, i, k] * b[bi, k, j]        # exact: at most 2 x 11 significant bits
                    if q != 0.0:
                        count = _grow(parts, count, q)
                        nonzero_terms = True
                    else:
                        neg = neg and np.signbit(q)
                hi, lo = _top(parts, count)
                u = sr_random(prm.sr_seed, bi, i, j, k0 // n, prm.sr_bits) \
                    if prm.out_rnd == SR else 0
                if c_after:
                    if hi != 0.0:
                        hi = round_product_sum(hi, lo, prm)
                    nonzero_terms = nonzero_terms or acc != 0.0
                    r = two_sum_round(hi, acc, prm, u)
                elif hi != 0.0:
                    r = round_result(hi, lo, prm, u)
                else:
                    r = 0.0
                if r == 0.0 and hi == 0.0 and not nonzero_terms:
                    r = _zero_result(neg, prm)
                acc = r
            d[bi, i, j] = acc
