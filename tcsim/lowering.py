"""Instructions that the compiler lowers onto other matrix instructions.

Hopper has no FP8 ``mma.sync``: for ``mma.sync.m16n8k32`` with e4m3/e5m2 operands on sm_90 the
compiler unpacks each register of four FP8 codes into two f16x2 registers (exact: every FP8
value is an fp16 value), issues two FP16 ``HMMA.16816`` steps from a zero accumulator, the second
taking the first's result as its C, and adds the instruction's C last (an HADD / FADD). The
unpack puts bytes 0-1 of each register (k = 4t, 4t + 1 and 16 + 4t, 16 + 4t + 1) in the first
HMMA and bytes 2-3 in the second, so the first step sums the products with k mod 4 in {0, 1}.

A datapath describes this with ``lowered_k`` (32: the lowered instruction's K) and ``k_order``
(the order in which its products enter the blocks of the inner datapath, here the HMMA's
16-blocks). Evidence: corpus H100/H200 E4M3/E5M2 d_fp16 (recorded by Khattak & Mikaitis with
``mma.sync.aligned.m16n8k32.row.col.f16.{e4m3,e5m2}``, C = __float2half(c)) is reproduced on
all 20000 rows; putting C into the first step, swapping the two groups or splitting K at 16
instead leaves 1000-2000 rows per set wrong.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .datapath import Datapath

# k mod 4 in {0, 1} first, then k mod 4 in {2, 3}: the FP8 -> f16x2 unpack of a k32 fragment
HOPPER_FP8_MMA_SYNC_K_ORDER = tuple([k for k in range(32) if k % 4 < 2] +
                                    [k for k in range(32) if k % 4 >= 2])


def add_rounded(s: np.ndarray, c: np.ndarray, acc: str) -> np.ndarray:
    """s + c with one round-to-nearest-even into ``acc`` (IEEE: signed zeros, Inf, NaN).

    fp16 operands: their float64 sum is exact (exponents within 2^-24 .. 2^15, 11-bit
    significands: at most 51 bits), so one cast to float16 is the single rounding. fp32: numpy's
    float32 addition is IEEE binary32 addition (round to nearest even, subnormals kept).
    """
    with np.errstate(invalid="ignore", over="ignore"):     # Inf - Inf is NaN, as in IEEE
        if acc == "fp16":
            return (s.astype(np.float64) + c.astype(np.float64)).astype(np.float16)
        return s.astype(np.float32) + c.astype(np.float32)


# outputs (instructions x M x N) per inner kernel call: bounds the memory of the batched chain
MAX_BATCH_OUTPUTS = 1 << 22


def run_lowered(av: np.ndarray, bv: np.ndarray, cv: np.ndarray, dp: Datapath, a_fmt: str,
                b_fmt: str, acc: str, run_inner: Callable) -> np.ndarray:
    """A lowered instruction chain: for every ``dp.lowered_k`` products (K zero-padded to a
    multiple, as the instruction itself pads), the inner datapath runs its blocks from C = 0 on
    the products in ``dp.k_order``; the incoming C is added last (:func:`add_rounded`) and the
    result is the next instruction's C. av (B, M, K), bv (B, K, N), cv (B, M, N) float64;
    ``run_inner`` is :func:`tcsim.mma.run_datapath`. Returns acc-dtype values.

    The inner steps start from zero, so they do not depend on each other: all of them run as
    one batch of B * steps inner MMAs in one kernel call (several calls only when the batch
    would exceed MAX_BATCH_OUTPUTS outputs); only the adds of C are sequential."""
    n = dp.lowered_k
    order = np.asarray(dp.k_order or range(n), dtype=np.int64)
    inner = dp.replace(lowered_k=None, k_order=())
    nb, m, k = av.shape
    cols = bv.shape[2]
    pad = -k % n
    if pad:
        av = np.concatenate([av, np.zeros(av.shape[:2] + (pad,))], axis=2)
        bv = np.concatenate([bv, np.zeros((bv.shape[0], pad, bv.shape[2]))], axis=1)
    steps = (k + pad) // n
    # step j of batch item i takes k = j*n + order: a (B, M, steps, n) -> (B, steps, M, n)
    a_steps = av.reshape(nb, m, steps, n)[..., order].transpose(0, 2, 1, 3)
    b_steps = bv.reshape(nb, steps, n, cols)[:, :, order, :]
    per_call = max(1, MAX_BATCH_OUTPUTS // max(1, nb * m * cols))
    d = cv.astype(np.float16 if acc == "fp16" else np.float32)
    for j0 in range(0, steps, per_call):
        j1 = min(steps, j0 + per_call)
        width = j1 - j0
        sa = np.ascontiguousarray(a_steps[:, j0:j1]).reshape(nb * width, m, n)
        sb = np.ascontiguousarray(b_steps[:, j0:j1]).reshape(nb * width, n, cols)
        s = run_inner(sa, sb, np.zeros((nb * width, m, cols)), inner, a_fmt, b_fmt, acc)
        s = s.reshape(nb, width, m, cols)
        for j in range(width):        # the adds of C, in turn: each rounded once into acc
            d = add_rounded(s[:, j], d, acc)
    return d
