"""A float64 matrix product whose bits depend on nothing but its inputs (private).

BLAS dgemm / ddot sum in an order set by their blocking, vector width and thread split, so the
same product can differ in its last bits between machines, library builds and thread counts.
Here each output is summed over k = 0, 1, ... in that order: out[i, j] = (((0 + p0) + p1) + ...)
with p_k = a[i, k] * b[k, j] (exact when a and b hold float32 or bf16 values). Serial on purpose:
numba starting its thread pool resets the OpenMP thread count that torch shares (the training
statistics, tcsim.torch.stats, call this between torch operations).
"""

from __future__ import annotations

from numba import njit


@njit(cache=True)
def ordered_matmul_kernel(a, b, out):
    """out = a @ b for C-contiguous float64 a (M, K), b (K, N), out (M, N) zeroed, each output
    summed in ascending k. Row by row: the inner loop runs along a row of b and of out, so it
    vectorises across j without reordering any output's sum."""
    m, k = a.shape
    n = b.shape[1]
    for i in range(m):
        for kk in range(k):
            aik = a[i, kk]
            for j in range(n):
                out[i, j] += aik * b[kk, j]
