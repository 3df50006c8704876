"""The fast common-path kernel of the block FMA (private; use :func:`tcsim.mma`).

It serves the plain fused block FMA whose products and block sums are exact in float32
(the FP8 paths of H100/H200 wgmma and Ada/L40S mma.sync, fp32 and fp16 output; tcsim.route
decides which datapaths it serves): C inside the alignment, unnormalised product exponents,
term rounding truncate or nearest-even, output rounding toward zero or nearest-even, no NaN/Inf
inputs, zero results +0. Everything else runs on the kernels in blockfma.py / staged.py, which
compute the same bits more generally.

One block (n products and the incoming C, all held exactly in float32) per output:

1. E = max(exp(C), max_k(ea_k + eb_k)), clamped below at the limit; exp(C) comes from C's own
   float32 bits, the product exponents are int8 sums (see ``ZERO_EXP8``).
2. Every term goes onto the grid 2^(E-f) in integer grid units: a product as
   round(a*b * 2^(f-E)) (a*b is exact in float32 and the scaling by a power of two is exact, so
   trunc / rint of it is the hardware's truncation / nearest-even), C by shifting its integer
   significand right (``c_units``).
3. The units add exactly in float32 (each term is < 4 * 2^f units, so n + 1 of them fit the
   24-bit significand while f + 2 + log2(n + 1) <= 24), and v = S * 2^(E-f) is exact.
4. v is rounded to p bits on the grid 2^(max(e_v, emin) - (p - 1)) from its float32 bits
   (``round_bits``; for fp32 output toward zero a mask of its low bits), then the overflow
   and flush rules.

The per-output state of a tile is 17 bytes (float32 C, scale, unit and running sum, int8 product
exponent) instead of the float64 arrays of the staged tile, and the whole block runs in float32 /
int32 lanes, so it vectorises twice as wide. All settings are scalar arguments, so the kernel
plugs into any parameter structure; one compiled signature (float32 values, int8 exponents,
int64 settings). Each output tile is computed whole by one thread (parallel over tiles only), so
the bits never depend on the number of threads.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ..kernel_constants import NO_TERM
from ..overflow import OVERFLOW_IEEE, OVERFLOW_INF
from ..rounding import RNE, RZ
from .tiles import run_strided, tile_count, tile_origin

# Output tile: TILE_ROWS x TILE_COLS outputs share each loaded row of B (as in the staged tile).
TILE_ROWS = 16
TILE_COLS = 512

# Exponents travel as int8. A real input exponent lies in [-15, 15] (every format this kernel
# takes, subnormals at their format's emin), so a real product exponent ea + eb is >= -30. A zero
# operand carries ZERO_EXP8 = -64: a product with a zero factor then sums to <= -64 + 15 = -49
# (two zeros: -128, still an int8), below NO_PRODUCT = -40, and takes no part in E.
ZERO_EXP8 = -64
NO_PRODUCT = -40
NO_EXP = -128          # "no term": below every real exponent

TERM_TRUNCATE, TERM_RNE = RZ, RNE     # term rounding codes (the table in tcsim.rounding)
ROUND_RZ, ROUND_RNE = RZ, RNE          # output rounding codes (the same table)

SIGN32 = np.int32(-0x80000000)     # the float32 sign bit as an int32
MANT32 = 0x7FFFFF                  # the 23 stored fraction bits
HIDDEN32 = 0x800000                # the implicit leading bit of a normal float32


@intrinsic
def f32_as_i32(typingctx, x):
    """Reinterpret the bits of a float32 as an int32 (one LLVM bitcast)."""
    if not isinstance(x, types.Float) or x.bitwidth != 32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def i32_as_f32(typingctx, x):
    """Reinterpret the bits of an int32 as a float32 (one LLVM bitcast)."""
    if not isinstance(x, types.Integer) or x.bitwidth != 32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


# The lane helpers below work in int32 with an explicit np.int32 at every step: numba widens
# int32 arithmetic to int64, and the casts let LLVM narrow it back to 16 int32 lanes per vector.
I32 = np.int32


def _i32_shift(op):
    """An intrinsic (x, k) -> x op k on int32 lanes (numba would widen the shift to int64, which
    LLVM cannot narrow back for a variable k); callers keep 0 <= k <= 31."""
    def shift(typingctx, x, k):
        if not isinstance(x, types.Integer) or not isinstance(k, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            x32 = context.cast(builder, args[0], signature.args[0], types.int32)
            k32 = context.cast(builder, args[1], signature.args[1], types.int32)
            return getattr(builder, op)(x32, k32)

        return types.int32(x, k), codegen
    return intrinsic(shift)


shl32 = _i32_shift("shl")       # x * 2^k (bits shifted out of the top are lost)
sra32 = _i32_shift("ashr")      # floor(x / 2^k)

if numba.config.DISABLE_JIT:    # intrinsics cannot run as Python: the same bits with numpy
    def f32_as_i32(x):
        return np.float32(x).view(np.int32)

    def i32_as_f32(x):
        return np.int32(x).view(np.float32)

    def shl32(x, k):
        return np.array(np.int64(x) << np.int64(k)).astype(np.int32)[()]   # wraps like i32

    def sra32(x, k):
        return np.int32(np.int64(x) >> np.int64(k))


@njit(cache=True, inline="always")
def pow2_f32(e):
    """2^e as a float32 for -149 <= e <= 127: the biased exponent e + 127 in the exponent field
    for a normal power of two, else the single fraction bit 2^(e + 149) of a subnormal (whose
    unit is 2^-149)."""
    normal = i32_as_f32(shl32(I32(e + 127), 23))
    sub = i32_as_f32(shl32(1, I32(min(max(e + 149, 0), 31))))
    return normal if e >= -126 else sub


@njit(cache=True, inline="always")
def significand(xb):
    """(sig, eb) of the float32 with bits xb: eb the biased exponent field, sig the 23 fraction
    bits plus the hidden 2^23 when eb > 0, so that |x| = sig * 2^(max(eb, 1) - 150)."""
    eb = I32(sra32(xb, 23) & 0xFF)
    frac = I32(xb & MANT32)
    sig = I32(frac | HIDDEN32) if eb != 0 else frac
    return sig, eb


@njit(cache=True, inline="always")
def shift_round(sig, k, rne):
    """round(sig / 2^k) for an integer 0 <= sig < 2^24 and 0 <= k <= 25: truncation (the bits
    below 2^k dropped), or nearest-even when rne. With rem = sig - q 2^k the discarded part is
    rem / 2^k; comparing 2 rem with 2^k decides above / at / below a half, and is exact for k = 0
    (nothing discarded). Any k >= 25 gives 0 in both modes (sig < 2^24 is below half of 2^k), so
    callers cap k at 25."""
    q = sra32(sig, k)
    if rne:
        rem2 = shl32(I32(sig - shl32(q, k)), 1)
        one = shl32(1, k)
        up = rem2 > one or (rem2 == one and I32(q & 1) == 1)
        q = I32(q + 1) if up else q
    return q


@njit(cache=True, inline="always")
def c_units(xb, e_grid, rne):
    """C (float32 bits xb) on the grid 2^e_grid, in signed grid units: sig / 2^k rounded, with
    k = e_grid - (max(eb, 1) - 150) the bits of sig below the grid (see significand). k >= 2
    here because E >= exp(C) and f <= 21."""
    sig, eb = significand(xb)
    k = I32(min(max(I32(e_grid - I32(max(eb, 1) - 150)), 0), 25))
    q = np.float32(shift_round(sig, k, rne))
    return -q if xb < 0 else q


@njit(cache=True, inline="always")
def round_bits(v, p, emin, rne, top, big, flush_below):
    """v (an exact float32 block sum) rounded to p significant bits on the grid
    2^(max(e_v, emin) - (p - 1)), then the overflow and flush rules; the sign of v is kept.
    The fast-path specialisation of the kernels' one rounding routine
    (tcsim._kernels.roundpack.round_pack) to RZ / RNE on float32 bits, no residual: the same
    rounding, held bit-identical to the oracle by tests/test_fused_tile.py.

    The grid exponent is eg = max(eb - 127, emin) - (p - 1) (a subnormal v, eb = 0, has
    e_v < -126 <= emin), so k = eg - (max(eb, 1) - 150) >= 24 - p >= 0 bits of sig fall below
    it. q = round(sig / 2^k) <= 2^24 is exact as a float32 and q * 2^eg is an exact float32
    product unless it overflows (to Inf, then replaced by ``big`` like every result beyond
    ``top``). So for fp32 output (emin = -126) RZ clears the low 24 - p fraction bits.
    """
    vb = f32_as_i32(v)
    sig, eb = significand(vb)
    eg = I32(I32(max(I32(eb - 127), emin)) - I32(p - 1))
    k = I32(min(max(I32(eg - I32(max(eb, 1) - 150)), 0), 25))
    r = np.float32(shift_round(sig, k, rne)) * pow2_f32(eg)
    r = big if r > top else r
    r = np.float32(0.0) if r < flush_below else r
    return -r if vb < 0 else r


# Products (and exponents) of K_STEP consecutive k go into one pass over a row of S: the
# partial sums of exact integer terms are exact in any grouping, so S + (t0 + t1 + t2 + t3)
# equals the term-by-term sum, with a quarter of the loads and stores of S.
K_STEP = 4


@njit(cache=True, inline="always")
def _exps4(Er, a0, a1, a2, a3, b0, b1, b2, b3):
    """Er = max(Er, a0 + b0, ..., a3 + b3), int8 lanes (ea + eb cannot overflow, ZERO_EXP8)."""
    for j in range(Er.size):
        e = max(max(np.int8(a0 + b0[j]), np.int8(a1 + b1[j])),
                max(np.int8(a2 + b2[j]), np.int8(a3 + b3[j])))
        Er[j] = e if e > Er[j] else Er[j]


@njit(cache=True, inline="always")
def _exps1(Er, a0, b0):
    """Er = max(Er, a0 + b0)."""
    for j in range(Er.size):
        e = np.int8(a0 + b0[j])
        Er[j] = e if e > Er[j] else Er[j]


@njit(cache=True, inline="always")
def _products4(Sr, sr, a0, a1, a2, a3, b0, b1, b2, b3, rne):
    """Sr += the terms round(a * b * s) of four products (see K_STEP): a*b is exact in float32
    and s = 2^(f-E) an exact scaling, so trunc / rint of it is the term in grid units."""
    if rne:
        for j in range(Sr.size):
            s = sr[j]
            Sr[j] += ((np.rint(a0 * b0[j] * s) + np.rint(a1 * b1[j] * s))
                      + (np.rint(a2 * b2[j] * s) + np.rint(a3 * b3[j] * s)))
    else:
        for j in range(Sr.size):
            s = sr[j]
            Sr[j] += ((np.trunc(a0 * b0[j] * s) + np.trunc(a1 * b1[j] * s))
                      + (np.trunc(a2 * b2[j] * s) + np.trunc(a3 * b3[j] * s)))


@njit(cache=True, inline="always")
def _products1(Sr, sr, a0, b0, rne):
    """Sr += the terms of one product (a zero a adds nothing)."""
    if a0 == 0.0:
        return
    if rne:
        for j in range(Sr.size):
            Sr[j] += np.rint(a0 * b0[j] * sr[j])
    else:
        for j in range(Sr.size):
            Sr[j] += np.trunc(a0 * b0[j] * sr[j])


@njit(cache=True, inline="always")
def _setup_row(ar, Er, Sr, scr, ur, f, emin, pfloor, e_floor, rne):
    """Per output of a row: E of the block, its scales and C's term (Sr = C in grid units)."""
    for j in range(ar.size):
        xb = f32_as_i32(ar[j])
        # exp(C) = max(floor(log2|C|), emin) = max(eb - 127, emin) (emin >= -126 also covers
        # a subnormal C); a zero C is no term
        e_c = I32(max(I32(I32(sra32(xb, 23) & 0xFF) - 127), emin))
        e_c = e_c if I32(xb & 0x7FFFFFFF) != 0 else I32(NO_EXP)
        e_p = I32(Er[j])
        e_p = e_p if e_p >= pfloor else I32(NO_EXP)
        E = I32(max(max(e_c, e_p), e_floor))
        # f - E lies outside [-126, 127] only when every product is 0 (a nonzero product makes
        # -30 <= E <= 127): the clamped scale still sends those to 0; E - f < -149 only
        # without any term (S = 0)
        scr[j] = i32_as_f32(shl32(I32(127 + min(max(I32(f - E), -126), 127)), 23))
        ur[j] = pow2_f32(I32(min(max(I32(E - f), -149), 127)))
        Sr[j] = c_units(xb, I32(E - f), rne)


@njit(cache=True)
def _fused_tile(a, b, pa, pb, c, d, bi, i0, j0, n, f, term, p, rnd, emin, emax, overflow, flush,
                min_exp, product_floor):
    """One TILE_ROWS x TILE_COLS output tile at (i0, j0) of batch entry bi over the whole K
    chain (a plain function, not a parfor body, so that LLVM vectorises its loops)."""
    NB, M, K = a.shape
    N = b.shape[2]
    R = min(TILE_ROWS, M - i0)
    C = min(TILE_COLS, N - j0)
    term_rne = term == TERM_RNE
    out_rne = rnd == ROUND_RNE
    # the largest p-bit value of the output format, and what a result beyond it becomes
    top = np.float32(math.ldexp(float((np.int64(1) << p) - 1), emax - p + 1))
    big = top
    if overflow == OVERFLOW_INF or (overflow == OVERFLOW_IEEE and out_rne):
        big = np.float32(np.inf)
    flush_below = np.float32(math.ldexp(1.0, emin)) if flush != 0 else np.float32(0.0)
    # int32 settings for the lanes: E's lower clamp (at least NO_EXP), f, p, emin
    e_floor = I32(max(min_exp, NO_EXP))
    f32 = I32(f)
    p32 = I32(p)
    emin32 = I32(emin)
    pfloor = I32(product_floor)
    # fp32 output (emin = -126) rounded toward zero: the grid of a p-bit result is 2^(24 - p)
    # float32 units of v, for normal and subnormal v alike (see round_bits), so RZ clears the
    # low 24 - p fraction bits; a finite v so rounded is at most the largest p-bit value
    rz_mask = emin == -126 and not out_rne
    rz_bits = I32(-(1 << (24 - p)))
    acc = np.empty((R, C), dtype=np.float32)        # the running C (float32)
    for r in range(R):      # row by row: a 2-D slice copy costs seconds of numba compile
        cr = c[bi, i0 + r]
        for j in range(C):
            acc[r, j] = cr[j0 + j]
    Ep = np.empty((R, C), dtype=np.int8)            # max product exponent of the block
    S = np.zeros((R, C), dtype=np.float32)          # block sum in grid units
    scale = np.empty((R, C), dtype=np.float32)      # 2^(f-E): value -> grid units
    unit = np.zeros((R, C), dtype=np.float32)       # 2^(E-f): grid units -> value
    for k0 in range(0, K + n, n):
        k1 = min(k0 + n, K)
        last = k0 >= K          # one pass after the last block: its rounding only
        if not last:
            # max over the products' exponents, int8 lanes (ea + eb cannot overflow, ZERO_EXP8)
            Ep.fill(NO_EXP)
            kk = k0
            while kk < k1:          # K_STEP rows of pb per pass over Ep's rows, then the tail
                if kk + K_STEP <= k1:
                    p0, p1 = pb[bi, kk, j0:j0 + C], pb[bi, kk + 1, j0:j0 + C]
                    p2, p3 = pb[bi, kk + 2, j0:j0 + C], pb[bi, kk + 3, j0:j0 + C]
                    for r in range(R):
                        ar = pa[bi, i0 + r]
                        _exps4(Ep[r], ar[kk], ar[kk + 1], ar[kk + 2], ar[kk + 3], p0, p1, p2, p3)
                    kk += K_STEP
                else:
                    p0 = pb[bi, kk, j0:j0 + C]
                    for r in range(R):
                        _exps1(Ep[r], pa[bi, i0 + r, kk], p0)
                    kk += 1
        # one pass per row: round the previous block (v = S * 2^(E-f), exact; an exact zero
        # gives +0; a NaN/Inf C from an earlier overflow stays), then E, the scales and C's term
        # of this block from C's float32 bits
        for r in range(R):
            Er = Ep[r]
            ar = acc[r]
            Sr = S[r]
            scr = scale[r]
            ur = unit[r]
            if k0 > 0 and rz_mask:
                for j in range(C):
                    x = ar[j]
                    v = Sr[j] * ur[j]
                    res = i32_as_f32(I32(f32_as_i32(v) & rz_bits))
                    zero = i32_as_f32(I32(f32_as_i32(v) & SIGN32))       # 0 with v's sign
                    res = res if abs(res) >= flush_below else zero
                    # v = S * 2^(E-f) is exact unless it is >= 2^128 (a C near the top whose
                    # term rounded up): then the float32 product is Inf and the result overflows
                    res = res if v - v == 0.0 else (big if v > 0.0 else -big)
                    res = res if v != 0.0 else np.float32(0.0)
                    ar[j] = res if np.isfinite(x) else x
            elif k0 > 0:
                for j in range(C):
                    x = ar[j]
                    v = Sr[j] * ur[j]
                    res = round_bits(v, p32, emin32, out_rne, top, big, flush_below)
                    res = res if v != 0.0 else np.float32(0.0)
                    ar[j] = res if np.isfinite(x) else x
            if last:
                continue
            if term_rne:    # (a literal flag: each call compiles to its own branch-free loop)
                _setup_row(ar, Er, Sr, scr, ur, f32, emin32, pfloor, e_floor, True)
            else:
                _setup_row(ar, Er, Sr, scr, ur, f32, emin32, pfloor, e_floor, False)
        if last:
            break
        # the products, in grid units: a*b exact, times 2^(f-E) exact, then trunc / rint
        kk = k0
        while kk < k1:              # K_STEP rows of b per pass over S's rows, then the tail
            if kk + K_STEP <= k1:
                b0, b1 = b[bi, kk, j0:j0 + C], b[bi, kk + 1, j0:j0 + C]
                b2, b3 = b[bi, kk + 2, j0:j0 + C], b[bi, kk + 3, j0:j0 + C]
                for r in range(R):
                    ar = a[bi, i0 + r]
                    _products4(S[r], scale[r], ar[kk], ar[kk + 1], ar[kk + 2], ar[kk + 3],
                               b0, b1, b2, b3, term_rne)
                kk += K_STEP
            else:
                b0 = b[bi, kk, j0:j0 + C]
                for r in range(R):
                    _products1(S[r], scale[r], a[bi, i0 + r, kk], b0, term_rne)
                kk += 1
    for r in range(R):
        dr = d[bi, i0 + r]
        for j in range(C):
            dr[j0 + j] = acc[r, j]


def fused_kernel(a, b, pa, pb, c, n, f, term, p, rnd, emin, emax, overflow, flush, min_exp,
                 product_floor):
    """D = A*B + C through a chain of fused block FMAs, batched; returns float32 D (NB, M, N).

    a (NB, M, K), b (NB, K, N): float32 input values (exact; no NaN/Inf); pa, pb: int8 exponent of
    each input (see :func:`int8_exponents`); c (NB, M, N): float32 start accumulator (values of
    the output format). n block size, f fraction bits below E, term TERM_* code, p output
    precision, rnd ROUND_* code, emin / emax of the output format, overflow a tcsim.overflow code,
    flush 1: nonzero results below 2^emin become zero, min_exp lower clamp of E
    (tcsim.kernel_constants.NO_CLAMP: none),
    product_floor: a product exponent below it is no term (NO_PRODUCT, or NO_EXP when zero
    operands take part in E: then 2 * zero_exp and zero_exp + 15 must be int8). Output tiles
    are shared out over threads (tcsim._kernels.tiles); each is computed whole by one thread.
    """
    NB, M, K = a.shape
    N = b.shape[2]
    d = np.empty((NB, M, N), dtype=np.float32)
    run_strided(_fused_tiles, tile_count(NB, M, N, TILE_ROWS, TILE_COLS), a, b, pa, pb, c, d, n,
                f, term, p, rnd, emin, emax, overflow, flush, min_exp, product_floor)
    return d


@njit(cache=True, nogil=True)
def _fused_tiles(a, b, pa, pb, c, d, n, f, term, p, rnd, emin, emax, overflow, flush, min_exp,
                 product_floor, first, step):
    """Tiles first, first + step, ... of fused_kernel (tile order of tcsim._kernels.tiles)."""
    NB, M, K = a.shape
    N = b.shape[2]
    for t in range(first, tile_count(NB, M, N, TILE_ROWS, TILE_COLS), step):
        bi, i0, j0 = tile_origin(t, M, N, TILE_ROWS, TILE_COLS)
        _fused_tile(a, b, pa, pb, c, d, bi, i0, j0, n, f, term, p, rnd, emin, emax, overflow,
                    flush, min_exp, product_floor)


@njit(cache=True)
def int8_exponents(exps, no_term, zero_exp, out):
    """int16 exponents (blockfma's: ``no_term`` for a zero) -> int8, a zero as ``zero_exp``."""
    src = exps.reshape(-1)
    dst = out.reshape(-1)
    for i in range(src.size):
        e = src[i]
        dst[i] = zero_exp if e == no_term else e


def run(a32, b32, pa16, pb16, cv, prm) -> np.ndarray:
    """fused_kernel on the operands prepared by tcsim._kernels.prep: a32 / b32 float32 values,
    pa16 / pb16 int16 exponents (NO_TERM for a zero), cv the start accumulator (any float
    dtype); prm: the tcsim.params.KernelParams of the datapath, which tcsim.route found this
    kernel to serve. Returns float32 D."""
    zeros_in_e = prm.zero_exp != NO_TERM    # zero operands take part in E
    pa, pb = np.empty(pa16.shape, np.int8), np.empty(pb16.shape, np.int8)
    zero_exp = prm.zero_exp if zeros_in_e else ZERO_EXP8
    int8_exponents(pa16, NO_TERM, zero_exp, pa)
    int8_exponents(pb16, NO_TERM, zero_exp, pb)
    # plain ints: one compiled signature
    return fused_kernel(a32, b32, pa, pb, np.ascontiguousarray(cv, np.float32), int(prm.block),
                        int(prm.frac), int(prm.term), int(prm.out_prec), int(prm.out_rnd),
                        int(prm.acc_emin), int(prm.acc_emax), int(prm.overflow),
                        int(prm.flush_out), int(prm.min_exp),
                        NO_EXP if zeros_in_e else NO_PRODUCT)

