"""Block scales on the GPU: what tcsim.mma.run_datapath does to block-scaled operands before
the kernels, as elementwise device kernels with the same bits.

- a NaN scale makes its whole K block of that row (a) / column (b) NaN
  (docs/hardware.md#blackwell-block-scaled);
- block_scale "exponent" (tcgen05 kind::mxf8f6f4): each operand is pre-scaled by its power of
  two 2^X (an exact scaling: ldexp) and its exponent shifted by X (zeros keep NO_TERM), so the
  plain block FMA computes the scaled products a*2^Xa * b*2^Xb at exponent (ea+Xa) + (eb+Xb).
"""

from __future__ import annotations

import math

from ..kernel_constants import NO_TERM
from . import THREADS, blocks, cuda

_cuda = cuda()


@_cuda.jit
def _nan_blocks_a(av, sa, block):
    """av[bi, i, k] = NaN where sa[bi, i, k // block] is NaN (av: B x M x K)."""
    t = _cuda.grid(1)
    nb, m, k = av.shape
    if t < nb * m * k:
        bi, r = t // (m * k), t % (m * k)
        i, kk = r // k, r % k
        s = sa[bi, i, kk // block]
        if s != s:
            av[bi, i, kk] = math.nan


@_cuda.jit
def _nan_blocks_b(bv, sb, block):
    """bv[bi, k, j] = NaN where sb[bi, k // block, j] is NaN (bv: B x K x N)."""
    t = _cuda.grid(1)
    nb, k, n = bv.shape
    if t < nb * k * n:
        bi, r = t // (k * n), t % (k * n)
        kk, j = r // n, r % n
        s = sb[bi, kk // block, j]
        if s != s:
            bv[bi, kk, j] = math.nan


@_cuda.jit
def _prescale_a(fin, exps, xa, block):
    """fin[bi, i, k] *= 2^xa[bi, i, k // block] (ldexp: exact), exps += the same X unless it
    is NO_TERM (a zero takes no part in E)."""
    t = _cuda.grid(1)
    nb, m, k = fin.shape
    if t < nb * m * k:
        bi, r = t // (m * k), t % (m * k)
        i, kk = r // k, r % k
        x = xa[bi, i, kk // block]
        fin[bi, i, kk] = math.ldexp(fin[bi, i, kk], int(x))
        e = exps[bi, i, kk]
        if e != NO_TERM:
            exps[bi, i, kk] = e + x


@_cuda.jit
def _prescale_b(fin, exps, xb, block):
    """_prescale_a for b (K x N): the scale of b[bi, k, j] is xb[bi, k // block, j]."""
    t = _cuda.grid(1)
    nb, k, n = fin.shape
    if t < nb * k * n:
        bi, r = t // (k * n), t % (k * n)
        kk, j = r // n, r % n
        x = xb[bi, kk // block, j]
        fin[bi, kk, j] = math.ldexp(fin[bi, kk, j], int(x))
        e = exps[bi, kk, j]
        if e != NO_TERM:
            exps[bi, kk, j] = e + x


def nan_blocks(av, bv, sa, sb, block: int) -> None:
    """In place: the K blocks of av / bv whose scale is NaN become NaN."""
    _nan_blocks_a[blocks(av.size), THREADS](av, sa, block)
    _nan_blocks_b[blocks(bv.size), THREADS](bv, sb, block)


def prescale(a_fin, pa, xa, b_fin, pb, xb, block: int) -> None:
    """In place: block_scale "exponent" pre-scaling of both operands and their exponents."""
    _prescale_a[blocks(a_fin.size), THREADS](a_fin, pa, xa, block)
    _prescale_b[blocks(b_fin.size), THREADS](b_fin, pb, xb, block)


_A3 = "float64[:, :, :]"
KERNELS = {
    "nan_blocks_a": (_nan_blocks_a, f"void({_A3}, {_A3}, int64)"),
    "nan_blocks_b": (_nan_blocks_b, f"void({_A3}, {_A3}, int64)"),
    "prescale_a": (_prescale_a, f"void({_A3}, int16[:, :, :], int64[:, :, :], int64)"),
    "prescale_b": (_prescale_b, f"void({_A3}, int16[:, :, :], int64[:, :, :], int64)"),
}
