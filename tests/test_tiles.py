"""The tile driver (tcsim._kernels.tiles): its threads survive a fork of the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Two threads, several output tiles: the parent starts the driver's thread pool, then forks
# (as a sweep's process pool does on Linux). The child must get the same bits, not wait forever
# on the threads it did not inherit.
CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np, tcsim
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 64)).astype(np.float16)
    b = rng.standard_normal((64, 600)).astype(np.float16)
    run = lambda: tcsim.mma(a, b, model="h100", a_format="fp16", b_format="fp16").view(np.uint32)
    want = run()
    pid = os.fork()
    if pid == 0:
        os._exit(0 if np.array_equal(run(), want) else 3)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
""")


def test_forked_child_runs_parallel_kernels():
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, env={**__import__("os").environ,
                                                       "NUMBA_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
