"""Lowered instruction chains on the GPU (tcsim.lowering on device arrays): Hopper's FP8
``mma.sync`` as two FP16 HMMA steps from a zero accumulator plus one rounded add of C.

The same steps as tcsim.lowering.run_lowered, each on the device: K zero-padded to a multiple of
``lowered_k`` and the products of each instruction put in ``k_order`` (one gather kernel per
operand), all inner instructions as one batched call of the inner datapath (routed again by
tcsim.cuda.run), then the adds of C in turn, each rounded once into the accumulator format
(tcsim.lowering.add_rounded: IEEE binary32 addition for fp32; for fp16 the float64 sum of two
fp16 values is exact, and its one RNE rounding to fp16 is round_pack's).
"""

from __future__ import annotations

import numpy as np

from .._kernels.roundpack import NO_FLUSH, NO_RANDOM, NO_RANDOM_BITS, NO_RESIDUAL, round_pack
from ..datapath import Datapath
from ..formats.catalog import get_format
from ..lowering import MAX_BATCH_OUTPUTS
from ..overflow import OVERFLOW_IEEE
from ..rounding import RNE
from . import THREADS, arrays, blocks, cuda, elementwise

_cuda = cuda()


@_cuda.jit
def _gather_a(av, order, n, j0, out):
    """out[bi * w + s, i, t] = av[bi, i, (j0 + s) * n + order[t]] (0 beyond K: the padding);
    out is (B * w, M, n) for instructions j0 .. j0 + w - 1."""
    idx = _cuda.grid(1)
    nbw, m, _ = out.shape
    if idx < nbw * m * n:
        q, t = idx // n, idx % n
        r, i = q // m, q % m
        nb = av.shape[0]
        w = nbw // nb
        bi, s = r // w, r % w
        k = (j0 + s) * n + order[t]
        out[r, i, t] = av[bi, i, k] if k < av.shape[2] else 0.0


@_cuda.jit
def _gather_b(bv, order, n, j0, out):
    """out[bi * w + s, t, j] = bv[bi, (j0 + s) * n + order[t], j] (0 beyond K)."""
    idx = _cuda.grid(1)
    nbw, _, cols = out.shape
    if idx < nbw * n * cols:
        q, j = idx // cols, idx % cols
        r, t = q // n, q % n
        nb = bv.shape[0]
        w = nbw // nb
        bi, s = r // w, r % w
        k = (j0 + s) * n + order[t]
        out[r, t, j] = bv[bi, k, j] if k < bv.shape[1] else 0.0


@_cuda.jit
def _add_rounded(s, step, w, d, fp16):
    """d[bi, i, j] = s[bi * w + step, i, j] + d[bi, i, j], rounded once into the accumulator
    (tcsim.lowering.add_rounded): fp32 one IEEE binary32 add; fp16 the exact float64 sum
    rounded to nearest-even on fp16's grid (p = 11, emin = -14, overflow to Inf). NaN / Inf
    sums are IEEE's already."""
    t = _cuda.grid(1)
    nb, m, cols = d.shape
    if t < nb * m * cols:
        bi, r = t // (m * cols), t % (m * cols)
        i, j = r // cols, r % cols
        x = s[bi * w + step, i, j]
        c = d[bi, i, j]
        if fp16:
            v = x + c                   # exact: two fp16 values
            if v - v == 0.0:            # finite
                v = round_pack(v, NO_RESIDUAL, 11, -14, 15, RNE, OVERFLOW_IEEE, NO_FLUSH,
                               NO_RANDOM, NO_RANDOM_BITS)
            d[bi, i, j] = v
        else:
            d[bi, i, j] = np.float64(np.float32(x) + np.float32(c))


def run_lowered(av, bv, cv, dp: Datapath, a_fmt: str, b_fmt: str, acc: str, run_inner):
    """tcsim.lowering.run_lowered on device arrays: av (B, M, K), bv (B, K, N), cv (B, M, N)
    float64; ``run_inner`` is tcsim.cuda.run.run_datapath. Returns float64 values of the
    accumulator format (B, M, N) on the device."""
    n = dp.lowered_k
    order = arrays.to_device(np.asarray(dp.k_order or range(n), dtype=np.int64))
    inner = dp.replace(lowered_k=None, k_order=())
    nb, m, k = (int(x) for x in av.shape)
    cols = int(bv.shape[2])
    steps = -(-k // n)
    per_call = max(1, MAX_BATCH_OUTPUTS // max(1, nb * m * cols))
    d = elementwise.copy(cv)
    fp16 = acc == "fp16"
    assert get_format(acc).precision in (11, 24)
    for j0 in range(0, steps, per_call):
        w = min(steps, j0 + per_call) - j0
        sa = arrays.empty((nb * w, m, n), np.float64)
        sb = arrays.empty((nb * w, n, cols), np.float64)
        _gather_a[blocks(sa.size), THREADS](av, order, n, j0, sa)
        _gather_b[blocks(sb.size), THREADS](bv, order, n, j0, sb)
        zeros = arrays.to_device(np.zeros((nb * w, m, cols)))
        s = elementwise.astype(run_inner(sa, sb, zeros, inner, a_fmt, b_fmt, acc), np.float64)
        for step in range(w):       # the adds of C, in turn: each rounded once into acc
            _add_rounded[blocks(d.size), THREADS](s, step, w, d, fp16)
    return d


_A3 = "float64[:, :, :]"
KERNELS = {
    "gather_a": (_gather_a, f"void({_A3}, int64[:], int64, int64, {_A3})"),
    "gather_b": (_gather_b, f"void({_A3}, int64[:], int64, int64, {_A3})"),
    "add_rounded": (_add_rounded, f"void({_A3}, int64, int64, {_A3}, boolean)"),
}
