"""Compile the GPU backend's kernels for real GPUs without one: PTX through numba-cuda, then
ptxas, for each compute capability; prints registers, spills and stack per kernel (not a test).

    python benchmarks/cuda_compile.py [module ...]     (default: tcsim.cuda.fused tcsim.cuda.prep)

Each module lists its kernels as ``KERNELS = {name: (kernel, signature)}``. Runs with the CUDA
simulator off (it sets NUMBA_ENABLE_CUDASIM=0 before numba loads): the simulator's kernels are
Python and cannot be compiled.
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ["NUMBA_ENABLE_CUDASIM"] = "0"

CCS = ((8, 0), (8, 9), (9, 0))
MODULES = ("tcsim.cuda.fused", "tcsim.cuda.prep")


def main(modules) -> int:
    from tcsim.cuda.ptx import assemble, compile_ptx
    failed = 0
    print(f"{'kernel':40s} {'cc':>5s} {'regs':>5s} {'spill st/ld':>12s} {'stack':>6s} "
          f"{'fma':>4s}")
    for name in modules:
        module = importlib.import_module(name)
        for kname, (kernel, signature) in module.KERNELS.items():
            for cc in CCS:
                try:
                    rep = assemble(compile_ptx(kernel, signature, cc), cc)
                except Exception as exc:        # report every kernel, then fail
                    failed += 1
                    print(f"{kname:40s} {cc[0]}.{cc[1]:<3d} FAILED: {exc}")
                    continue
                print(f"{kname:40s} {cc[0]}.{cc[1]:<3d} {rep.registers:5d} "
                      f"{rep.spill_stores:5d}/{rep.spill_loads:<6d} {rep.stack:6d} {rep.fma:4d}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or MODULES))
