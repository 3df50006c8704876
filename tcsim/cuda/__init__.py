"""``tcsim.cuda``: the modelled datapath as numba-cuda kernels (the GPU backend).

The kernels compute the CPU kernels' bits: they call the same per-element ``@njit`` routines
(numba-cuda compiles them for the device; tcsim._kernels.scalar holds the few operations that
need a statement per target), and every kernel is held to the CPU kernels, bit for bit, under
numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) by tests/test_cuda_*.py. Which datapaths
the GPU serves is :data:`SERVED` (kernel families of tcsim.route); any other raises DeviceError.

Needs the ``cuda`` extra (numba-cuda); a GPU, or ``NUMBA_ENABLE_CUDASIM=1`` to run the kernels
as Python on the CPU (slow: small shapes).
"""

from __future__ import annotations

from ..errors import DeviceError
from ..route import Kernel

# Kernel families of tcsim.route the GPU backend runs. Not (yet): the exact kernel (exact
# alignment, fraction_bits = None: ideal units), which the CPU runs.
SERVED = frozenset({Kernel.FUSED, Kernel.STAGED_TILE, Kernel.PAIRWISE, Kernel.LOWERED})

# Threads per block of the one-thread-per-element kernels (a multiple of the warp size).
THREADS = 128

INSTALL_HINT = ("pip install 'tcsim[cuda]' (numba-cuda); run on an NVIDIA GPU, or set "
                "NUMBA_ENABLE_CUDASIM=1 before Python starts to run the kernels in numba's CUDA "
                "simulator")


def cuda():
    """numba.cuda, with tcsim's per-target scalar functions registered; DeviceError without
    numba-cuda."""
    try:
        import numba.cuda.extending  # noqa: F401  (numba-cuda, not numba's older built-in)
        from numba import cuda as numba_cuda
    except ImportError as exc:
        raise DeviceError(f"the GPU backend needs numba-cuda: {INSTALL_HINT}") from exc
    from .._kernels import scalar
    scalar.register_cuda()
    if simulated():
        _lock_simulated_shared_arrays()
    return numba_cuda


def _lock_simulated_shared_arrays() -> None:
    """Make the CUDA simulator's shared arrays one per block, as on a GPU. numba-cuda 0.30's
    simulator (FakeCUDAShared.array) looks an allocation up by call site and creates it when
    missing, unlocked: two threads of a block that get there together each create their own
    array, so a thread then stages into (or reads) a private copy, and kernels that share
    tiles give wrong results now and then (seen under short thread switch intervals). The
    same lookup under one lock."""
    import sys
    import threading

    import numpy as np
    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support
    shared = kernelapi.FakeCUDAShared
    if getattr(shared, "_tcsim_locked", False):
        return
    unlocked = shared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:     # dynamic shared memory, or the error
            return unlocked(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        caller = sys._getframe(1)       # keyed by call site, as the simulator does
        key = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            res = self._allocations.get(key)
            if res is None:
                res = np.empty(shape, dtype)
                self._allocations[key] = res
        return res

    shared.array = array
    shared._tcsim_locked = True


def simulated() -> bool:
    """True when numba runs CUDA kernels in its simulator (NUMBA_ENABLE_CUDASIM=1)."""
    import numba
    return bool(numba.config.ENABLE_CUDASIM)


def available() -> bool:
    """True when CUDA kernels can run here: numba-cuda and a GPU, or the CUDA simulator."""
    try:
        numba_cuda = cuda()
    except DeviceError:
        return False
    return simulated() or bool(numba_cuda.is_available())


def require():
    """numba.cuda when kernels can run, else DeviceError saying what is missing."""
    numba_cuda = cuda()
    if not (simulated() or numba_cuda.is_available()):
        raise DeviceError(f"device='cuda': no CUDA GPU is visible to numba-cuda; "
                          f"{INSTALL_HINT}")
    return numba_cuda


def blocks(n: int, threads: int = THREADS) -> int:
    """Blocks of ``threads`` that cover n elements (at least 1)."""
    return max(1, (int(n) + threads - 1) // threads)
