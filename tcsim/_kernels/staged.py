"""The staged kernel: every block FMA with finite fraction bits, plain or built from the
block-scaled and AMD building blocks (private). Only the common FP8 paths run elsewhere (the
fused float32 tile, tcsim._kernels.fused), and exact alignment on blockfma.exact_kernel.

Block by block, in float64 (or int32 where provably exact) with every step exact until a stated
rounding (see tcsim.config.Datapath for the meaning of each stage). Two routes, one compiled
kernel each: output tiles (_staged_tile: TILE_ROWS x TILE_COLS outputs, every stage a loop over
the outputs of a row, so that LLVM vectorises it) for every fused product sum and for binary32
pairwise trees; output by output (pairwise_dot) for the other pairwise trees. The stages carry
the names of the exact oracle's (tcsim.reference.stage_*: specials, terms, align, lanes, join,
round, tree), in the helpers' names and in the tile's comments.
The settings are tcsim.params.KernelParams, read by field name:

* terms: the block's products a_k * b_k (exponent ea + eb, or zero_exp for a zero operand), or,
  with group terms (prm.block_scale = 2), the exact sum of each group of products times the two scales
  sa * sb (exponent Xa + Xb from the scales). A group sum of FP4/FP6/e4m3 products is exact in
  float64 (tcsim.route.check_staged_bits).
* lanes: term t of a block goes to lane t % lanes; each lane is aligned at its own max exponent
  E_l: a term v lands on the grid 2^(E_l - f) as trunc / floor / rint of v * 2^(f - E_l) grid
  units (an exact power-of-two scaling, then the datapath's term rounding). Two lanes:
  the smaller lane's integer S_l is floored onto the larger lane's grid, floor(S_l *
  2^(E_l - E_p)), a floor of an exact scaling (two's-complement round-down).
* join: C inside the alignment (a term of lane 0), after (product sum rounded, then + C with one
  rounding), or asymmetric (S floored to join_sum_bits and C floored to join_c_bits fraction
  bits below E' = max(E_p, e_C), then added exactly and rounded once).
* pairwise: products rounded to the accumulator format, a balanced tree of rounded additions,
  then acc + tree with one rounding; flush of every node when prm.flush_nodes is set. The tree runs on
  the raw operands and C: its nodes are IEEE operations on Inf and NaN as well (no shortcut).
* product overflow (prm.product_ovf): in a block without NaN/Inf inputs, a product whose magnitude
  reaches 2^(emax + 1) makes the block's result Inf of its sign (NaN with both signs).
* stochastic terms (prm.term = SR): |term| rounds up when a counter-based random integer is below
  its first sr_bits discarded bits (counters TERM_K + k, TERM_C + block).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from ..kernel_constants import NO_TERM, TERM_C, TERM_K
from ..overflow import OVERFLOW_IEEE
from ..rounding import RD, RNE, RZ, SR
from .blockfma import round_product_sum, round_result
from .roundpack import (
    NO_RANDOM,
    NO_RANDOM_BITS,
    NO_RESIDUAL,
    exponent_of,
    pow2,
    round_pack,
    sr_random,
)
from .scalar import floor, isfinite, signbit
from .tiles import run_strided, tile_count, tile_origin

EXP_FLOOR = -960    # E never goes below 2^-960 in the scale, keeping 2^f / 2^E finite
# The float32 term scale of the int32 sums is capped at 2^100: it only exceeds that when E comes
# from C alone and the lane holds no nonzero product (every term is then 0 anyway).
F32_SCALE_CAP = 2.0 ** 100

# Lower clamps that keep the exponent of roundpack.pow2 (valid for -1022 <= e <= 1023) in range
# where a scaling is computed for every output, terms or not (branch-free loops), without
# changing a bit:
# floor_pow2(x, e) scales by 2^max(e, FLOOR_POW2_MIN_SHIFT): for an integer 1 <= |x| < 2^60
# both x * 2^e and x * 2^-1000 (>= 2^-1000, exact in float64) lie strictly inside (-1, 1)
# when e < -1000, so their floors agree (0, or -1 for x < 0).
FLOOR_POW2_MIN_SHIFT = -1000
# The asymmetric join computes its scalings with E' = max(E, e_C) clamped at JOIN_MIN_EXP. An E'
# with a nonzero term is at least that term's exponent: >= -552 for a product (two inputs
# >= 2^-149, times two block scales >= 2^-127), >= the accumulator's emin for C. Only an E'
# whose join is 0 (no nonzero product and a zero C: zero operands, or NO_TERM itself) lies below
# -900, and the clamp keeps 2^(E' - join_sum_bits) and 2^(E - f - E' + join_sum_bits) finite.
JOIN_MIN_EXP = -900
# ... and C's floor scales by 2^max(join_c_bits - E', JOIN_C_MIN_SHIFT): C is a nonzero value of
# the accumulator format, 2^-149 <= |C| < 2^128, so for a shift e < -800 both C * 2^e and
# C * 2^-800 (>= 2^-949, exact and nonzero in float64, where C * 2^e may underflow to 0) lie
# strictly inside (-1, 1), and their floors agree (0, or -1 for C < 0).
JOIN_C_MIN_SHIFT = -800


class StageSettings(NamedTuple):
    """The settings the fused product sum's stages read, as locals of one name in both staged
    kernels (the CPU tile, _staged_tile, and the CUDA one, tcsim.cuda.staged._fused_output),
    which unpack :func:`stage_settings` into exactly these names, in this order
    (tests/test_cuda_staged.py checks both). The derived ones are computed there once."""

    n: int              # prm.block
    f: int              # prm.frac: fraction bits below E
    term: int           # prm.term: term rounding
    has_special: bool   # prm.has_special: inputs hold NaN/Inf
    group_mode: bool    # group terms (prm.block_scale group)
    G: int              # prm.group: group size
    L: int              # prm.lanes: 1 or 2
    c_asymmetric: bool  # prm.c_asymmetric
    povf: bool          # prm.product_ovf
    sblock: int         # prm.scale_block: K elements per scale
    zero_exp: int       # prm.zero_exp: exponent of a zero operand
    zero_c: int         # the exponent of a zero C: zero_exp in the asymmetric join (part of
    #                     E' = max(E, e_C)), else NO_TERM (no part in E)
    acc_emin: int       # prm.acc_emin
    clamp_e: int        # the lower clamp of E: prm.min_exp, at least EXP_FLOOR
    js: int             # prm.join_sum_bits
    jc: int             # prm.join_c_bits
    win: int            # prm.join_c_window
    rnd: int            # prm.out_rnd: output rounding
    c_after: bool       # prm.c_after: C after the product sum
    c_inside: bool      # C inside the alignment: neither asymmetric nor after
    half_none: int      # NO_TERM // 2: a lane whose E lies above it holds a term (the exponent
    #                     of a zero term, <= NO_TERM + 254, lies below it)
    top_ovf: float      # 2^(emax + 1): a product at or above it overflows (prm.product_ovf)
    cpow: float         # 2^(join_sum_bits - join_c_bits): C's join units in the sum's units


@njit(cache=True, inline="always")
def stage_settings(prm):
    """:class:`StageSettings` of ``prm`` (tcsim.params.KernelParams): its fields as the stages
    name them, and the settings derived from them."""
    c_asymmetric = prm.c_asymmetric
    c_after = prm.c_after
    return StageSettings(
        prm.block, prm.frac, prm.term, prm.has_special, prm.block_scale == 2, prm.group,
        prm.lanes, c_asymmetric, prm.product_ovf, prm.scale_block, prm.zero_exp,
        prm.zero_exp if c_asymmetric else NO_TERM, prm.acc_emin, max(prm.min_exp, EXP_FLOOR),
        prm.join_sum_bits, prm.join_c_bits, prm.join_c_window, prm.out_rnd, c_after,
        not (c_asymmetric or c_after), NO_TERM // 2, pow2(prm.acc_emax + 1),
        pow2(prm.join_sum_bits - prm.join_c_bits))


# Stage helpers carry the names of the exact oracle's stages (tcsim.reference.stage_*): each
# computes, bit for bit, the part of that stage its docstring names. The per-output helpers
# (align_sr, _add_nodes, _stage_tree, pairwise_dot, tree_leaf32, floor_pow2,
# stage_round_zero_at), and stage_settings above, also compile for CUDA (tcsim.cuda.staged calls
# them): they use tcsim._kernels.scalar's floor / isfinite / signbit, numpy's ufuncs on the CPU.

@njit(cache=True, inline="always")
def align_sr(x, u, rbits):
    """stage_align's stochastic term rounding (reference.round_to_grid "sr"): a term x (grid
    units, exact) in sign-magnitude: |x| rounds up when the random integer u is below
    D = floor(frac(|x|) * 2^rbits), the first rbits discarded bits (an exact power-of-two
    scaling of an exact fraction)."""
    ax = abs(x)
    fl = floor(ax)
    if u < floor((ax - fl) * pow2(rbits)):
        fl += 1.0
    return math.copysign(fl, x)


@njit(cache=True)
def _add_nodes(x, y, p, emin, emax, rnd, flush):
    """stage_tree's node (reference._add_nodes): x + y rounded to p bits in the exponent range
    [emin, emax] (an IEEE addition of that format: an exact zero sum is +0 unless both are -0;
    Inf/NaN propagate)."""
    hi = x + y
    if not isfinite(hi):
        return hi
    yv = hi - x
    lo = (x - (hi - yv)) + (y - yv)     # TwoSum: hi + lo == x + y exactly
    if hi == 0.0:
        return hi                       # x == -y (+0), or -0 + -0 (-0)
    return round_pack(hi, lo, p, emin, emax, rnd, OVERFLOW_IEEE, flush, NO_RANDOM,
                      NO_RANDOM_BITS)


@njit(cache=True)
def _stage_tree(a, b, k0, k1, acc, prm, buf):
    """stage_tree of one block: acc + tree(products of a[k0:k1], b[k0:k1]) with every node
    rounded (see module doc). The binary32 RNE trees run on the tiled route instead
    (tcsim.route.staged_tiled), so this is every other tree."""
    n = prm.block
    pp = prm.psum_prec
    emin = prm.acc_emin
    emax = prm.acc_emax
    flush = prm.flush_nodes
    for t in range(n):
        k = k0 + t
        q = a[k] * b[k] if k < k1 else 0.0     # a short last block is padded with +0 products
        q = q + 0.0                            # fma(a, b, +0): a zero product is +0 (the
        # product of two inputs is exact in float64, so a contracted fma on CUDA is the same)
        if q != 0.0 and isfinite(q):
            q = round_pack(q, NO_RESIDUAL, pp, emin, emax, RNE, OVERFLOW_IEEE, flush, NO_RANDOM,
                           NO_RANDOM_BITS)
        buf[t] = q
    width = n
    while width > 1:
        half = width // 2
        for t in range(half):
            buf[t] = _add_nodes(buf[2 * t], buf[2 * t + 1], pp, emin, emax, RNE, flush)
        width = half
    return _add_nodes(acc, buf[0], prm.out_prec, emin, emax, prm.out_rnd, flush)


@njit(cache=True, inline="always")
def tree_leaf32(x):
    """stage_tree's product node in binary32: fma(a, b, +0) of the exact float64 product
    x = a * b: +0 for an exact zero product (-0 + +0 = +0), else x rounded once (RNE); a nonzero
    x that underflows keeps its sign (-0), as libm fmaf does."""
    return np.float32(x) if x != 0.0 else np.float32(0.0)


@njit(cache=True)
def pairwise_dot(a_raw, b_raw, c0, prm, buf):
    """One output of a pairwise tree that is not all binary32 RNE nodes: the chain of blocks
    (reference.dot of stage_tree blocks) over K (a_raw, b_raw: one row of A and one column of
    B, Inf and NaN included)."""
    K = a_raw.size
    n = prm.block
    acc = c0
    for k0 in range(0, K, n):
        acc = _stage_tree(a_raw, b_raw, k0, min(k0 + n, K), acc, prm, buf)
    return acc


# Output tile of the tiled path: TILE_ROWS rows share each loaded row of B; the loops over the
# TILE_COLS outputs of a row vectorise.
TILE_ROWS = 16
TILE_COLS = 512


@njit(cache=True, inline="always")
def floor_pow2(x, e):
    """The round-down of stage_lanes and stage_join (reference.round_to_grid "floor", in grid
    units): floor(x * 2^max(e, FLOOR_POW2_MIN_SHIFT)) for an integer-valued |x| < 2^60: below
    2^-1000 the exact x * 2^e lies strictly inside (-1, 1) just as the clamped one does, so the
    floors agree."""
    return floor(x * pow2(max(e, FLOOR_POW2_MIN_SHIFT)))


@njit(cache=True)
def stage_round_zero_at(a_row, b, bi, k0, k1, j, accf, prm):
    """stage_round of an exact zero sum, output column j of the row tile: -0 only under the
    IEEE rule when C and every product are -0."""
    if not prm.zero_ieee or accf != 0.0 or not signbit(accf):
        return 0.0
    for k in range(k0, k1):
        q = a_row[k] * b[bi, k, j]
        if q != 0.0 or not signbit(q):
            return 0.0
    return -0.0


@njit(cache=True)
def _stage_round_row(vr, spr, accr, nxf, nxe, prm, zero_c):
    """stage_round of a row: accr = the exact block sums vr rounded with the output settings
    (stochastic rounding: by the caller), a nonzero spr (NaN/Inf of the block) winning; then
    the next block's C split into its finite part nxf, its NaN/Inf part spr (res - xf) and its
    exponent nxe (zero_c for a zero). A function of its own, with no loop-carried state, so
    that LLVM vectorises it."""
    acc_emin = prm.acc_emin
    for j in range(vr.size):
        val = vr[j]
        res = round_result(val, NO_RESIDUAL, prm, NO_RANDOM)
        res = res if val != 0.0 else 0.0
        spv = spr[j]
        res = spv if spv != 0.0 else res
        accr[j] = res
        xf = res if np.isfinite(res) else 0.0
        nxf[j] = xf
        spr[j] = res - xf
        nxe[j] = max(exponent_of(xf), acc_emin) if xf != 0.0 else zero_c


@njit(cache=True)
def _stage_round_row_lo(vr, lor, spr, accr, nxf, nxe, prm, zero_c):
    """_stage_round_row of the exact sums vr + lor (C after the product sum: the TwoSum of the
    rounded product sum and C)."""
    acc_emin = prm.acc_emin
    for j in range(vr.size):
        val = vr[j]
        res = round_result(val, lor[j], prm, NO_RANDOM)
        res = res if val != 0.0 else 0.0
        spv = spr[j]
        res = spv if spv != 0.0 else res
        accr[j] = res
        xf = res if np.isfinite(res) else 0.0
        nxf[j] = xf
        spr[j] = res - xf
        nxe[j] = max(exponent_of(xf), acc_emin) if xf != 0.0 else zero_c


@njit(cache=True)
def _staged_tile(a, b, a_raw, b_raw, pa, pb, c, sa, xa, sb, xb, a32, b32, prm, d, bi, i0, R,
                 j0, C, pairwise_tree, group_terms, rare_modes, int32_sums,
                 normalized_or_c_after):
    """Outputs (bi, i0 .. i0 + R - 1, j0 .. j0 + C - 1) over the whole K chain. Every stage is
    a loop over the C outputs of a row (so LLVM vectorises it), and each loaded row of B serves
    the R rows of the tile: every fused product sum (C inside, after or in the asymmetric
    join; any lanes, products or group terms), and the binary32 pairwise tree. The same
    arithmetic as tcsim.reference, bit for bit.

    The variant flags, each None or True (numba prunes every ``flag is not None`` stage of a
    variant whose flag is None, so each variant compiles only its own stages):
    pairwise_tree: the binary32 pairwise tree (prm.pairwise); group_terms: group terms
    (prm.block_scale group); rare_modes: any mode outside the common variant (tile_variant);
    int32_sums: int32 product sums (prm.int32_sums); normalized_or_c_after: normalised
    products or C after the product sum (read only with rare_modes)."""
    K = a.shape[2]
    (n, f, term, has_special, group_mode, G, L, c_asymmetric, povf, sblock, zero_exp, zero_c,
     acc_emin, clamp_e, js, jc, win, rnd, c_after, c_inside, half_none, top_ovf,
     cpow) = stage_settings(prm)
    pairwise = prm.pairwise
    flush = prm.flush_nodes
    acc = np.empty((R, C))
    for r in range(R):      # element by element: a 2-D slice copy costs a second of compile
        for j in range(C):
            acc[r, j] = c[bi, i0 + r, j0 + j]
    accf = np.empty((R, C))
    sp = np.empty((R, C))
    ovf = np.empty((R if povf else 1, C if povf else 1))    # overflowing products of a block
    v = np.empty((R, C))
    lov = np.empty((R, C))          # C after the product sum: the TwoSum error of v
    e_c = np.empty((R, C), dtype=np.int32)
    accf_next = np.empty((R, C))
    e_c_next = np.empty((R, C), dtype=np.int32)
    spec = np.empty((R, C), dtype=np.bool_)
    E_l = np.empty((2, R, C), dtype=np.int16)      # exponents, NO_TERM and clamps fit int16
    S_l = np.empty((2, R, C))
    sc_l = np.empty((2, R, C))
    has_terms = np.empty((R, C), dtype=np.bool_)     # asymmetric join: a lane holds a term
    n_groups = max(n // G, 1) if group_mode else 1
    gt = np.empty((n_groups, R, C))
    gs = np.empty((R, C))
    buf = np.empty((n if pairwise else 1, R, C), dtype=np.float32)
    S32 = np.empty((2 if prm.int32_sums else 1, R, C), dtype=np.int32)
    sc32 = np.empty((2 if prm.int32_sums else 1, R, C), dtype=np.float32)
    tiny = np.float32(2.0 ** -126)
    zero32 = np.float32(0.0)
    split_done = False
    for k0 in range(0, K, n):
        k1 = min(k0 + n, K)
        kb = k0 // n
        for r in range(R if not split_done else 0):   # C: finite, NaN/Inf part, exponent
            accr = acc[r]
            accfr = accf[r]
            spr = sp[r]
            ecr = e_c[r]
            for j in range(C):
                x = accr[j]
                fin = np.isfinite(x)
                xf = x if fin else 0.0
                accfr[j] = xf
                spr[j] = 0.0 if fin else x
                ecr[j] = max(exponent_of(xf), acc_emin) if xf != 0.0 else zero_c
        # ---- stage_specials: NaN / Inf products, overflowing products
        if rare_modes is not None:
            if has_special and not pairwise:
                for k in range(k0, k1):
                    braw = b_raw[bi, k, j0:j0 + C]
                    for r in range(R):
                        ar = a_raw[bi, i0 + r, k]
                        spr = sp[r]
                        for j in range(C):
                            q = ar * braw[j]
                            if not np.isfinite(q):
                                spr[j] += q
            if povf:            # products >= 2^(emax + 1) where no input is NaN / Inf
                # the sum of +-Inf over the overflowing products (exact in float64 for the
                # formats here; NaN with both signs), in K order, over contiguous rows of B
                for r in range(R):
                    ovr = ovf[r]
                    for j in range(C):
                        ovr[j] = 0.0
                for k in range(k0, k1):
                    braw = b_raw[bi, k, j0:j0 + C]
                    for r in range(R):
                        ar = a_raw[bi, i0 + r, k]
                        ovr = ovf[r]
                        for j in range(C):
                            q = ar * braw[j]
                            ovr[j] += math.copysign(math.inf, q) if abs(q) >= top_ovf else 0.0
                for r in range(R):
                    spr = sp[r]
                    ovr = ovf[r]
                    for j in range(C):
                        if spr[j] == 0.0:
                            spr[j] = ovr[j]
        # ---- stage_tree: binary32 RNE nodes (the dispatcher checked it)
        if pairwise_tree is not None:
            if (n == 2 or n == 4) and k1 - k0 == n:
                # a whole block of 2 or 4: the tree and acc + tree in one pass, in registers
                for r in range(R):
                    accr = acc[r]
                    accfr = accf[r]
                    spr = sp[r]
                    a0 = a_raw[bi, i0 + r, k0]
                    a1 = a_raw[bi, i0 + r, k0 + 1]
                    b0_ = b_raw[bi, k0, j0:j0 + C]
                    b1_ = b_raw[bi, k0 + 1, j0:j0 + C]
                    a2 = a_raw[bi, i0 + r, k0 + 2] if n == 4 else 0.0
                    a3 = a_raw[bi, i0 + r, k0 + 3] if n == 4 else 0.0
                    b2_ = b_raw[bi, k0 + 2 if n == 4 else k0, j0:j0 + C]
                    b3_ = b_raw[bi, k0 + 3 if n == 4 else k0, j0:j0 + C]
                    for j in range(C):
                        p0 = tree_leaf32(a0 * b0_[j])      # fma(a, b, +0)
                        p0 = p0 * zero32 if (flush and abs(p0) < tiny) else p0
                        p1 = tree_leaf32(a1 * b1_[j])
                        p1 = p1 * zero32 if (flush and abs(p1) < tiny) else p1
                        g = p0 + p1
                        g = g * zero32 if (flush and abs(g) < tiny) else g
                        if n == 4:
                            p2 = tree_leaf32(a2 * b2_[j])
                            p2 = p2 * zero32 if (flush and abs(p2) < tiny) else p2
                            p3 = tree_leaf32(a3 * b3_[j])
                            p3 = p3 * zero32 if (flush and abs(p3) < tiny) else p3
                            g2 = p2 + p3
                            g2 = g2 * zero32 if (flush and abs(g2) < tiny) else g2
                            g = g + g2
                            g = g * zero32 if (flush and abs(g) < tiny) else g
                        q = np.float32(accr[j]) + g             # IEEE: Inf / NaN too
                        q = q * zero32 if (flush and abs(q) < tiny) else q
                        res = np.float64(q)
                        accr[j] = res
                        xf = res if np.isfinite(res) else 0.0
                        accfr[j] = xf
                        spr[j] = res - xf
                split_done = True
                continue
            # product nodes and the first tree level in one pass: buf[t] = p(2t) + p(2t + 1)
            half = (n + 1) // 2
            for t in range(half):
                k = k0 + 2 * t
                bt = buf[t]
                if k + 1 < k1 and n > 1:
                    bk = b_raw[bi, k, j0:j0 + C]
                    bk1 = b_raw[bi, k + 1, j0:j0 + C]
                    for r in range(R):
                        ak = a_raw[bi, i0 + r, k]
                        ak1 = a_raw[bi, i0 + r, k + 1]
                        btr = bt[r]
                        for j in range(C):
                            q0 = tree_leaf32(ak * bk[j])      # fma(a, b, +0)
                            q0 = q0 * zero32 if (flush and abs(q0) < tiny) else q0
                            q1 = tree_leaf32(ak1 * bk1[j])
                            q1 = q1 * zero32 if (flush and abs(q1) < tiny) else q1
                            q = q0 + q1
                            btr[j] = q * zero32 if (flush and abs(q) < tiny) else q
                else:       # n == 1, or the end of a short last block (+0 padding products)
                    for r in range(R):
                        btr = bt[r]
                        for j in range(C):
                            q = zero32
                            if k < k1:
                                q = tree_leaf32(a_raw[bi, i0 + r, k] * b_raw[bi, k, j0 + j])
                                q = q * zero32 if (flush and abs(q) < tiny) else q
                            if n > 1:           # + the +0 padding partner
                                q = q + zero32
                                q = q * zero32 if (flush and abs(q) < tiny) else q
                            btr[j] = q
            width = half
            while width > 1:
                hw = width // 2
                for t in range(hw):
                    for r in range(R):
                        lo_ = buf[2 * t, r]
                        hi_ = buf[2 * t + 1, r]
                        bt = buf[t, r]
                        for j in range(C):
                            q = lo_[j] + hi_[j]
                            bt[j] = q * zero32 if (flush and abs(q) < tiny) else q
                width = hw
            # acc + tree, and the next block's C split (no exponent needed here)
            for r in range(R):
                b0 = buf[0, r]
                accr = acc[r]
                accfr = accf[r]
                spr = sp[r]
                for j in range(C):
                    q = np.float32(accr[j]) + b0[j]              # IEEE: Inf / NaN too
                    q = q * zero32 if (flush and abs(q) < tiny) else q
                    res = np.float64(q)
                    accr[j] = res
                    xf = res if np.isfinite(res) else 0.0
                    accfr[j] = xf
                    spr[j] = res - xf
            split_done = True
            continue
        # ---- stage_terms: the terms' exponents, E of each lane (or of the group terms)
        for lane in range(L):
            for r in range(R):
                El = E_l[lane, r]
                if lane == 0 and c_inside:      # C inside the alignment: a lane-0 exponent
                    ecr = e_c[r]
                    for j in range(C):
                        El[j] = ecr[j]
                else:
                    for j in range(C):
                        El[j] = NO_TERM
        nt = 0
        if group_terms is not None:     # group terms
            for g0 in range(k0, k1, G):
                gs[:] = 0.0
                for k in range(g0, min(g0 + G, k1)):
                    bk = b[bi, k, j0:j0 + C]
                    for r in range(R):
                        ak = a[bi, i0 + r, k]
                        gsr = gs[r]
                        for j in range(C):
                            gsr[j] += ak * bk[j]             # exact (check_staged_bits)
                si = g0 // sblock
                sbr = sb[bi, si, j0:j0 + C]
                xbr = xb[bi, si, j0:j0 + C]
                for r in range(R):
                    sai = sa[bi, i0 + r, si]
                    xai = xa[bi, i0 + r, si]
                    gsr = gs[r]
                    gtr = gt[nt, r]
                    El = E_l[0, r]
                    for j in range(C):
                        tv = gsr[j] * sai * sbr[j]
                        e = xai + xbr[j]
                        if tv == 0.0 and zero_exp == NO_TERM:
                            e = NO_TERM                      # a zero group: no part in E
                        gtr[j] = tv
                        El[j] = max(El[j], e)
                nt += 1
        else:
            normalized_e = False
            if rare_modes is not None:
                if normalized_or_c_after is not None:
                    if prm.normalized:      # floor(log2|a*b|) of each nonzero product
                        for k in range(k0, k1):
                            lane = (k - k0) & (L - 1)
                            bk = b[bi, k, j0:j0 + C]
                            for r in range(R):
                                ak = a[bi, i0 + r, k]
                                El = E_l[lane, r]
                                for j in range(C):
                                    q = ak * bk[j]
                                    e = exponent_of(q) if q != 0.0 else NO_TERM
                                    El[j] = max(El[j], e)
                        normalized_e = True
            if not normalized_e:
                for k in range(k0, k1):
                    lane = (k - k0) & (L - 1)
                    pbk = pb[bi, k, j0:j0 + C]
                    for r in range(R):
                        pak = pa[bi, i0 + r, k]
                        El = E_l[lane, r]
                        for j in range(C):
                            e = np.int16(pak + pbk[j])              # ea + eb on int16 lanes
                            El[j] = e if e > El[j] else El[j]
        for r in range(R):
            for lane in range(L):
                El = E_l[lane, r]
                Sl = S_l[lane, r]
                scl = sc_l[lane, r]
                if rare_modes is not None:
                    if c_asymmetric:        # the asymmetric join: does a lane hold a term?
                        has_terms_r = has_terms[r]
                        for j in range(C):
                            term_here = El[j] > half_none
                            has_terms_r[j] = term_here if lane == 0 else (has_terms_r[j] or term_here)
                for j in range(C):      # one branch-free loop per row, so that it vectorises
                    e = max(El[j], clamp_e)
                    El[j] = e
                    scl[j] = pow2(f - e)
                    Sl[j] = 0.0
                if int32_sums is not None:     # int32 sums of float32 terms; the cap binds only
                    # without terms
                    sc32r = sc32[lane, r]
                    S32r = S32[lane, r]
                    for j in range(C):
                        sc32r[j] = np.float32(min(scl[j], F32_SCALE_CAP))
                        S32r[j] = 0
        # ---- stage_align: terms onto their lane's grid (clamped E), exact sums
        if group_terms is not None:
            for t in range(nt):
                for r in range(R):
                    gtr = gt[t, r]
                    Sl = S_l[0, r]
                    scl = sc_l[0, r]
                    for j in range(C):
                        Sl[j] += np.trunc(gtr[j] * scl[j])
        elif int32_sums is not None:
            # truncated terms as int32 of exact float32 values (tcsim.route.staged_int32_sums):
            # the float -> int32 conversion truncates toward zero; the scale is capped at 2^100,
            # which only binds for a lane without nonzero products
            for k in range(k0, k1):
                lane = (k - k0) & (L - 1)
                bk = b32[bi, k, j0:j0 + C]
                for r in range(R):
                    ak = a32[bi, i0 + r, k]
                    if ak == 0.0:
                        continue
                    S32r = S32[lane, r]
                    scr = sc32[lane, r]
                    for j in range(C):
                        S32r[j] += np.int32(ak * bk[j] * scr[j])
            for lane in range(L):
                for r in range(R):
                    for j in range(C):
                        S_l[lane, r, j] = np.float64(S32[lane, r, j])
        else:
            for k in range(k0, k1):
                lane = (k - k0) & (L - 1)
                bk = b[bi, k, j0:j0 + C]
                for r in range(R):
                    ak = a[bi, i0 + r, k]
                    if ak == 0.0:
                        continue
                    Sl = S_l[lane, r]
                    scl = sc_l[lane, r]
                    if rare_modes is None:        # the common variant truncates
                        for j in range(C):
                            Sl[j] += np.trunc(ak * bk[j] * scl[j])
                    elif term == RZ:
                        for j in range(C):
                            Sl[j] += np.trunc(ak * bk[j] * scl[j])
                    elif term == RD:
                        for j in range(C):
                            Sl[j] += np.floor(ak * bk[j] * scl[j])
                    elif term == RNE:
                        for j in range(C):
                            Sl[j] += np.rint(ak * bk[j] * scl[j])
                    else:
                        for j in range(C):
                            u = sr_random(prm.sr_seed, bi, i0 + r, j0 + j, TERM_K + k, prm.sr_bits)
                            Sl[j] += align_sr(ak * bk[j] * scl[j], u, prm.sr_bits)
        if c_inside:        # C inside: one more lane-0 term
            for r in range(R):
                Sl = S_l[0, r]
                scl = sc_l[0, r]
                accfr = accf[r]
                if rare_modes is None:        # the common variant truncates
                    for j in range(C):
                        Sl[j] += np.trunc(accfr[j] * scl[j])
                elif term == SR:
                    for j in range(C):
                        u = sr_random(prm.sr_seed, bi, i0 + r, j0 + j, TERM_C + kb, prm.sr_bits)
                        Sl[j] += align_sr(accfr[j] * scl[j], u, prm.sr_bits)
                elif term == RZ:    # one branch per row, so that the loops vectorise
                    for j in range(C):
                        Sl[j] += np.trunc(accfr[j] * scl[j])
                elif term == RD:
                    for j in range(C):
                        Sl[j] += np.floor(accfr[j] * scl[j])
                else:
                    for j in range(C):
                        Sl[j] += np.rint(accfr[j] * scl[j])
        # ---- stage_lanes, stage_join, stage_round (one rounding), and the next block's C split
        # (one loop per row)
        fixups = rnd == SR or prm.zero_ieee   # stochastic rounding, IEEE zero signs: below
        if rare_modes is not None:
            if fixups:
                for r in range(R):
                    for j in range(C):
                        spec[r, j] = sp[r, j] != 0.0
        for r in range(R):
            vr = v[r]
            accr = acc[r]
            accfr = accf[r]
            ecr = e_c[r]
            spr = sp[r]
            nxf = accf_next[r]
            nxe = e_c_next[r]
            S0 = S_l[0, r]
            E0 = E_l[0, r]
            S1 = S_l[1, r]
            E1 = E_l[1, r]
            has_terms_r = has_terms[r]
            joined = False
            if rare_modes is not None:
                if L == 2:      # stage_lanes: the smaller lane rounded down onto the larger
                    for j in range(C):
                        E = max(E0[j], E1[j])
                        S0[j] = floor_pow2(S0[j], E0[j] - E) + floor_pow2(S1[j], E1[j] - E)
                        E0[j] = E
                if normalized_or_c_after is not None:
                    if c_after:     # stage_join "after": product sum rounded, then + C
                        lor = lov[r]
                        for j in range(C):
                            x = S0[j] * pow2(E0[j] - f)
                            x = round_product_sum(x, NO_RESIDUAL, prm) if x != 0.0 else 0.0
                            y = accfr[j]
                            hi = x + y
                            yv = hi - x
                            lor[j] = (x - (hi - yv)) + (y - yv)     # TwoSum: hi + lo == x + y
                            vr[j] = hi
                        _stage_round_row_lo(vr, lor, spr, accr, nxf, nxe, prm, zero_c)
                        continue
                if c_asymmetric:            # stage_join "asymmetric"
                    for j in range(C):      # branch-free, so that it vectorises
                        E = np.int64(E0[j])
                        has_term = has_terms_r[j]
                        ec = np.int64(ecr[j])
                        E2 = max(E if has_term else NO_TERM, ec)
                        E2c = max(E2, JOIN_MIN_EXP)
                        s_units = floor_pow2(S0[j], E - f - E2c + js)
                        s_units = s_units if has_term else 0.0
                        x = accfr[j]
                        keep = (x != 0.0) and (win < 0 or ec >= E2 - win)
                        cu = np.floor(x * pow2(max(jc - E2c, JOIN_C_MIN_SHIFT)))
                        cu = cu if keep else 0.0
                        val = (s_units + cu * cpow) * pow2(E2c - js)
                        vr[j] = val if E2 != NO_TERM else 0.0
                    joined = True
            if not joined:
                for j in range(C):
                    vr[j] = S0[j] * pow2(E0[j] - f)
            _stage_round_row(vr, spr, accr, nxf, nxe, prm, zero_c)
        fixed = False
        if rare_modes is not None:    # stage_round's fix-ups: IEEE zero signs, stochastic rounding
            if fixups:
                for r in range(R):
                    vr = v[r]
                    accr = acc[r]
                    for j in range(C):
                        if spec[r, j]:
                            continue
                        if vr[j] == 0.0:
                            accr[j] = stage_round_zero_at(a[bi, i0 + r], b, bi, k0, k1,
                                                           j0 + j, accf[r, j], prm)
                        elif rnd == SR:
                            u = sr_random(prm.sr_seed, bi, i0 + r, j0 + j, kb, prm.sr_bits)
                            lo = lov[r, j] if c_after else 0.0
                            accr[j] = round_result(vr[j], lo, prm, u)
                split_done = False      # fixed-up results: split again at the next block
                fixed = True
        if not fixed:
            accf, accf_next = accf_next, accf
            e_c, e_c_next = e_c_next, e_c
            split_done = True
    dt = d[bi]
    for r in range(R):     # element by element: a 2-D slice assignment costs seconds of compile
        for j in range(C):
            dt[i0 + r, j0 + j] = acc[r, j]


def tile_variant(prm):
    """The variant of _staged_tile that serves ``prm``: None, the common one (C inside the
    alignment, unnormalised products, one lane, truncated terms, finite inputs, RZ / RNE
    output, zero sign not IEEE, no product overflow rule), which compiles without the
    ``rare_modes`` stages; True for the rest (the asymmetric join, C after the product sum,
    normalised products, two lanes, floor / nearest / stochastic terms, the NaN/Inf and product
    overflow passes, stochastic output rounding, IEEE zero signs)."""
    rare_modes = (prm.c_asymmetric or prm.lanes != 1 or prm.term != RZ or prm.out_rnd == SR
                  or prm.zero_ieee or prm.product_ovf or prm.has_special or prm.normalized
                  or prm.c_after)
    return True if rare_modes else None


def staged_kernel(a, b, a_raw, b_raw, bT_raw, pa, pb, c, sa, xa, sb, xb, a32, b32, prm):
    """D = A*B + C through a chain of staged block FMAs, batched.

    a (B, M, K), b (B, K, N): finite input values (NaN/Inf replaced by 0); a_raw, b_raw: the
    original values (NaN where a scale is NaN); bT_raw (B, N, K): b_raw transposed, read by the
    output-by-output route only (a dummy on the tiled route, prm.tiled); pa, pb: int16 input
    exponents (NO_TERM / zero_exp for zeros); c (B, M, N); sa (B, M, nS), sb (B, nS, N): scale
    values (1 without scales); xa, xb: their int64 exponents; a32, b32: a and b as float32 when
    prm.int32_sums allows int32 product sums (tcsim.route.staged_int32_sums), else dummies.
    Returns float64 values of the accumulator format.

    Every fused product sum, and the binary32 pairwise tree, run on output tiles (_staged_tile,
    vectorised over the outputs of a row); pairwise trees of other precisions or roundings
    output by output (pairwise_dot). The two routes are separate kernels (each compiles
    only when used), run on threads (tcsim._kernels.tiles) over tiles / rows; each output is
    computed whole by one thread, so results do not depend on the thread count.
    """
    NB, M, K = a.shape
    N = b.shape[2]
    d = np.empty((NB, M, N))
    if prm.tiled:       # tcsim.route chose the route
        n_tiles = tile_count(NB, M, N, TILE_ROWS, TILE_COLS)
        # the variant flags (see _staged_tile)
        pairwise_tree = True if prm.pairwise else None
        group_terms = True if prm.block_scale == 2 else None
        rare_modes = tile_variant(prm)
        int32_sums = True if prm.int32_sums else None
        normalized_or_c_after = True if (prm.normalized or prm.c_after) else None
        run_strided(_staged_tiles, n_tiles, a, b, a_raw, b_raw, pa, pb, c, sa, xa, sb, xb, a32,
                    b32, prm, pairwise_tree, group_terms, rare_modes, int32_sums,
                    normalized_or_c_after, d)
    else:
        run_strided(_staged_rows, NB * M, a_raw, bT_raw, c, prm, d)
    return d


@njit(cache=True, nogil=True)
def _staged_tiles(a, b, a_raw, b_raw, pa, pb, c, sa, xa, sb, xb, a32, b32, prm, pairwise_tree,
                  group_terms, rare_modes, int32_sums, normalized_or_c_after, d, first, step):
    """Output tiles first, first + step, ... (one thread's share of the tiled route)."""
    NB, M, K = a.shape
    N = b.shape[2]
    for t in range(first, tile_count(NB, M, N, TILE_ROWS, TILE_COLS), step):
        bi, i0, j0 = tile_origin(t, M, N, TILE_ROWS, TILE_COLS)
        _staged_tile(a, b, a_raw, b_raw, pa, pb, c, sa, xa, sb, xb, a32, b32, prm, d, bi,
                     i0, min(TILE_ROWS, M - i0), j0, min(TILE_COLS, N - j0), pairwise_tree,
                     group_terms, rare_modes, int32_sums, normalized_or_c_after)


@njit(cache=True, nogil=True)
def _staged_rows(a_raw, bT_raw, c, prm, d, first, step):
    """Output rows first, first + step, ... (one thread's share of the output-by-output route:
    pairwise trees that are not all binary32 RNE nodes)."""
    NB, M, K = a_raw.shape
    N = bT_raw.shape[1]
    buf = np.empty(prm.block)
    for t in range(first, NB * M, step):
        bi = t // M
        i = t % M
        for j in range(N):
            d[bi, i, j] = pairwise_dot(a_raw[bi, i], bT_raw[bi, j], c[bi, i, j], prm, buf)
