"""Thread count of small kernel calls (private).

A numba parallel region costs a fork and a join of its threads; on small work, and above all on
a loaded machine where a worker thread waits for a core, that costs more than the work (two
threads made tcsim.gemm several times slower than one on per-chunk calls). Calls below
``PARALLEL_MIN_WORK`` elements run on the calling thread. Every kernel that uses this computes
each output whole in one thread, so the thread count never changes a result.
"""

from __future__ import annotations

from contextlib import contextmanager

import numba

PARALLEL_MIN_WORK = 1 << 18     # elements; about a millisecond of work on one core


@contextmanager
def serial_below(work: int, threshold: int = PARALLEL_MIN_WORK):
    """Run the numba calls in this block on one thread when ``work`` < ``threshold``."""
    threads = numba.get_num_threads()
    if work >= threshold or threads == 1:
        yield
        return
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)
