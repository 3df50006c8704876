"""Numba kernels of the block FMA (private; use :func:`tcsim.mma`).

Two kernels, all settings in one parameter structure (tcsim.params.KernelParams, read by name):

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

Both round with ``roundpack.round_pack``, the one round-and-pack routine of every kernel.

The grid kernel compiles in two variants, chosen by the type of its last argument ``rare``:
None for the common datapaths (C inside the alignment, unnormalised products, truncated terms,
finite inputs, RZ / RNE output, zero sign not IEEE), where numba prunes every ``if rare is not None`` branch
before typing, so the rare stages are never compiled; True for the rest
(tcsim.params.grid_variant decides).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..rounding import RD, RZ, SR
from .tiles import run_strided, tile_count, tile_origin
from .roundpack import (FREE_EMAX, FREE_EMIN, exponent_of, pow2, pow2_floor,  # noqa: F401
                        recip_pow2, round_pack, sr_random)

EXP_FLOOR = -960    # E never goes below 2^-960 in the scale, keeping 2^f / 2^E finite
F32_SCALE_CAP = 2.0 ** 100  # float32 product scale cap (see grid_kernel_f32)
# Exponents travel as int16: a zero (or non-finite) input has NO_TERM, so a product with a zero
# factor sums to <= NO_TERM + 254 and stays out of E (two of them, -32000, still fit in int16).
# With Datapath.zero_operand_exponent set, zeros carry that exponent instead and take part in E.
NO_TERM = -16000


@njit(cache=True, inline="always")
def round_result(v, lo, prm, u):
    """The exact nonzero v + lo rounded with the output settings (round_pack)."""
    return round_pack(v, lo, prm.out_prec, prm.acc_emin, prm.acc_emax, prm.out_rnd,
                      prm.overflow, prm.flush_out, u, prm.sr_bits)


@njit(cache=True, inline="always")
def round_product_sum(v, lo, prm):
    """The exact nonzero product sum v + lo rounded to product_sum_precision bits, with no
    exponent limits (c_placement "after")."""
    return round_pack(v, lo, prm.psum_prec, FREE_EMIN, FREE_EMAX, prm.psum_rnd, 0, False, 0, 1)


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


# Output tile of the grid kernel: TILE_ROWS x TILE_COLS outputs share each loaded row of B (the
# B panel is read once per TILE_ROWS rows of A); long rows keep the inner loops long. Measured
# with benchmarks/bench_mma.py (M = N = 512, K = 4096, e4m3): 16 x 512 beat 8 x 64 ... 64 x 256.
TILE_ROWS = 16
TILE_COLS = 512


@njit(cache=True)
def _finish_row(acc, S, unit, sp, prm, bi, i, j0, kb, rare):
    """acc = round(S * unit) with the output settings, vectorised over a row of outputs.

    S * unit is the exact block sum v (unit = 2^(E-f), a power of two); round_pack rounds it
    (inlined: the loop has no carried state, so it vectorises for RZ and RNE). Stochastic
    rounding draws the output's random integer (the rare variant only). An exact-zero sum gives
    +0 here (the IEEE sign rule for a sum without terms is applied by the caller). A nonzero sp
    (NaN/Inf of the block) wins.
    """
    stochastic = prm.out_rnd == SR
    for j in range(S.size):
        v = S[j] * unit[j]
        u = 0
        if rare is not None:
            if stochastic:
                u = sr_random(prm.sr_seed, bi, i, j0 + j, kb, prm.sr_bits)
        r = round_result(v, 0.0, prm, u)
        r = r if S[j] != 0.0 else 0.0
        acc[j] = sp[j] if sp[j] != 0.0 else r


@njit(cache=True)
def _special_products(a_raw, b_raw, bi, i0, j0, k0, k1, sp):
    """sp += the NaN/Inf products of the block (inf*0 -> NaN, inf*x -> signed inf; +inf + -inf
    -> NaN; NaN absorbs)."""
    R, C = sp.shape
    for r in range(R):
        for k in range(k0, k1):
            ar = a_raw[bi, i0 + r, k]
            braw = b_raw[bi, k, j0:j0 + C]
            spr = sp[r]
            for j in range(C):
                q = ar * braw[j]
                if not np.isfinite(q):
                    spr[j] += q


@njit(cache=True)
def _product_exponents(pa, pb, bi, i0, j0, k0, k1, E):
    """E = max(E, ea + eb) over the block's products, on int16 lanes (unnormalised products)."""
    R, C = E.shape
    for k in range(k0, k1):
        pbk = pb[bi, k, j0:j0 + C]
        for r in range(R):
            pak = pa[bi, i0 + r, k]
            Er = E[r]
            for j in range(C):
                e = np.int16(pak + pbk[j])          # ea + eb, int16 lanes
                Er[j] = e if e > Er[j] else Er[j]   # a select: vectorises


@njit(cache=True)
def _normalized_exponents(a, b, bi, i0, j0, k0, k1, E):
    """E = max(E, floor(log2|a*b|)) over the block's nonzero products (normalised products)."""
    R, C = E.shape
    for k in range(k0, k1):
        bk = b[bi, k, j0:j0 + C]
        for r in range(R):
            aik = a[bi, i0 + r, k]
            Er = E[r]
            for j in range(C):
                v = np.float64(aik) * bk[j]
                e = exponent_of(v) if v != 0.0 else NO_TERM
                Er[j] = e if e > Er[j] else Er[j]


@njit(cache=True)
def _finish_rare(a, b, acc, accf, S, unit, sp, prm, bi, i0, j0, k0, k1):
    """The rounding of the rare variant: C after the product sum (product sum rounded, then
    + C with one rounding), stochastic output rounding, and the IEEE sign of exact zeros."""
    R, C = acc.shape
    n = prm.block
    kb = k0 // n
    if not (prm.c_after or prm.special or prm.zero_ieee):
        for r in range(R):
            _finish_row(acc[r], S[r], unit[r], sp[r], prm, bi, i0 + r, j0, kb, True)
        return
    for r in range(R):
        for j in range(C):
            if sp[r, j] != 0.0:                # NaN != 0 holds too
                acc[r, j] = sp[r, j]
                continue
            s = S[r, j] * unit[r, j]           # exact: a power-of-two scaling
            u = sr_random(prm.sr_seed, bi, i0 + r, j0 + j, kb, prm.sr_bits) \
                if prm.out_rnd == SR else 0
            if prm.c_after:
                if s != 0.0:
                    s = round_product_sum(s, 0.0, prm)
                res = two_sum_round(s, accf[r, j], prm, u)
            else:
                res = 0.0
                if s != 0.0:
                    res = round_result(s, 0.0, prm, u)
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


def grid_kernel(a, b, a_raw, b_raw, pa, pb, c, prm, rare):
    """D = A*B + C through a chain of block FMAs with finite fraction bits, batched.

    a (B, M, K), b (B, K, N): finite input values (non-finite entries replaced by 0); a_raw, b_raw:
    the original values (read only when prm.special says there are NaN/Inf); pa, pb: int16
    exponent of each nonzero input (floor(log2|x|), or the format's emin for subnormals), NO_TERM
    for 0; c (B, M, N): start accumulator; rare: None (common variant) or True (see module doc).
    Returns float64 values of the accumulator format.
    """
    return _run_tiles(a, b, a_raw, b_raw, pa, pb, c, prm, math.inf, rare)


def grid_kernel_f32(a, b, a_raw, b_raw, pa, pb, c, prm, rare):
    """grid_kernel with a, b, pa, pb in float32 (twice the SIMD width).

    Valid when every product is exact and normal in float32 (e4m3, e5m2, fp16 inputs: |a*b| in
    [2^-48, 2^32]) and n + 1 terms of < 4 * 2^f grid units add exactly in 24 bits
    (f + 2 + log2(n + 1) <= 24); tcsim.params.fits_float32 decides. The product scale is capped at
    2^100: it only exceeds that when E comes from C alone and every product is zero.
    """
    return _run_tiles(a, b, a_raw, b_raw, pa, pb, c, prm, F32_SCALE_CAP, rare)


def _run_tiles(a, b, a_raw, b_raw, pa, pb, c, prm, scale_cap, rare):
    """The output tiles shared out over threads (tcsim._kernels.tiles); each tile is computed
    whole by one call of _grid_tile, so the results do not depend on the number of threads."""
    NB, M, K = a.shape
    N = b.shape[2]
    d = np.empty((NB, M, N))
    n_tiles = tile_count(NB, M, N, TILE_ROWS, TILE_COLS)
    run_strided(_grid_tiles, n_tiles, a, b, a_raw, b_raw, pa, pb, c, prm, scale_cap, rare, d)
    return d


@njit(cache=True, nogil=True)
def _grid_tiles(a, b, a_raw, b_raw, pa, pb, c, prm, scale_cap, rare, d, first, step):
    """Tiles first, first + step, first + 2 step, ... of d (one thread's share; no GIL)."""
    NB, M, K = a.shape
    N = b.shape[2]
    for t in range(first, tile_count(NB, M, N, TILE_ROWS, TILE_COLS), step):
        bi, i0, j0 = tile_origin(t, M, N, TILE_ROWS, TILE_COLS)
        _grid_tile(a, b, a_raw, b_raw, pa, pb, c, prm, d, bi, i0, j0, scale_cap, rare)


@njit(cache=True)
def _grid_tile(a, b, a_raw, b_raw, pa, pb, c, prm, d, bi, i0, j0, scale_cap, rare):
    """One TILE_ROWS x TILE_COLS output tile at (i0, j0) of batch entry bi, over the whole K
    chain (a plain function, not a parfor body, so that LLVM vectorises its loops). The product
    loops run in the dtype of a (float64 or float32); C, the scales and the rounding in float64.
    rare: None (the common variant: the ``rare is not None`` stages are pruned) or True."""
    NB, M, K = a.shape
    N = b.shape[2]
    n = prm.block
    f = prm.frac
    term = prm.term
    acc_emin = prm.acc_emin
    clamp_e = max(prm.min_exp, EXP_FLOOR)
    R = min(TILE_ROWS, M - i0)
    C = min(TILE_COLS, N - j0)
    acc = np.empty((R, C))
    for r in range(R):      # element by element: a 2-D slice copy costs a second of compile
        for j in range(C):
            acc[r, j] = c[bi, i0 + r, j0 + j]
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
        if rare is not None:
            if prm.special:
                _special_products(a_raw, b_raw, bi, i0, j0, k0, k1, sp)
        # E: max over the terms' exponents, in int16 (NO_TERM = no term yet); C first
        for r in range(R):
            Er = E[r]
            ar_ = accf[r]
            for j in range(C):
                x = ar_[j]
                Er[j] = max(exponent_of(x), acc_emin) if x != 0.0 else NO_TERM
        if rare is None:
            _product_exponents(pa, pb, bi, i0, j0, k0, k1, E)
        else:
            if prm.c_after:
                E[:] = NO_TERM                  # C after the product sum: not in E
            if prm.normalized:
                _normalized_exponents(a, b, bi, i0, j0, k0, k1, E)
            else:
                _product_exponents(pa, pb, bi, i0, j0, k0, k1, E)
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
            if rare is None or term == RZ:      # the common variant truncates
                for j in range(C):
                    Sr[j] = np.trunc(ar_[j] * scr[j])
            elif term == RD:
                for j in range(C):
                    Sr[j] = np.floor(ar_[j] * scr[j])
            else:
                for j in range(C):
                    Sr[j] = np.rint(ar_[j] * scr[j])
        if rare is not None:
            if prm.c_after:
                S[:] = 0.0                      # C joins after the product sum
        for k in range(k0, k1):
            bk = b[bi, k, j0:j0 + C]
            for r in range(R):
                aik = a[bi, i0 + r, k]
                if aik == 0.0:
                    continue
                Sr = S[r]
                scr = pscale[r]
                if rare is None or term == RZ:
                    for j in range(C):
                        Sr[j] += np.trunc(aik * bk[j] * scr[j])
                elif term == RD:
                    for j in range(C):
                        Sr[j] += np.floor(aik * bk[j] * scr[j])
                else:
                    for j in range(C):
                        Sr[j] += np.rint(aik * bk[j] * scr[j])
        # normalise and round once
        if rare is None:
            for r in range(R):
                _finish_row(acc[r], S[r], unit[r], sp[r], prm, bi, i0 + r, j0, k0 // n, None)
        else:
            _finish_rare(a, b, acc, accf, S, unit, sp, prm, bi, i0, j0, k0, k1)
    dt = d[bi]
    for r in range(R):     # element by element: a 2-D slice assignment costs seconds of compile
        for j in range(C):
            dt[i0 + r, j0 + j] = acc[r, j]


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
    special = prm.special
    parts = np.empty(128)
    for t in range(first, B * M, step):
        bi = t // M
        i = t - bi * M
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
