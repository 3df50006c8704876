"""Compile CUDA kernels to PTX and cubins without a GPU (the CI's compile check).

``numba.cuda.compile_ptx`` needs no driver for a kernel alone, but a kernel that calls another
jitted function (a device function, or one of the kernels' shared ``@njit`` routines) compiles
that callee with ``numba.cuda.dispatcher.get_current_device().compute_capability``, which opens
a device context and fails on a machine without a GPU ("CUDA driver library cannot be found").
:func:`target_device` answers that question with the compute capability being compiled for,
for the duration of one compile and only when no GPU is present. ptxas (from
``nvidia-cuda-nvcc-cu12``) turns the PTX into a cubin and reports registers and spills.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from typing import NamedTuple, Optional


class _TargetDevice:
    """Stands in for the current device while compiling for ``compute_capability``."""

    def __init__(self, cc):
        self.compute_capability = tuple(cc)


@contextlib.contextmanager
def target_device(cc):
    """Within the block, callees of a kernel compile for ``cc`` without a device context."""
    import numba.cuda.dispatcher as dispatcher
    saved = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: _TargetDevice(cc)
    try:
        yield
    finally:
        dispatcher.get_current_device = saved


def compile_ptx(kernel, signature, cc) -> str:
    """PTX of ``kernel`` (a ``numba.cuda.jit`` kernel, or its Python function) for the argument
    types ``signature`` and compute capability ``cc`` (e.g. (9, 0))."""
    from numba import cuda
    pyfunc = getattr(kernel, "py_func", kernel)
    with target_device(cc):
        ptx, _ = cuda.compile_ptx(pyfunc, signature, cc=tuple(cc))
    return ptx


def ptxas_path() -> Optional[str]:
    """ptxas from the nvidia-cuda-nvcc-cu12 wheel (or the PATH), else None."""
    try:
        import nvidia.cuda_nvcc as nvcc
        for root in getattr(nvcc, "__path__", []):
            path = os.path.join(root, "bin", "ptxas")
            if os.path.exists(path):
                return path
    except ImportError:
        pass
    from shutil import which
    return which("ptxas")


class CubinReport(NamedTuple):
    """What ptxas reports for one kernel's cubin."""

    registers: int          # registers per thread
    spill_stores: int       # bytes of local-memory spill stores
    spill_loads: int        # bytes of local-memory spill loads
    stack: int              # bytes of stack frame (local arrays live here)
    fma: int                # fma instructions in the PTX (explicit fma, or exact products fused)
    text: str               # ptxas's own lines


def assemble(ptx: str, cc) -> CubinReport:
    """Run ptxas on ``ptx`` for sm_<cc> and read its register / spill report."""
    exe = ptxas_path()
    if exe is None:
        raise RuntimeError("ptxas not found: pip install nvidia-cuda-nvcc-cu12")
    arch = f"sm_{cc[0]}{cc[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(src, "w") as fh:
            fh.write(ptx)
        res = subprocess.run([exe, f"-arch={arch}", "-v", src, "-o", out],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"ptxas -arch={arch} failed:\n{res.stderr}")
        text = res.stderr + res.stdout

    def num(pattern):
        found = re.findall(pattern, text)
        return max((int(x) for x in found), default=0)

    return CubinReport(num(r"Used (\d+) registers"), num(r"(\d+) bytes spill stores"),
                       num(r"(\d+) bytes spill loads"), num(r"(\d+) bytes stack frame"),
                       len(re.findall(r"\bfma\.rn", ptx)), text.strip())
