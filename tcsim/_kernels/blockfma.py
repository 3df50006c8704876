"""Numba kernels of the block FMA (private; use :func:`tcsim.mma`).

Two kernels, one compiled signature each, all settings in an int64 parameter vector
(see tcsim/params.py for the slot meanings; the slots are read by index here):

* ``grid_kernel``: finite fraction bits f. Every input value is held exactly in float64. The block's
  largest exponent E is carried as the power of two 2^E, so for each output the scale
  s = 2^f / 2^E is an exact power of two and a term v lands on the grid 2^(E-f) as
  round_term(v * s) grid units: v*s is exact (a power-of-two scaling of an exact product) and
  trunc/floor/rint of it is the sign-magnitude truncation / two's-complement floor / nearest-even
  rounding of the hardware. Each term is < 4 * 2^f units, so n + 1 of them add exactly in float64
  while f + 2 + log2(n + 1) <= 53 (checked in params.py). The loops run over a row of N outputs
  with no per-element bit fiddling, so LLVM vectorises them.
* ``exact_kernel``: exact alignment (f = None). The terms of a block are added into a
  non-overlapping floating-point expansion (Shewchuk's grow-expansion, as in Python's math.fsum),
  which holds their sum exactly; the top of the expansion gives a float64 ``hi`` and the sign of
  the exact remainder, which is all a rounding to <= 49 significant bits needs.

Both end in ``round_out``, one SoftFloat-style round-and-pack routine for every output format.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# IEEE binary64 exponent field; ``bits & EXP_MASK`` re-read as a float64 is 2^floor(log2|x|) for
# a normal x (sign and fraction cleared), and 0.0 for x = 0.
EXP_MASK = np.int64(0x7FF0000000000000)
TWO53 = 9007199254740992.0
UNBOUNDED = 100000  # an exponent limit that never binds (product-sum rounding)
EXP_FLOOR = -960    # E never goes below 2^-960 in the scale, keeping 2^f / 2^E finite


@njit(cache=True)
def round_out(v, lo, p, emin, emax, rnd, overflow, flush):
    """Round the exact value ``v + lo`` (v != 0, float64; lo = 0 or a residual with
    |lo| < one float64 spacing of v, only its sign is used) to ``p`` significant bits.

    The grid is 2^(max(floor(log2|v|), emin) - (p - 1)): p bits in the normal range, and the
    fixed spacing of a p-bit format below 2^emin. rnd: 0 toward zero, 1 nearest-even.
    overflow (beyond (2 - 2^(1-p)) * 2^emax): 0 IEEE (RNE -> Inf, RZ -> max), 1 Inf, 2 max.
    flush: nonzero results below 2^emin become zero. The sign of v is kept (also on zeros).
    """
    neg = v < 0.0
    m, e = math.frexp(abs(v))           # |v| = m * 2^e, m in [0.5, 1)
    mant = np.int64(m * TWO53)          # |v| = mant * 2^(e - 53), mant a 53-bit integer
    e_lsb = e - 53
    g = max(e - 1, emin) - (p - 1)      # exponent of the rounding grid
    shift = g - e_lsb                   # bits of mant below the grid (>= 5 since p <= 49)
    # direction of the residual relative to |v|: +1 further from zero, -1 toward zero
    d = 0
    if lo != 0.0:
        d = 1 if (lo > 0.0) != neg else -1
    if shift >= 62:                     # everything is below half a grid step
        q = np.int64(0)
        rem = np.int64(1)
        half = np.int64(2)
    else:
        q = mant >> shift
        rem = mant - (q << shift)
        half = np.int64(1) << (shift - 1)
    if rnd == 0:
        if rem == 0 and d < 0:          # just below a grid point: toward zero is one step down
            q -= 1
    else:
        if rem > half or (rem == half and (d > 0 or (d == 0 and (q & 1) == 1))):
            q += 1
    r = math.ldexp(float(q), g)
    top = math.ldexp(float((np.int64(1) << p) - 1), emax - p + 1)
    if r > top:
        if overflow == 1 or (overflow == 0 and rnd == 1):
            r = math.inf
        else:
            r = top
    if flush != 0 and r != 0.0 and r < math.ldexp(1.0, emin):
        r = 0.0
    return -r if neg else r


@njit(cache=True)
def _two_sum_round(x, y, prm):
    """Round x + y (both float64, exact values) with the output settings: TwoSum gives the exact
    sum as hi + lo with |lo| <= half a spacing of hi (Knuth)."""
    hi = x + y
    yv = hi - x
    lo = (x - (hi - yv)) + (y - yv)
    if hi == 0.0:
        return 0.0
    return round_out(hi, lo, prm[7], prm[13], prm[14], prm[8], prm[12], prm[10])


@njit(cache=True)
def _zero_result(neg_zeros_only, prm):
    """An exact-zero result: -0 only under the IEEE rule when every term was a -0."""
    if prm[11] != 0 and neg_zeros_only:
        return -0.0
    return 0.0


@njit(cache=True, parallel=True)
def grid_kernel(a, b, a_raw, b_raw, pa, pb, c, prm):
    """D = A*B + C through a chain of block FMAs with finite fraction bits.

    a, b: finite input values (non-finite entries replaced by 0); a_raw, b_raw: the original values
    (read only when prm[15] says there are NaN/Inf); pa, pb: 2^exp of each nonzero input
    (exp = floor(log2|x|), or the format's emin for subnormals), 0 for zeros; c: (M, N) start
    accumulator. Returns float64 values of the accumulator format.
    """
    B, M, K = a.shape
    N = b.shape[2]
    n = prm[0]
    f = prm[1]
    term = prm[2]
    normalized = prm[3] != 0
    c_after = prm[4] != 0
    special = prm[15] != 0
    two_f = math.ldexp(1.0, f)
    acc_emin_pow = math.ldexp(1.0, prm[13])
    clamp_pow = math.ldexp(1.0, max(prm[9], EXP_FLOOR))
    d = np.empty((B, M, N))
    for t in prange(B * M):
        bi = t // M
        i = t - bi * M
        acc = c[bi, i].copy()
        accf = np.empty(N)
        E = np.empty(N)
        S = np.empty(N)
        scale = np.empty(N)
        sp = np.zeros(N)
        ebits = np.empty(N, dtype=np.int64)
        epow = ebits.view(np.float64)
        for k0 in range(0, K, n):
            k1 = min(k0 + n, K)
            # split the accumulator into its finite part and its NaN/Inf part
            if special:
                for j in range(N):
                    x = acc[j]
                    fin = np.isfinite(x)
                    accf[j] = x if fin else 0.0
                    sp[j] = 0.0 if fin else x
                for k in range(k0, k1):
                    ar = a_raw[bi, i, k]
                    for j in range(N):
                        q = ar * b_raw[bi, k, j]        # inf*0 -> NaN, inf*x -> signed inf
                        if not np.isfinite(q):
                            sp[j] += q              # +inf + -inf -> NaN; NaN absorbs
            else:
                accf[:] = acc
            # E as a power of two: max over the terms' 2^exponent (0 = no term yet)
            if c_after:
                E[:] = 0.0
            else:
                cbits = accf.view(np.int64)
                for j in range(N):
                    ebits[j] = cbits[j] & EXP_MASK
                for j in range(N):
                    e = epow[j]
                    E[j] = max(e, acc_emin_pow) if e > 0.0 else 0.0
            for k in range(k0, k1):
                aik = a[bi, i, k]
                if aik == 0.0:
                    continue
                if normalized:
                    for j in range(N):
                        S[j] = aik * b[bi, k, j]
                    sbits = S.view(np.int64)
                    for j in range(N):
                        ebits[j] = sbits[j] & EXP_MASK
                    for j in range(N):
                        E[j] = max(E[j], epow[j])
                else:
                    pak = pa[bi, i, k]
                    for j in range(N):
                        E[j] = max(E[j], pak * pb[bi, k, j])
            # grid units per unit value: 2^f / 2^E, an exact power of two
            for j in range(N):
                scale[j] = two_f / max(E[j], clamp_pow)
            if c_after:
                S[:] = 0.0
            elif term == 0:
                for j in range(N):
                    S[j] = np.trunc(accf[j] * scale[j])
            elif term == 1:
                for j in range(N):
                    S[j] = np.floor(accf[j] * scale[j])
            else:
                for j in range(N):
                    S[j] = np.rint(accf[j] * scale[j])
            for k in range(k0, k1):
                aik = a[bi, i, k]
                if aik == 0.0:
                    continue
                if term == 0:
                    for j in range(N):
                        S[j] += np.trunc(aik * b[bi, k, j] * scale[j])
                elif term == 1:
                    for j in range(N):
                        S[j] += np.floor(aik * b[bi, k, j] * scale[j])
                else:
                    for j in range(N):
                        S[j] += np.rint(aik * b[bi, k, j] * scale[j])
            # normalise and round once
            for j in range(N):
                if special and sp[j] != 0.0:    # NaN != 0 holds too
                    acc[j] = sp[j]
                    continue
                s = S[j] / scale[j]             # exact: a power-of-two scaling
                if c_after:
                    if s != 0.0:
                        s = round_out(s, 0.0, prm[5], -UNBOUNDED, UNBOUNDED, prm[6], 0, 0)
                    r = _two_sum_round(s, accf[j], prm)
                    nonzero_terms = E[j] > 0.0 or accf[j] != 0.0
                else:
                    r = 0.0
                    if s != 0.0:
                        r = round_out(s, 0.0, prm[7], prm[13], prm[14], prm[8], prm[12], prm[10])
                    nonzero_terms = E[j] > 0.0
                if r == 0.0 and s == 0.0 and not nonzero_terms:
                    neg = np.signbit(accf[j])
                    for k in range(k0, k1):
                        neg = neg and np.signbit(a[bi, i, k] * b[bi, k, j])
                    r = _zero_result(neg, prm)
                acc[j] = r
        d[bi, i] = acc
    return d


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


@njit(cache=True, parallel=True)
def exact_kernel(a, b, a_raw, b_raw, c, prm):
    """D = A*B + C through a chain of exactly aligned block FMAs (fraction_bits = None)."""
    B, M, K = a.shape
    N = b.shape[2]
    n = prm[0]
    c_after = prm[4] != 0
    special = prm[15] != 0
    d = np.empty((B, M, N))
    for t in prange(B * M):
        bi = t // M
        i = t - bi * M
        parts = np.empty(128)
        for j in range(N):
            acc = c[bi, i, j]
            for k0 in range(0, K, n):
                k1 = min(k0 + n, K)
                if special:
                    sp = acc if not np.isfinite(acc) else 0.0
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
                if c_after:
                    if hi != 0.0:
                        hi = round_out(hi, lo, prm[5], -UNBOUNDED, UNBOUNDED, prm[6], 0, 0)
                    nonzero_terms = nonzero_terms or acc != 0.0
                    r = _two_sum_round(hi, acc, prm)
                elif hi != 0.0:
                    r = round_out(hi, lo, prm[7], prm[13], prm[14], prm[8], prm[12], prm[10])
                else:
                    r = 0.0
                if r == 0.0 and hi == 0.0 and not nonzero_terms:
                    r = _zero_result(neg, prm)
                acc = r
            d[bi, i, j] = acc
    return d
