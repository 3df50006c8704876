"""The fused float32 tile (tcsim._kernels.fused) as a CUDA kernel: the same bits on the device.

The algorithm is the CPU module's (its docstring states it): per output and per block of n
products, E from the int8 product exponents and C's float32 bits, every term onto the grid
2^(E-f) in integer units (products as trunc / rint(a*b * 2^(f-E)), C via ``c_units``), an exact
float32 sum, then the block rounding (``round_bits``, or the fp32-RZ mask) and the overflow /
flush rules. The per-element arithmetic is the CPU module's own ``@njit`` routines
(round_bits, c_units, pow2_f32, the int32 bit helpers), which numba-cuda compiles for the device;
the two per-output steps the CPU writes as row loops (``_setup_row`` and the RZ-mask loop of
``_fused_tile``) are restated below for one output, line for line.

Layout: a CUDA block of BLOCK_DIM x BLOCK_DIM threads computes a TILE_M x TILE_N output tile of
one batch entry, each thread ROWS_PER_THREAD x COLS_PER_THREAD outputs (rows ty + BLOCK_DIM r,
columns tx + BLOCK_DIM c, so that a warp reads consecutive B columns). The K chain runs in
chunks of K_CHUNK: A (TILE_M x K_CHUNK) and B (K_CHUNK x TILE_N) tiles of values and of exponents
are staged in shared memory. Each block of n products takes two passes (exponents for E, then
the products on E's grid); when n <= K_CHUNK the block is one chunk, staged once for both.

Deterministic: each output is computed whole by one thread, its terms added in K order. The
order does not matter anyway: every term is an integer number of grid units and any partial sum
of n + 1 of them is an integer below 2^24 (f + 2 + log2(n + 1) <= 24, tcsim.route), so every
float32 addition is exact and the sum is the same in any grouping.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types

from .. import cuda as tcsim_cuda
from .._kernels import scalar
from .._kernels.fused import (
    I32,
    NO_EXP,
    NO_PRODUCT,
    ROUND_RNE,
    SIGN32,
    TERM_RNE,
    ZERO_EXP8,
    c_units,
    f32_as_i32,
    i32_as_f32,
    pow2_f32,
    round_bits,
    shl32,
    sra32,
)
from ..kernel_constants import NO_TERM
from ..overflow import OVERFLOW_IEEE, OVERFLOW_INF
from .elementwise import astype
from .prep import device_array, flat, launch

cuda = tcsim_cuda.cuda()

BLOCK_DIM = 16              # threads per side of a CUDA block (256 threads)
ROWS_PER_THREAD = 2         # outputs per thread: rows ty + BLOCK_DIM * r
COLS_PER_THREAD = 4         # ... and columns tx + BLOCK_DIM * c
TILE_M = BLOCK_DIM * ROWS_PER_THREAD     # output rows of a CUDA block
TILE_N = BLOCK_DIM * COLS_PER_THREAD     # output columns of a CUDA block
K_CHUNK = 32                # K elements of A and B staged in shared memory at a time
A_STRIDE = K_CHUNK + 1      # row stride of the A tiles: rows ty and ty + 1 in different banks
OUTS = ROWS_PER_THREAD * COLS_PER_THREAD
NTHREADS = BLOCK_DIM * BLOCK_DIM


@njit(cache=True, inline="always")
def block_setup(x, e_prod, f, emin, product_floor, e_floor, rne):
    """(S, scale, unit) of one output at the start of a block: tcsim._kernels.fused._setup_row
    for one output. x the running C (float32), e_prod the block's largest product exponent
    (NO_EXP if none). E = max(exp(C), e_prod, e_floor) with exp(C) = max(eb - 127, emin) from C's
    bits (a zero C: no term) and a product exponent below product_floor no term;
    scale = 2^(f-E) (value -> grid units, clamped to the normal range: only a block of zero
    products leaves it), unit = 2^(E-f) (grid units -> value), S = C in grid units
    (``c_units``)."""
    xb = f32_as_i32(x)
    e_c = I32(max(I32(I32(sra32(xb, 23) & 0xFF) - 127), emin))
    e_c = e_c if I32(xb & 0x7FFFFFFF) != 0 else I32(NO_EXP)
    e_p = I32(e_prod)
    e_p = e_p if e_p >= product_floor else I32(NO_EXP)
    E = I32(max(max(e_c, e_p), e_floor))
    scale = i32_as_f32(shl32(I32(127 + min(max(I32(f - E), -126), 127)), 23))
    unit = pow2_f32(I32(min(max(I32(E - f), -149), 127)))
    return c_units(xb, I32(E - f), rne), scale, unit


@njit(cache=True, inline="always")
def block_round(x, s, unit, p, emin, out_rne, top, big, flush_below, rz_mask, rz_bits):
    """The running C after a block: v = S * 2^(E-f) (exact: a power-of-two scaling of an integer
    below 2^24, Inf only when v >= 2^128) rounded by ``round_bits``, or for fp32 output toward
    zero by clearing the low 24 - p fraction bits (``rz_mask``: the mask loop of
    tcsim._kernels.fused._fused_tile for one output, with the same flush and overflow rules);
    an exact zero gives +0, and a NaN/Inf x (an earlier overflow) stays."""
    v = s * unit        # exact (see above): no rounding for fma contraction to skip
    if rz_mask:
        vb = f32_as_i32(v)
        res = i32_as_f32(I32(vb & rz_bits))
        zero = i32_as_f32(I32(vb & SIGN32))                 # 0 with v's sign
        res = res if abs(res) >= flush_below else zero
        res = res if v - v == 0.0 else (big if v > 0.0 else -big)
    else:
        res = round_bits(v, p, emin, out_rne, top, big, flush_below)
    res = res if v != 0.0 else np.float32(0.0)
    return res if scalar.isfinite(x) else x


@njit(cache=True, inline="always")
def grid_term(a, b, s, rne):
    """One product a*b in grid units: a*b is exact in float32 (route.FLOAT32_PRODUCT_FORMATS) and
    s = 2^(f-E) an exact power-of-two scaling, so both ``*`` are exact (an fma contraction could
    change nothing) and rint / trunc of it is the term rounded nearest-even / truncated."""
    t = a * b * s
    return scalar.rint(t) if rne else scalar.trunc(t)


@cuda.jit(device=True, inline="always")
def stage(src, dst, bi, r0, c0, nrows, ncols, rows_in, cols_in, tid):
    """dst[rr, cc] = src[bi, r0 + rr, c0 + cc] for rr < nrows, cc < ncols, or 0 outside
    rr < rows_in, cc < cols_in (past D's edge or the block's end); the threads of the CUDA block
    share the elements out (thread tid takes tid, tid + NTHREADS, ...: consecutive threads read
    consecutive columns, coalesced). A device function, not @njit: src is a kernel argument,
    which the simulator passes as its own array type."""
    for t in range(tid, nrows * ncols, NTHREADS):
        rr = t // ncols
        cc = t - rr * ncols
        dst[rr, cc] = src[bi, r0 + rr, c0 + cc] if rr < rows_in and cc < cols_in else 0


@njit(cache=True, inline="always")
def chunk_exponents(pa_s, pb_s, ep, ty, tx, width):
    """ep = max(ep, ea + eb) over the first ``width`` k of the staged exponent tiles, for this
    thread's outputs (padding outputs included: they are never stored). ea + eb in int32 equals
    the CPU kernel's int8 sum: it cannot overflow int8 (see fused.ZERO_EXP8)."""
    for kk in range(width):
        for r in range(ROWS_PER_THREAD):
            ea = I32(pa_s[ty + BLOCK_DIM * r, kk])
            for q in range(COLS_PER_THREAD):
                o = r * COLS_PER_THREAD + q
                ep[o] = max(ep[o], I32(ea + I32(pb_s[kk, tx + BLOCK_DIM * q])))


@njit(cache=True, inline="always")
def chunk_terms(a_s, b_s, s, scale, ty, tx, width, rne):
    """s += the terms (``grid_term``) of the first ``width`` k of the staged value tiles, for
    this thread's outputs, in K order (the order does not matter: exact integer sums)."""
    for kk in range(width):
        for r in range(ROWS_PER_THREAD):
            av = a_s[ty + BLOCK_DIM * r, kk]
            for q in range(COLS_PER_THREAD):
                o = r * COLS_PER_THREAD + q
                s[o] += grid_term(av, b_s[kk, tx + BLOCK_DIM * q], scale[o], rne)


@cuda.jit
def fused_tile_kernel(a, b, pa, pb, c, d, n, f, p, emin, product_floor, e_floor, term_rne,
                      out_rne, top, big, flush_below, rz_mask, rz_bits):
    """D = A*B + C through the chain of fused block FMAs; grid (column tiles, row tiles, batch),
    blocks of BLOCK_DIM x BLOCK_DIM threads (see the module docstring). a (NB, M, K), b (NB, K, N)
    float32 values, pa, pb their int8 exponents (:func:`int8_exponents`), c, d (NB, M, N) float32;
    the settings are those of tcsim._kernels.fused._fused_tile, derived by :func:`settings`."""
    NB, M, K = a.shape
    N = b.shape[2]
    bi = cuda.blockIdx.z
    i0 = cuda.blockIdx.y * TILE_M
    j0 = cuda.blockIdx.x * TILE_N
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * BLOCK_DIM + tx
    a_s = cuda.shared.array((TILE_M, A_STRIDE), types.float32)
    b_s = cuda.shared.array((K_CHUNK, TILE_N), types.float32)
    pa_s = cuda.shared.array((TILE_M, A_STRIDE), types.int8)
    pb_s = cuda.shared.array((K_CHUNK, TILE_N), types.int8)
    acc = cuda.local.array(OUTS, types.float32)     # the running C
    ep = cuda.local.array(OUTS, types.int32)        # the block's largest product exponent
    s = cuda.local.array(OUTS, types.float32)       # block sum in grid units
    scale = cuda.local.array(OUTS, types.float32)   # 2^(f-E)
    unit = cuda.local.array(OUTS, types.float32)    # 2^(E-f)
    # this thread's outputs inside D: rows r < rows, columns q < cols (fewer only at the edges)
    rows = min(ROWS_PER_THREAD, max(0, (M - i0 - ty + BLOCK_DIM - 1) // BLOCK_DIM))
    cols = min(COLS_PER_THREAD, max(0, (N - j0 - tx + BLOCK_DIM - 1) // BLOCK_DIM))
    for r in range(ROWS_PER_THREAD):
        for q in range(COLS_PER_THREAD):
            o = r * COLS_PER_THREAD + q
            inside = r < rows and q < cols
            acc[o] = c[bi, i0 + ty + BLOCK_DIM * r, j0 + tx + BLOCK_DIM * q] if inside else 0.0
            s[o] = np.float32(0.0)
            unit[o] = np.float32(0.0)
    # a block is one chunk: its values and exponents are staged together, once
    block_in_one_chunk = n <= K_CHUNK
    for k0 in range(0, K + n, n):
        k1 = min(k0 + n, K)
        last = k0 >= K          # one pass after the last block: its rounding only
        if not last:
            for o in range(OUTS):
                ep[o] = NO_EXP
            for kc in range(k0, k1, K_CHUNK):
                width = I32(min(K_CHUNK, k1 - kc))      # (int32: a 32-bit loop counter)
                stage(pa, pa_s, bi, i0, kc, TILE_M, K_CHUNK, M - i0, width, tid)
                stage(pb, pb_s, bi, kc, j0, K_CHUNK, TILE_N, width, N - j0, tid)
                if block_in_one_chunk:
                    stage(a, a_s, bi, i0, kc, TILE_M, K_CHUNK, M - i0, width, tid)
                    stage(b, b_s, bi, kc, j0, K_CHUNK, TILE_N, width, N - j0, tid)
                cuda.syncthreads()
                chunk_exponents(pa_s, pb_s, ep, ty, tx, width)
                cuda.syncthreads()
        # round the previous block, then E, the scales and C's term of this one
        for o in range(OUTS):
            if o // COLS_PER_THREAD >= rows or o % COLS_PER_THREAD >= cols:
                continue
            if k0 > 0:
                acc[o] = block_round(acc[o], s[o], unit[o], p, emin, out_rne, top, big,
                                     flush_below, rz_mask, rz_bits)
            if not last:
                so, sco, uo = block_setup(acc[o], ep[o], f, emin, product_floor, e_floor, term_rne)
                s[o] = so
                scale[o] = sco
                unit[o] = uo
        if last:
            break
        for kc in range(k0, k1, K_CHUNK):
            width = I32(min(K_CHUNK, k1 - kc))
            if not block_in_one_chunk:
                stage(a, a_s, bi, i0, kc, TILE_M, K_CHUNK, M - i0, width, tid)
                stage(b, b_s, bi, kc, j0, K_CHUNK, TILE_N, width, N - j0, tid)
                cuda.syncthreads()
            if term_rne:        # (a literal flag per call: each inlines to its own loop)
                chunk_terms(a_s, b_s, s, scale, ty, tx, width, True)
            else:
                chunk_terms(a_s, b_s, s, scale, ty, tx, width, False)
            cuda.syncthreads()
    for r in range(ROWS_PER_THREAD):
        for q in range(COLS_PER_THREAD):
            if r < rows and q < cols:
                d[bi, i0 + ty + BLOCK_DIM * r, j0 + tx + BLOCK_DIM * q] = \
                    acc[r * COLS_PER_THREAD + q]


@cuda.jit
def int8_exponents_kernel(src, no_term, zero_exp, dst):
    """dst[i] = int8 of the int16 exponent src[i], ``no_term`` (a zero) as ``zero_exp``
    (tcsim._kernels.fused.int8_exponents, one thread per element; flat arrays)."""
    i = cuda.grid(1)
    if i < src.size:
        e = src[i]
        dst[i] = zero_exp if e == no_term else e


def _arr(dims, dtype):
    return types.Array(dtype, dims, "C")


# The compiled signatures (one per kernel).
_I = types.int64
KERNELS = {
    "fused_tile_kernel": (fused_tile_kernel, (
        _arr(3, types.float32), _arr(3, types.float32), _arr(3, types.int8), _arr(3, types.int8),
        _arr(3, types.float32), _arr(3, types.float32), _I, _I, _I, _I, _I, _I, types.boolean,
        types.boolean, types.float32, types.float32, types.float32, types.boolean, _I)),
    "int8_exponents_kernel": (int8_exponents_kernel, (_arr(1, types.int16), _I, _I,
                                                      _arr(1, types.int8))),
}


def settings(prm, zeros_in_e: bool) -> tuple:
    """The kernel's settings from a tcsim.params.KernelParams, derived as
    tcsim._kernels.fused._fused_tile derives them from its arguments: (f, p, emin,
    product_floor, e_floor, term_rne, out_rne, top, big, flush_below, rz_mask, rz_bits), ints
    as Python ints (int64), floats as float32; zeros_in_e: zero operands take part in E."""
    p, emin, emax = int(prm.out_prec), int(prm.acc_emin), int(prm.acc_emax)
    out_rne = int(prm.out_rnd) == ROUND_RNE
    # the largest p-bit value of the output format, and what a result beyond it becomes
    top = np.float32(math.ldexp(float((1 << p) - 1), emax - p + 1))
    big = top
    if int(prm.overflow) == OVERFLOW_INF or (int(prm.overflow) == OVERFLOW_IEEE and out_rne):
        big = np.float32(np.inf)
    flush_below = np.float32(math.ldexp(1.0, emin)) if prm.flush_out else np.float32(0.0)
    product_floor = NO_EXP if zeros_in_e else NO_PRODUCT
    e_floor = max(int(prm.min_exp), NO_EXP)
    # fp32 output (emin = -126) toward zero: clear the low 24 - p fraction bits (round_bits)
    rz_mask = emin == -126 and not out_rne
    rz_bits = -(1 << (24 - p))
    return (int(prm.frac), p, emin, product_floor, e_floor, int(prm.term) == TERM_RNE, out_rne,
            top, big, flush_below, bool(rz_mask), rz_bits)


def int8_exponents(exps16, zero_exp: int):
    """int16 exponents on the device (NO_TERM for a zero) -> a new int8 device array, a zero as
    ``zero_exp`` (tcsim._kernels.fused.int8_exponents)."""
    src = device_array(exps16, np.int16)
    out = cuda.device_array(src.shape, np.int8)
    if src.size:
        launch(int8_exponents_kernel, src.size)(flat(src), NO_TERM, int(zero_exp), flat(out))
    return out


def as_float32(x):
    """A float device array (or host array) as a float32 device array; exact for values of the
    float32 / float16 output formats (tcsim.cuda.elementwise.astype)."""
    return astype(device_array(x), np.float32)


def run(a32, b32, pa16, pb16, cv, prm):
    """tcsim._kernels.fused.run on the device: a32 / b32 (NB, M, K) / (NB, K, N) float32 values,
    pa16 / pb16 their int16 exponents (NO_TERM for a zero), cv the start accumulator (NB, M, N)
    (any float dtype), prm the tcsim.params.KernelParams of a datapath tcsim.route sends to the
    fused kernel. Device arrays (or host arrays, copied over); returns float32 D (NB, M, N) as a
    device array, the same bits as the CPU kernel."""
    a, b = device_array(a32, np.float32), device_array(b32, np.float32)
    zeros_in_e = prm.zero_exp != NO_TERM    # zero operands take part in E
    zero_exp = prm.zero_exp if zeros_in_e else ZERO_EXP8
    pa, pb = int8_exponents(pa16, zero_exp), int8_exponents(pb16, zero_exp)
    c = as_float32(cv)
    NB, M, K = a.shape
    N = b.shape[2]
    d = cuda.device_array((NB, M, N), np.float32)
    if d.size == 0:
        return d
    grid = ((N + TILE_N - 1) // TILE_N, (M + TILE_M - 1) // TILE_M, NB)
    fused_tile_kernel[grid, (BLOCK_DIM, BLOCK_DIM)](a, b, pa, pb, c, d, int(prm.block),
                                                    *settings(prm, zeros_in_e))
    return d
