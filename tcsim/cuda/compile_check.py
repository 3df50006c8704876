"""Compile every kernel of the GPU backend for real GPUs, without one: PTX through numba-cuda
and a cubin through ptxas, for each compute capability; prints registers per thread, spills,
stack and fma counts (``python -m tcsim.cuda.compile_check``; CI runs it from
tests/test_cuda_compile.py). Needs the ``cuda`` extra; must run without the CUDA simulator
(NUMBA_ENABLE_CUDASIM unset or 0), which has no compiler."""

from __future__ import annotations

import argparse
import importlib
import sys
import time

# The modules of tcsim.cuda that hold kernels; each lists them as KERNELS = {name: (kernel,
# signature)} with the signature the backend launches them with.
MODULES = ("elementwise", "blockscale", "validate", "prep", "fused", "staged", "lowered",
           "quantize", "epilogue")
TARGETS = ((8, 0), (8, 9), (9, 0))      # A100, Ada / L40S, H100 / H200


def kernels():
    """(module, name, kernel, signature) of every kernel the backend has."""
    out = []
    for mod in MODULES:
        try:
            module = importlib.import_module(f"tcsim.cuda.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name == f"tcsim.cuda.{mod}":
                continue            # a module not written yet
            raise
        for name, (kernel, signature) in getattr(module, "KERNELS", {}).items():
            out.append((mod, name, kernel, signature))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tcsim.cuda.compile_check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--cc", nargs="*", default=[f"{a}{b}" for a, b in TARGETS],
                        help="compute capabilities, e.g. 80 89 90 (default: all three)")
    args = parser.parse_args(argv)
    import numba
    if numba.config.ENABLE_CUDASIM:
        print("compile_check: NUMBA_ENABLE_CUDASIM is set; unset it (the simulator has no "
              "compiler)", file=sys.stderr)
        return 2
    from . import cuda
    from .ptx import assemble, compile_ptx
    cuda()
    targets = [(int(c[:-1]), int(c[-1])) for c in args.cc]
    failed = 0
    found = kernels()
    print(f"{'kernel':36s} {'target':6s} {'regs':>5s} {'spill st/ld':>12s} {'stack':>6s} "
          f"{'fma':>4s} {'s':>5s}")
    for mod, name, kernel, signature in found:
        for cc in targets:
            start = time.perf_counter()
            try:
                rep = assemble(compile_ptx(kernel, signature, cc), cc)
            except Exception as exc:     # report every failure, then fail as a whole
                failed += 1
                print(f"{mod + '.' + name:36s} sm_{cc[0]}{cc[1]} FAILED: "
                      f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                continue
            print(f"{mod + '.' + name:36s} sm_{cc[0]}{cc[1]} {rep.registers:5d} "
                  f"{rep.spill_stores:5d}/{rep.spill_loads:<6d} {rep.stack:6d} {rep.fma:4d} "
                  f"{time.perf_counter() - start:5.1f}")
    print(f"compile_check: {len(found)} kernels x {len(targets)} targets, {failed} failed")
    return 1 if failed or not found else 0


if __name__ == "__main__":
    sys.exit(main())
