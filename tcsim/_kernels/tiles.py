"""The tile driver shared by the kernels (private): output tiles numbered in
one order, and a nogil numba kernel run on several threads.

A kernel compiled with ``nogil=True`` takes two last arguments ``first, step`` and does the
work items first, first + step, first + 2 step, ...; :func:`run_strided` calls it once per
thread. Each work item (an output tile) is computed whole by one call, so results do not depend
on the thread count. This replaces numba's ``parallel=True`` loops, whose compilation cost
several seconds of every cold start; the thread count follows numba's (NUMBA_NUM_THREADS,
numba.set_num_threads).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from numba import get_num_threads, njit

_pools: dict = {}
# A forked child (a sweep's process pool) inherits the dict but not the pool's threads: it
# must start its own pools, or its first parallel kernel call would wait forever.
os.register_at_fork(after_in_child=_pools.clear)


def _pool(threads: int) -> ThreadPoolExecutor:
    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="tcsim")
    return _pools[threads]


def run_strided(kernel, n_items: int, *args) -> None:
    """kernel(*args, first, step) for first = 0 .. threads - 1 (step = threads), on threads."""
    threads = max(1, min(get_num_threads(), n_items))
    if threads == 1:
        kernel(*args, 0, 1)
        return
    futures = [_pool(threads).submit(kernel, *args, t, threads) for t in range(threads)]
    for f in futures:
        f.result()


@njit(cache=True, inline="always")
def tile_count(nb, m, n, rows, cols):
    """Number of rows x cols output tiles of a batch of nb m x n outputs."""
    return nb * -(-m // rows) * -(-n // cols)


@njit(cache=True, inline="always")
def tile_origin(t, m, n, rows, cols):
    """(bi, i0, j0) of tile t: tiles run along N, then down M, then over the batch."""
    n_ti = (m + rows - 1) // rows
    n_tj = (n + cols - 1) // cols
    return t // (n_ti * n_tj), ((t // n_tj) % n_ti) * rows, (t % n_tj) * cols
