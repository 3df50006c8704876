"""Numba kernels of the block FMA (private; use :func:`tcsim.mma`).

Two kernels, one compiled signature each, all settings in an int64 parameter vector
(see tcsim/params.py for the slot meanings; the slots are read by index here):

* ``grid_kernel`` (and ``grid_kernel_f32``, the same with float32 product loops where exact):
  finite fraction bits f. Every input value is held exactly in float64 (or float32). Each input's
  exponent travels as an int16 (an unnormalised product's exponent is ea + eb, one int16 add);
  the block's largest exponent E gives, per output, the scale s = 2^(f-E), an exact power of two
  built from its exponent field, and a term v lands on the grid 2^(E-f) as
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

from ..rounding import RD, RNE, RZ, SR
from .codec import f64_as_i64, i64_as_f64

# IEEE binary64 exponent field; ``bits & EXP_MASK`` re-read as a float64 is 2^floor(log2|x|) for
# a normal x (sign and fraction cleared), and 0.0 for x = 0.
EXP_MASK = np.int64(0x7FF0000000000000)
TWO53 = 9007199254740992.0
UNBOUNDED = 100000  # an exponent limit that never binds (product-sum rounding)
EXP_FLOOR = -960    # E never goes below 2^-960 in the scale, keeping 2^f / 2^E finite
F32_SCALE_CAP = 2.0 ** 100  # float32 product scale cap (see grid_kernel_f32)
RECIP_MAGIC = np.int64(2046 << 52)  # see recip_pow2
# Exponents travel as int16: a zero (or non-finite) input has NO_TERM, so a product with a zero
# factor sums to <= NO_TERM + 254 and stays out of E (two of them, -32000, still fit in int16).
# With Datapath.zero_operand_exponent set, zeros carry that exponent instead and take part in E.
NO_TERM = -16000


@njit(cache=True, inline="always")
def _mix(z):
    """splitmix64 finaliser (Steele, Lea, Flood 2014) on a uint64: a bijective avalanche mix."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def sr_random(seed, bi, i, j, kb, rbits):
    """The rbits-bit random integer of output (bi, i, j) at block kb: a counter-based hash, so a
    result never depends on thread scheduling (the same definition is in tcsim.reference)."""
    z = _mix(np.uint64(seed))
    z = _mix(z + np.uint64(bi))
    z = _mix(z + np.uint64(i))
    z = _mix(z + np.uint64(j))
    z = _mix(z + np.uint64(kb))
    return np.int64(z >> np.uint64(64 - rbits))


@njit(cache=True)
def round_out(v, lo, p, emin, emax, rnd, overflow, flush, u, rbits):
    """Round the exact value ``v + lo`` (v != 0, float64; lo = 0 or a residual with
    |lo| < one float64 spacing of v, only its sign is used) to ``p`` significant bits.

    The grid is 2^(max(floor(log2|v|), emin) - (p - 1)): p bits in the normal range, and the
    fixed spacing of a p-bit format below 2^emin. rnd: 0 toward zero, 1 nearest-even,
    2 stochastic (up when the random integer u < D, the first rbits discarded bits).
    overflow (beyond (2 - 2^(1-p)) * 2^emax): 0 IEEE (RNE/SR -> Inf, RZ -> max), 1 Inf, 2 max.
    flush: nonzero results below 2^emin become zero. The sign of v is kept (also on zeros).
    """
    neg = v < 0.0
    m, e = math.frexp(abs(v))           # |v| = m * 2^e, m in [0.5, 1)
    mant = np.int64(m * TWO53)          # |v| = mant * 2^(e - 53), mant a 53-bit integer
    # The residual is below one float64 spacing of v, and every grid point and midpoint of a
    # <= 49-bit rounding is a multiple of 16 quarter-ulps of v: so |v + lo| rounds like the
    # integer M = 4 * mant + d quarter-ulps, d = +1 / -1 / 0 as the residual points away from
    # zero / toward zero / is zero.
    d = 0
    if lo != 0.0:
        d = 1 if (lo > 0.0) != neg else -1
    big_m = mant * 4 + d
    e_lsb = e - 55
    e_top = e - 1                       # floor(log2 |v + lo|) ...
    if mant == (np.int64(1) << 52) and d < 0:
        e_top -= 1                      # ... one lower just below a power of two
    g = max(e_top, emin) - (p - 1)      # exponent of the rounding grid
    shift = g - e_lsb                   # bits of big_m below the grid (>= 7 since p <= 49)
    if shift >= 62:                     # everything is below half a grid step
        q = np.int64(0)
        rem = np.int64(1)
        half = np.int64(2)
    else:
        q = big_m >> shift
        rem = big_m - (q << shift)
        half = np.int64(1) << (shift - 1)
    if rnd == RNE:
        if rem > half or (rem == half and (q & 1) == 1):
            q += 1                      # nearest-even; toward zero keeps the truncation
    elif rnd == SR:
        # D = the first rbits bits of the discarded part rem / 2^shift
        if shift >= 62:
            dd = np.int64(0)
        elif shift >= rbits:
            dd = rem >> (shift - rbits)
        else:
            dd = rem << (rbits - shift)
        if u < dd:
            q += 1
    r = math.ldexp(float(q), g)
    top = math.ldexp(float((np.int64(1) << p) - 1), emax - p + 1)
    if r > top:
        if overflow == 1 or (overflow == 0 and rnd != RZ):
            r = math.inf
        else:
            r = top
    if flush != 0 and r != 0.0 and r < math.ldexp(1.0, emin):
        r = 0.0
    return -r if neg else r


@njit(cache=True)
def _two_sum_round(x, y, prm, u):
    """Round x + y (both float64, exact values) with the output settings: TwoSum gives the exact
    sum as hi + lo with |lo| <= half a spacing of hi (Knuth)."""
    hi = x + y
    yv = hi - x
    lo = (x - (hi - yv)) + (y - yv)
    if hi == 0.0:
        return 0.0
    return round_out(hi, lo, prm.out_prec, prm.acc_emin, prm.acc_emax, prm.out_rnd, prm.overflow, prm.flush_out, u, prm.sr_bits)


@njit(cache=True)
def _zero_result(neg_zeros_only, prm):
    """An exact-zero result: -0 only under the IEEE rule when every term was a -0."""
    if prm.zero_ieee and neg_zeros_only:
        return -0.0
    return 0.0


# Output tile of the grid kernel: TILE_ROWS x TILE_COLS outputs share each loaded row of B (the
# B panel is read once per TILE_ROWS rows of A); long rows keep the inner loops long. Measured
# with benchmarks/bench_mma.py (M = N = 512, K = 4096, e4m3): 16 x 512 beat 8 x 64 ... 64 x 256.
TILE_ROWS = 16
TILE_COLS = 512


@njit(cache=True, inline="always")
def pow2_floor(x):
    """2^floor(log2|x|) for a normal float64 x, 0 for 0: the exponent field of x with sign and
    fraction cleared (Inf/NaN give Inf)."""
    return i64_as_f64(f64_as_i64(x) & EXP_MASK)


@njit(cache=True, inline="always")
def exponent_of(x):
    """floor(log2|x|) of a normal, nonzero float64: its biased exponent field minus 1023."""
    return ((f64_as_i64(x) >> 52) & 0x7FF) - 1023


@njit(cache=True, inline="always")
def pow2(e):
    """2^e as a float64 for -1022 <= e <= 1023: the biased exponent placed in the field."""
    return i64_as_f64(np.int64(e + 1023) << 52)


@njit(cache=True, inline="always")
def recip_pow2(x):
    """1 / x for a power of two x = 2^k in [2^-1022, 2^1022]: the biased exponent 1023 + k
    becomes 1023 - k = 2046 - (1023 + k), so bits(1/x) = (2046 << 52) - bits(x). A subtraction
    instead of a division: exact, and it vectorises."""
    return i64_as_f64(RECIP_MAGIC - f64_as_i64(x))


@njit(cache=True)
def _finish_row(acc, S, unit, sp, p, emin, emax, rnd, overflow, flush, bi, i, j0, kb, seed,
                rbits):
    """acc = round(S * unit) to p significant bits, vectorised over a row of outputs.

    S * unit is the exact block sum v (unit = 2^(E-f), a power of two). The rounding grid is
    G = max(2^floor(log2|v|), 2^emin) * 2^(1-p), so v / G is an exact scaling and trunc / rint
    of it is RZ / RNE onto the grid; stochastic rounding adds 1 to floor(|q|) when the output's
    random integer is below D = floor(frac(|q|) 2^rbits) (exact: a power-of-two scaling of an
    exact fraction). An exact-zero sum gives +0 here (the IEEE sign rule for a sum without terms
    is applied by the caller). A nonzero sp (NaN/Inf of the block) wins.
    """
    emin_pow = math.ldexp(1.0, emin)
    grid_shift = math.ldexp(1.0, 1 - p)
    top = math.ldexp(float((np.int64(1) << p) - 1), emax - p + 1)
    big = math.inf if (overflow == 1 or (overflow == 0 and rnd != RZ)) else top
    two_r = math.ldexp(1.0, rbits)
    for j in range(S.size):
        v = S[j] * unit[j]
        G = max(pow2_floor(v), emin_pow) * grid_shift
        q = v * recip_pow2(G)
        if rnd == RZ:
            q = np.trunc(q)
        elif rnd == RNE:
            q = np.rint(q)
        else:
            aq = abs(q)
            fl = np.floor(aq)
            dd = np.floor((aq - fl) * two_r)
            if sr_random(seed, bi, i, j0 + j, kb, rbits) < dd:
                fl += 1.0
            q = math.copysign(fl, q)
        r = q * G
        if abs(r) > top:
            r = math.copysign(big, v)
        if flush != 0 and abs(r) < emin_pow:
            r = math.copysign(0.0, v)
        r = r if S[j] != 0.0 else 0.0
        acc[j] = sp[j] if sp[j] != 0.0 else r


@njit(cache=True)
def grid_kernel(a, b, a_raw, b_raw, pa, pb, c, prm):
    """D = A*B + C through a chain of block FMAs with finite fraction bits, batched.

    a (B, M, K), b (B, K, N): finite input values (non-finite entries replaced by 0); a_raw, b_raw:
    the original values (read only when prm.special says there are NaN/Inf); pa, pb: int16 exponent
    of each nonzero input (floor(log2|x|), or the format's emin for subnormals), NO_TERM for 0;
    c (B, M, N): start accumulator. Returns float64 values of the accumulator format.
    """
    return _run_tiles(a, b, a_raw, b_raw, pa, pb, c, prm, math.inf)


@njit(cache=True)
def grid_kernel_f32(a, b, a_raw, b_raw, pa, pb, c, prm):
    """grid_kernel with a, b, pa, pb in float32 (twice the SIMD width).

    Valid when every product is exact and normal in float32 (e4m3, e5m2, fp16 inputs: |a*b| in
    [2^-48, 2^32]) and n + 1 terms of < 4 * 2^f grid units add exactly in 24 bits
    (f + 2 + log2(n + 1) <= 24); tcsim.params.fits_float32 decides. The product scale is capped at
    2^100: it only exceeds that when E comes from C alone and every product is zero.
    """
    return _run_tiles(a, b, a_raw, b_raw, pa, pb, c, prm, F32_SCALE_CAP)


@njit(cache=True, parallel=True)
def _run_tiles(a, b, a_raw, b_raw, pa, pb, c, prm, scale_cap):
    """Parallel over output tiles; each tile is computed whole by one call of _grid_tile, so the
    results do not depend on the number of threads."""
    NB, M, K = a.shape
    N = b.shape[2]
    n_ti = (M + TILE_ROWS - 1) // TILE_ROWS
    n_tj = (N + TILE_COLS - 1) // TILE_COLS
    d = np.empty((NB, M, N))
    for t in prange(NB * n_ti * n_tj):
        bi = t // (n_ti * n_tj)
        ti = (t // n_tj) % n_ti
        tj = t % n_tj
        _grid_tile(a, b, a_raw, b_raw, pa, pb, c, prm, d, bi, ti * TILE_ROWS, tj * TILE_COLS,
                   scale_cap)
    return d


@njit(cache=True)
def _grid_tile(a, b, a_raw, b_raw, pa, pb, c, prm, d, bi, i0, j0, scale_cap):
    """One TILE_ROWS x TILE_COLS output tile at (i0, j0) of batch entry bi, over the whole K
    chain (a plain function, not a parfor body, so that LLVM vectorises its loops). The product
    loops run in the dtype of a (float64 or float32); C, the scales and the rounding in float64."""
    NB, M, K = a.shape
    N = b.shape[2]
    n = prm.block
    f = prm.frac
    term = prm.term
    normalized = prm.normalized
    c_after = prm.c_after
    special = prm.special
    slow_finish = c_after or special or prm.zero_ieee
    acc_emin = prm.acc_emin
    clamp_e = max(prm.min_exp, EXP_FLOOR)
    if True:
        R = min(TILE_ROWS, M - i0)
        C = min(TILE_COLS, N - j0)
        acc = c[bi, i0:i0 + R, j0:j0 + C].copy()
        accf = np.empty((R, C))
        E = np.empty((R, C), dtype=np.int16)      # the block's max exponent (NO_TERM: none)
        S = np.empty((R, C), dtype=a.dtype)
        scale = np.empty((R, C))                    # 2^f / 2^E for the C term
        pscale = np.empty((R, C), dtype=a.dtype)    # the same, capped, for the products
        unit = np.empty((R, C))
        sp = np.zeros((R, C))
        for k0 in range(0, K, n):
            k1 = min(k0 + n, K)
            # split the accumulator into its finite part and its NaN/Inf part (an Inf can also
            # come from a block result that overflowed)
            for r in range(R):
                for j in range(C):
                    x = acc[r, j]
                    fin = np.isfinite(x)
                    accf[r, j] = x if fin else 0.0
                    sp[r, j] = 0.0 if fin else x
            if special:
                for r in range(R):
                    for k in range(k0, k1):
                        ar = a_raw[bi, i0 + r, k]
                        braw = b_raw[bi, k, j0:j0 + C]
                        spr = sp[r]
                        for j in range(C):
                            q = ar * braw[j]        # inf*0 -> NaN, inf*x -> signed inf
                            if not np.isfinite(q):
                                spr[j] += q         # +inf + -inf -> NaN; NaN absorbs
            # E: max over the terms' exponents, in int16 (NO_TERM = no term yet)
            for r in range(R):
                Er = E[r]
                if c_after:
                    Er[:] = NO_TERM
                else:
                    ar_ = accf[r]
                    for j in range(C):
                        x = ar_[j]
                        Er[j] = max(exponent_of(x), acc_emin) if x != 0.0 else NO_TERM
            for k in range(k0, k1):
                if normalized:
                    bk = b[bi, k, j0:j0 + C]
                    for r in range(R):
                        aik = a[bi, i0 + r, k]
                        Er = E[r]
                        for j in range(C):
                            v = np.float64(aik) * bk[j]
                            e = exponent_of(v) if v != 0.0 else NO_TERM
                            Er[j] = e if e > Er[j] else Er[j]
                else:
                    pbk = pb[bi, k, j0:j0 + C]
                    for r in range(R):
                        pak = pa[bi, i0 + r, k]
                        Er = E[r]
                        for j in range(C):
                            e = np.int16(pak + pbk[j])          # ea + eb, int16 lanes
                            Er[j] = e if e > Er[j] else Er[j]   # a select: vectorises
            # grid units per unit value: scale = 2^f / 2^E and unit = 2^E / 2^f, exact powers of two
            for r in range(R):
                Er = E[r]
                scr = scale[r]
                pscr = pscale[r]
                ur = unit[r]
                for j in range(C):
                    e = max(np.int64(Er[j]), clamp_e)           # E, clamped
                    sc = pow2(f - e)                            # 2^(f-E)
                    scr[j] = sc
                    pscr[j] = min(sc, scale_cap)
                    ur[j] = pow2(e - f)                         # 2^(E-f)
                Sr = S[r]
                ar_ = accf[r]
                if c_after:
                    Sr[:] = 0.0
                elif term == RZ:
                    for j in range(C):
                        Sr[j] = np.trunc(ar_[j] * scr[j])
                elif term == RD:
                    for j in range(C):
                        Sr[j] = np.floor(ar_[j] * scr[j])
                else:
                    for j in range(C):
                        Sr[j] = np.rint(ar_[j] * scr[j])
            for k in range(k0, k1):
                bk = b[bi, k, j0:j0 + C]
                for r in range(R):
                    aik = a[bi, i0 + r, k]
                    if aik == 0.0:
                        continue
                    Sr = S[r]
                    scr = pscale[r]
                    if term == RZ:
                        for j in range(C):
                            Sr[j] += np.trunc(aik * bk[j] * scr[j])
                    elif term == RD:
                        for j in range(C):
                            Sr[j] += np.floor(aik * bk[j] * scr[j])
                    else:
                        for j in range(C):
                            Sr[j] += np.rint(aik * bk[j] * scr[j])
            # normalise and round once
            for r in range(R):
                if not slow_finish:
                    _finish_row(acc[r], S[r], unit[r], sp[r], prm.out_prec, prm.acc_emin, prm.acc_emax, prm.out_rnd,
                                prm.overflow, prm.flush_out, bi, i0 + r, j0, k0 // n, prm.sr_seed, prm.sr_bits)
                    continue
                for j in range(C):
                    if sp[r, j] != 0.0:                # NaN != 0 holds too
                        acc[r, j] = sp[r, j]
                        continue
                    s = S[r, j] * unit[r, j]           # exact: a power-of-two scaling
                    u = sr_random(prm.sr_seed, bi, i0 + r, j0 + j, k0 // n, prm.sr_bits) \
                        if prm.out_rnd == SR else 0
                    if c_after:
                        if s != 0.0:
                            s = round_out(s, 0.0, prm.psum_prec, -UNBOUNDED, UNBOUNDED, prm.psum_rnd, 0, 0,
                                          0, 0)
                        res = _two_sum_round(s, accf[r, j], prm, u)
                    else:
                        res = 0.0
                        if s != 0.0:
                            res = round_out(s, 0.0, prm.out_prec, prm.acc_emin, prm.acc_emax, prm.out_rnd, prm.overflow,
                                            prm.flush_out, u, prm.sr_bits)
                    if res == 0.0 and s == 0.0:
                        # an exact zero: -0 only when every term (C and each product) is a -0
                        # (scanned here, not read off E: zero operands may take part in E)
                        x = accf[r, j]
                        nonzero = x != 0.0
                        neg = np.signbit(x)
                        for k in range(k0, k1):
                            q = a[bi, i0 + r, k] * b[bi, k, j0 + j]
                            nonzero = nonzero or q != 0.0
                            neg = neg and np.signbit(q)
                        if not nonzero:
                            res = _zero_result(neg, prm)
                    acc[r, j] = res
        d[bi, i0:i0 + R, j0:j0 + C] = acc


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
    n = prm.block
    c_after = prm.c_after
    special = prm.special
    d = np.empty((B, M, N))
    for t in prange(B * M):
        bi = t // M
        i = t - bi * M
        parts = np.empty(128)
        for j in range(N):
            acc = c[bi, i, j]
            for k0 in range(0, K, n):
                k1 = min(k0 + n, K)
                sp = acc if not np.isfinite(acc) else 0.0   # Inf may come from an overflow
                if special:
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
                u = sr_random(prm.sr_seed, bi, i, j, k0 // n, prm.sr_bits) if prm.out_rnd == SR else 0
                if c_after:
                    if hi != 0.0:
                        hi = round_out(hi, lo, prm.psum_prec, -UNBOUNDED, UNBOUNDED, prm.psum_rnd, 0, 0, 0, 0)
                    nonzero_terms = nonzero_terms or acc != 0.0
                    r = _two_sum_round(hi, acc, prm, u)
                elif hi != 0.0:
                    r = round_out(hi, lo, prm.out_prec, prm.acc_emin, prm.acc_emax, prm.out_rnd, prm.overflow, prm.flush_out, u,
                                  prm.sr_bits)
                else:
                    r = 0.0
                if r == 0.0 and hi == 0.0 and not nonzero_terms:
                    r = _zero_result(neg, prm)
                acc = r
            d[bi, i, j] = acc
    return d
