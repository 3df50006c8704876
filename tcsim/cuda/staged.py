"""The staged kernel family on CUDA (tcsim.route's STAGED_TILE and PAIRWISE): the same bits as
tcsim._kernels.staged.staged_kernel, one thread per output (bi, i, j) computing its whole K
chain block by block.

The CPU kernel runs output tiles whose every stage is a loop over the outputs of a row (so that
LLVM vectorises it); a GPU thread owns one output instead, so the tile's stages become scalar
steps of one output (:func:`_fused_output`, :func:`_tree32_output`), and the per-output
routines of the CPU module are called as they are (round_pack through blockfma.round_result /
round_product_sum, staged.align_sr / floor_pow2 / stage_round_zero_at / tree_leaf32, the
settings as staged.stage_settings derives them, and the whole output-by-output tree
staged.pairwise_dot). numba-cuda compiles those ``@njit`` functions for the device; under
numba's CUDA simulator their CPU compile runs (the same bits).

Three kernels, one per route of the CPU kernel (each compiles only when used):

* ``_fused_kernel``: every fused product sum (prm.tiled, not prm.pairwise): C inside, after or
  in the asymmetric join; one or two lanes; unnormalised or normalised products; truncate /
  floor / rne / sr terms; group terms (block_scale group; the exponent kind arrives pre-scaled);
  int32 product sums (prm.int32_sums); NaN/Inf inputs, product overflow, IEEE zero signs, RZ / RNE /
  SR output.
* ``_tree32_kernel``: the pairwise tree whose every node is a binary32 RNE operation (prm.tiled
  and prm.pairwise).
* ``_tree_kernel``: every other pairwise tree (not prm.tiled): staged.pairwise_dot itself.

FMA contraction: numba-cuda leaves libNVVM's contraction on, so ``x * y + z`` may become one
fma. Every such pattern here (and in the CPU helpers called) has an exact product (a product of
two inputs, or a power-of-two scaling of an integer), where fma and mul + add agree; each says
so where it stands.

Scratch: group terms and tree nodes live in ``cuda.local.array`` of constant sizes
(MAX_GROUPS, MAX_TREE); :func:`unserved` names a datapath that needs more.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from numba import njit, typeof, types

from .. import cuda as _backend
from .._kernels.blockfma import round_product_sum, round_result
from .._kernels.roundpack import NO_RANDOM, NO_RESIDUAL, exponent_of, pow2, sr_random
from .._kernels.scalar import floor, isfinite, rint, trunc
from .._kernels.staged import (
    F32_SCALE_CAP,
    JOIN_C_MIN_SHIFT,
    JOIN_MIN_EXP,
    align_sr,
    floor_pow2,
    pairwise_dot,
    stage_round_zero_at,
    stage_settings,
    tree_leaf32,
)
from ..datapath import Datapath
from ..errors import DeviceError
from ..kernel_constants import NO_TERM, TERM_C, TERM_K
from ..params import kernel_params
from ..rounding import RD, RNE, RZ, SR

cuda = _backend.cuda()

# Scratch sizes (constant: cuda.local.array): group terms of one block (block // group_size),
# and the leaves of one pairwise tree (block size); unserved() refuses larger ones.
MAX_GROUPS = 16
MAX_TREE = 64
# A binary32 tree keeps its first level, (block + 1) // 2 nodes.
MAX_TREE32 = MAX_TREE // 2

TINY32 = np.float32(2.0 ** -126)    # the smallest normal binary32 (flush_nodes)
ZERO32 = np.float32(0.0)


def unserved(prm) -> Optional[str]:
    """None when these kernels compute ``prm`` (tcsim.params.KernelParams of a STAGED_TILE or
    PAIRWISE route) exactly; else a short reason naming the mode, for the caller's one error."""
    if prm.pairwise:
        if prm.tiled and (prm.block + 1) // 2 > MAX_TREE32:
            return (f"pairwise tree of block {prm.block}: the CUDA staged kernel holds at most "
                    f"{2 * MAX_TREE32} binary32 leaves per block")
        if not prm.tiled and prm.block > MAX_TREE:
            return (f"pairwise tree of block {prm.block}: the CUDA staged kernel holds at most "
                    f"{MAX_TREE} leaves per block")
        return None
    if prm.frac < 0:
        return "exact alignment (fraction_bits None) runs on the exact kernel, not the staged one"
    if not prm.tiled:
        return "a fused product sum on the output-by-output route (tcsim.route never picks it)"
    if prm.block_scale == 2 and prm.block // prm.group > MAX_GROUPS:
        return (f"group terms: {prm.block // prm.group} groups per block (block {prm.block}, "
                f"group {prm.group}); the CUDA staged kernel holds at most {MAX_GROUPS}")
    return None


# ---- per-output stages (CPU @njit source, compiled for the device by numba-cuda) -------------

@njit(cache=True, inline="always")
def _round_term(x, term, u, rbits):
    """stage_align's term rounding of x (grid units, exact) as the tile's per-mode loops do it:
    RZ trunc, RD floor, RNE rint (nearest-even), SR staged.align_sr with random integer u."""
    if term == RZ:
        return trunc(x)
    if term == RD:
        return floor(x)
    if term == RNE:
        return rint(x)
    return align_sr(x, u, rbits)


@njit(cache=True)
def _fused_output(a, b, a_raw, b_raw, pa, pb, c, sa, xa, sb, xb, a32, b32, prm, bi, i, j, gt):
    """Output (bi, i, j) of a fused product sum over the whole K chain: staged._staged_tile for
    one output (R = C = 1), stage by stage (tcsim.reference.stage_*):

    * C split (the tile's split loop / _stage_round_row's next-C part): finite part cf, NaN/Inf
      part sp, exponent ec (zero_c for a zero C);
    * stage_specials: sp += every non-finite raw product, in K order; product overflow: the sum
      of +-Inf over products >= 2^(emax + 1) when sp is 0;
    * stage_terms: E of each lane (e_C in lane 0 when C is inside; ea + eb on int16, the exact
      product's exponent when normalised, or Xa + Xb of each group term, gt[t]);
    * stage_align: each term onto its lane's grid 2^(E - f) (clamped E), truncate / floor /
      rne / sr (_round_term), summed exactly in float64 (or int32 of float32 products,
      prm.int32_sums); C inside as one more lane-0 term;
    * stage_lanes: the smaller lane floored onto the larger's grid (floor_pow2);
    * stage_join: inside (v = S 2^(E - f)), after (round_product_sum, then TwoSum with C), or
      asymmetric (S and C floored to join_sum_bits / join_c_bits below E');
    * stage_round: round_result (stochastic: at counter kb), NaN/Inf winning, an exact zero's
      IEEE sign from stage_round_zero_at.

    gt: scratch of at least block // group floats (group terms). Returns the float64 result."""
    K = a.shape[2]
    (n, f, term, has_special, group_mode, G, L, c_asymmetric, povf, sblock, zero_exp, zero_c,
     acc_emin, clamp_e, js, jc, win, rnd, c_after, c_inside, half_none, top_ovf,
     cpow) = stage_settings(prm)
    int32_sums = prm.int32_sums
    seed = prm.sr_seed
    rbits = prm.sr_bits
    acc = c[bi, i, j]
    for k0 in range(0, K, n):
        k1 = min(k0 + n, K)
        kb = k0 // n
        # C split: finite part, NaN/Inf part, exponent
        fin = isfinite(acc)
        cf = acc if fin else 0.0
        sp = 0.0 if fin else acc
        ec = max(exponent_of(cf), acc_emin) if cf != 0.0 else zero_c
        # ---- stage_specials (the raw products are exact: fma(a, b, sp) == a * b + sp)
        if has_special:
            for k in range(k0, k1):
                q = a_raw[bi, i, k] * b_raw[bi, k, j]
                if not isfinite(q):
                    sp += q
        if povf:
            ov = 0.0
            for k in range(k0, k1):
                q = a_raw[bi, i, k] * b_raw[bi, k, j]
                ov += math.copysign(math.inf, q) if abs(q) >= top_ovf else 0.0
            if sp == 0.0:
                sp = ov
        # ---- stage_terms: E of each lane (every exponent here fits the tile's int16 lanes)
        E0 = ec if c_inside else NO_TERM
        E1 = NO_TERM
        nt = 0
        if group_mode:
            for g0 in range(k0, k1, G):
                gs = 0.0
                for k in range(g0, min(g0 + G, k1)):
                    gs += a[bi, i, k] * b[bi, k, j]     # exact (check_staged_bits): fma agrees
                si = g0 // sblock
                tv = gs * sa[bi, i, si] * sb[bi, si, j]
                e = xa[bi, i, si] + xb[bi, si, j]
                if tv == 0.0 and zero_exp == NO_TERM:
                    e = NO_TERM                         # a zero group: no part in E
                gt[nt] = tv
                E0 = max(E0, e)
                nt += 1
        elif prm.normalized:        # floor(log2|a*b|) of each nonzero product
            for k in range(k0, k1):
                q = a[bi, i, k] * b[bi, k, j]
                e = exponent_of(q) if q != 0.0 else NO_TERM
                if (k - k0) & (L - 1) == 0:
                    E0 = max(E0, e)
                else:
                    E1 = max(E1, e)
        else:
            for k in range(k0, k1):
                e = np.int16(pa[bi, i, k] + pb[bi, k, j])     # ea + eb as the tile's int16
                if (k - k0) & (L - 1) == 0:
                    E0 = max(E0, e)
                else:
                    E1 = max(E1, e)
        has_term = E0 > half_none or (L == 2 and E1 > half_none)   # asymmetric join: a term here?
        E0 = max(E0, clamp_e)
        E1 = max(E1, clamp_e)
        sc0 = pow2(f - E0)
        sc1 = pow2(f - E1)
        # ---- stage_align: terms onto their lane's grid, exact sums
        S0 = 0.0
        S1 = 0.0
        if group_mode:
            for t in range(nt):
                S0 += trunc(gt[t] * sc0)
        elif int32_sums:
            # truncated float32 terms as int32 (tcsim.route.staged_int32_sums): the float -> int32
            # conversion truncates toward zero; the scale cap binds only without products
            c0 = np.float32(min(sc0, F32_SCALE_CAP))
            c1 = np.float32(min(sc1, F32_SCALE_CAP))
            T0 = 0      # the tile's int32 sums: n + 1 terms never leave int32 (staged_int32_sums)
            T1 = 0
            for k in range(k0, k1):
                ak = a32[bi, i, k]
                if ak == 0.0:
                    continue
                if (k - k0) & (L - 1) == 0:
                    T0 += np.int32(ak * b32[bi, k, j] * c0)
                else:
                    T1 += np.int32(ak * b32[bi, k, j] * c1)
            S0 = np.float64(T0)
            S1 = np.float64(T1)
        else:
            for k in range(k0, k1):
                ak = a[bi, i, k]
                if ak == 0.0:
                    continue
                u = NO_RANDOM
                if term == SR:
                    u = sr_random(seed, bi, i, j, TERM_K + k, rbits)
                if (k - k0) & (L - 1) == 0:
                    S0 += _round_term(ak * b[bi, k, j] * sc0, term, u, rbits)
                else:
                    S1 += _round_term(ak * b[bi, k, j] * sc1, term, u, rbits)
        if c_inside:                # C inside: one more lane-0 term
            u = NO_RANDOM
            if term == SR:
                u = sr_random(seed, bi, i, j, TERM_C + kb, rbits)
            S0 += _round_term(cf * sc0, term, u, rbits)
        # ---- stage_lanes: the smaller lane rounded down onto the larger one's grid
        if L == 2:
            E = max(E0, E1)
            S0 = floor_pow2(S0, E0 - E) + floor_pow2(S1, E1 - E)
            E0 = E
        # ---- stage_join
        lo = NO_RESIDUAL
        if c_after:                 # product sum rounded, then TwoSum with C
            x = S0 * pow2(E0 - f)
            x = round_product_sum(x, NO_RESIDUAL, prm) if x != 0.0 else 0.0
            v = x + cf
            yv = v - x
            lo = (x - (v - yv)) + (cf - yv)     # v + lo == x + cf exactly
        elif c_asymmetric:
            E2 = max(E0 if has_term else NO_TERM, ec)
            E2c = max(E2, JOIN_MIN_EXP)
            s_units = floor_pow2(S0, E0 - f - E2c + js) if has_term else 0.0
            keep = (cf != 0.0) and (win < 0 or ec >= E2 - win)
            cu = floor(cf * pow2(max(jc - E2c, JOIN_C_MIN_SHIFT))) if keep else 0.0
            # cu * cpow is an integer times a power of two (exact): fma == mul + add
            v = (s_units + cu * cpow) * pow2(E2c - js) if E2 != NO_TERM else 0.0
        else:
            v = S0 * pow2(E0 - f)
        # ---- stage_round
        if sp != 0.0:
            acc = sp
        elif v == 0.0:
            acc = stage_round_zero_at(a[bi, i], b, bi, k0, k1, j, cf, prm)
        else:
            u = sr_random(seed, bi, i, j, kb, rbits) if rnd == SR else NO_RANDOM
            acc = round_result(v, lo, prm, u)
    return acc


@njit(cache=True, inline="always")
def _flush32(q, flush):
    """A binary32 tree node flushed to a zero of its sign below 2^-126 (prm.flush_nodes)."""
    return q * ZERO32 if (flush and abs(q) < TINY32) else q


@njit(cache=True)
def _tree32_output(a_raw, b_raw, c, prm, bi, i, j, buf):
    """Output (bi, i, j) of a pairwise tree whose every node is a binary32 RNE operation:
    staged._staged_tile's ``pairwise_tree`` stage (stage_tree) for one output. Per block: the product
    nodes fma(a, b, +0) (tree_leaf32) and the first level in one pass, a short last block
    padded with +0 products, then the balanced tree, then acc + tree (IEEE: Inf and NaN too),
    every node flushed when prm.flush_nodes. buf: scratch of (block + 1) // 2 float32."""
    K = a_raw.shape[2]
    n = prm.block
    flush = prm.flush_nodes
    acc = c[bi, i, j]
    half = (n + 1) // 2
    for k0 in range(0, K, n):
        k1 = min(k0 + n, K)
        for t in range(half):
            k = k0 + 2 * t
            if k + 1 < k1 and n > 1:
                q0 = _flush32(tree_leaf32(a_raw[bi, i, k] * b_raw[bi, k, j]), flush)
                q1 = _flush32(tree_leaf32(a_raw[bi, i, k + 1] * b_raw[bi, k + 1, j]), flush)
                buf[t] = _flush32(q0 + q1, flush)
            else:       # n == 1, or the end of a short last block (+0 padding products)
                q = ZERO32
                if k < k1:
                    q = _flush32(tree_leaf32(a_raw[bi, i, k] * b_raw[bi, k, j]), flush)
                if n > 1:       # + the +0 padding partner
                    q = _flush32(q + ZERO32, flush)
                buf[t] = q
        width = half
        while width > 1:
            hw = width // 2
            for t in range(hw):
                buf[t] = _flush32(buf[2 * t] + buf[2 * t + 1], flush)
            width = hw
        acc = np.float64(_flush32(np.float32(acc) + buf[0], flush))
    return acc


# ---- kernels ---------------------------------------------------------------------------------

if _backend.simulated():
    def _dev(x):
        """Under the CUDA simulator: the numpy array behind a simulated device array, so that
        the CPU-compiled stage functions accept it."""
        return getattr(x, "_ary", x)
else:
    @cuda.jit(device=True, inline=True)
    def _dev(x):
        """On the device: the array itself."""
        return x


@cuda.jit(device=True, inline=True)
def _output_index(t, d):
    """(bi, i, j) of output t of d (NB, M, N), j fastest (neighbouring threads read neighbouring
    columns of B)."""
    M = d.shape[1]
    N = d.shape[2]
    bi = t // (M * N)
    r = t - bi * (M * N)
    i = r // N
    return bi, i, r - i * N


@cuda.jit
def _fused_kernel(a, b, a_raw, b_raw, pa, pb, c, sa, xa, sb, xb, a32, b32, prm, d):
    """d[bi, i, j] = _fused_output(...), one thread per output."""
    t = cuda.grid(1)
    if t < d.shape[0] * d.shape[1] * d.shape[2]:
        bi, i, j = _output_index(t, d)
        gt = cuda.local.array(MAX_GROUPS, np.float64)
        _dev(d)[bi, i, j] = _fused_output(_dev(a), _dev(b), _dev(a_raw), _dev(b_raw), _dev(pa),
                                          _dev(pb), _dev(c), _dev(sa), _dev(xa), _dev(sb),
                                          _dev(xb), _dev(a32), _dev(b32), prm, bi, i, j, gt)


@cuda.jit
def _tree32_kernel(a_raw, b_raw, c, prm, d):
    """d[bi, i, j] = _tree32_output(...), one thread per output."""
    t = cuda.grid(1)
    if t < d.shape[0] * d.shape[1] * d.shape[2]:
        bi, i, j = _output_index(t, d)
        buf = cuda.local.array(MAX_TREE32, np.float32)
        _dev(d)[bi, i, j] = _tree32_output(_dev(a_raw), _dev(b_raw), _dev(c), prm, bi, i, j, buf)


@cuda.jit
def _tree_kernel(a_raw, bT_raw, c, prm, d):
    """d[bi, i, j] = staged.pairwise_dot(row i of A, column j of B, C), one thread per output
    (the CPU's output-by-output route, _staged_rows, for one output)."""
    t = cuda.grid(1)
    if t < d.shape[0] * d.shape[1] * d.shape[2]:
        bi, i, j = _output_index(t, d)
        buf = cuda.local.array(MAX_TREE, np.float64)
        _dev(d)[bi, i, j] = pairwise_dot(_dev(a_raw)[bi, i], _dev(bT_raw)[bi, j],
                                          _dev(c)[bi, i, j], prm, buf)


def staged_kernel(a, b, a_raw, b_raw, bT_raw, pa, pb, c, sa, xa, sb, xb, a32, b32, prm):
    """D = A*B + C through a chain of staged block FMAs on the GPU: the contract of
    tcsim._kernels.staged.staged_kernel (the same arguments, as device arrays, C-contiguous)
    and its bits. Returns a device float64 array D (NB, M, N). Raises DeviceError for a
    datapath these kernels do not serve (:func:`unserved`)."""
    why = unserved(prm)
    if why is not None:
        raise DeviceError(f"device='cuda': {why}")
    NB, M, _ = a.shape
    N = b.shape[2]
    d = cuda.device_array((NB, M, N), dtype=np.float64)
    grid = _backend.blocks(NB * M * N)
    if prm.tiled and prm.pairwise:
        _tree32_kernel[grid, _backend.THREADS](a_raw, b_raw, c, prm, d)
    elif prm.tiled:
        _fused_kernel[grid, _backend.THREADS](a, b, a_raw, b_raw, pa, pb, c, sa, xa, sb, xb,
                                               a32, b32, prm, d)
    else:
        _tree_kernel[grid, _backend.THREADS](a_raw, bT_raw, c, prm, d)
    return d


# ---- compile signatures (CI's PTX check: tcsim.cuda.ptx) --------------------------------------

def _signatures():
    """The one argument signature of each kernel: C-contiguous 3-D arrays, KernelParams."""
    prm_type = typeof(kernel_params(Datapath(block_size=4, fraction_bits=24), "fp32", 4,
                                          False))
    f64 = types.float64[:, :, ::1]
    f32 = types.float32[:, :, ::1]
    i16 = types.int16[:, :, ::1]
    i64 = types.int64[:, :, ::1]
    fused = (f64, f64, f64, f64, i16, i16, f64, f64, i64, f64, i64, f32, f32, prm_type, f64)
    tree = (f64, f64, f64, prm_type, f64)
    return fused, tree


_FUSED_SIG, _TREE_SIG = _signatures()
KERNELS = {
    "staged_fused": (_fused_kernel, _FUSED_SIG),
    "staged_tree32": (_tree32_kernel, _TREE_SIG),
    "staged_tree": (_tree_kernel, _TREE_SIG),
}
