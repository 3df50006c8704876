"""Run the FP8 probe kernels on a GPU and save records (the device side of gpu_validate).

Imports only numpy, ml_dtypes and (for the real device) CuPy: the GPU machine has no pydantic,
so nothing here imports tcsim (but ``--simulate``, a dry run on a CPU, imports
gpu_validate.simulated, which does). Inputs are the suite files written on the CPU by
``tcsim validate suites`` (gpu_validate.suites); compiled cubins come from gpu_validate.compile
(built on the CPU and carried along, or compiled here with NVRTC).

Self-checks before a record counts: the register-A and shared-memory-A wgmma forms must agree bit
for bit, and permuting K inside each block (:attr:`KernelSpec.k_groups`: all 32 for wgmma, the
16-element halves for mma.sync on Ada, the two FP16 HMMA steps of its lowering on Hopper) must not
change any result (a block FMA is order-independent inside the block); a layout or descriptor
mistake breaks one or the other.

    python -m gpu_validate.runner --suites gpu_validate/build/suites --out records/
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from . import compile as kcompile
from .device import FP8_DTYPES, CupyBackend, c_operand, fp8_codes, gpu_folder, kernel_specs, widen
from .gemm_device import run_gemm_inputs, run_scaled_mm_inputs
from .records import save_record


def permute_k_within_blocks(x: np.ndarray, block: int = 32, seed: int = 7) -> np.ndarray:
    """The same rows with K permuted inside every ``block``-element block (one permutation per
    block)."""
    return permute_k_within_groups(x, (tuple(range(block)),), block, seed)


def permute_k_within_groups(x: np.ndarray, groups: tuple, period: int = 32,
                            seed: int = 7) -> np.ndarray:
    """The same rows with K permuted inside each group of indices (``groups``: index sets
    within every ``period`` elements of K; one random permutation per group and period)."""
    rng = np.random.default_rng(seed)
    out = x.copy()
    for k0 in range(0, x.shape[1], period):
        for group in groups:
            idx = np.array([k0 + j for j in group if k0 + j < x.shape[1]], dtype=np.int64)
            out[:, idx] = x[:, idx[rng.permutation(idx.size)]]
    return out


def run_suites(backend, suites_dir: Path, out_dir: Path, only: Optional[str] = None,
               progress: bool = True) -> dict:
    """Run every suite file under suites_dir through every kernel the device has; save records.

    Returns a summary: records written, self-check failures, seconds.
    """
    t0 = time.perf_counter()
    files = sorted(f for f in Path(suites_dir).rglob("*.npz") if not f.name.startswith("gemm__"))
    if only:
        files = [f for f in files if str(np.load(f)["suite"]) == only]
    if not files:
        raise RuntimeError(f"no suite files under {suites_dir} (run: tcsim validate suites)")
    specs = kernel_specs(backend.cc)
    written, failures, errors = [], [], []
    meta = backend.meta()
    gpu = gpu_folder(meta["gpu_name"])
    for i, path in enumerate(files, 1):
        z = np.load(path)
        a_fmt, b_fmt = str(z["a_format"]), str(z["b_format"])
        if a_fmt not in FP8_DTYPES or b_fmt not in FP8_DTYPES:
            continue
        a_bits, b_bits, c_bits = z["a_bits"], z["b_bits"], z["c_bits"]
        k = a_bits.shape[1]
        a_codes, b_codes = fp8_codes(a_bits, a_fmt), fp8_codes(b_bits, b_fmt)
        results = {}
        for spec in (s for s in specs if (s.a_format, s.b_format) == (a_fmt, b_fmt)):
            c = c_operand(c_bits, spec.acc)
            try:
                d = backend.run(spec, a_codes, b_codes, c, k)
                # the same permutation of K for A and B keeps every product, moves it in the
                # block
                d_perm = backend.run(spec, permute_k_within_groups(a_codes, spec.k_groups),
                                     permute_k_within_groups(b_codes, spec.k_groups), c, k)
            except Exception as exc:      # noqa: BLE001 -- a failing kernel must not lose the rest
                errors.append(f"{path.name} {spec.name}: {type(exc).__name__}: {exc}")
                print(f"gpu_validate: {errors[-1]}", file=sys.stderr, flush=True)
                continue
            if not np.array_equal(d.view(np.uint8), d_perm.view(np.uint8)):
                failures.append(f"{path.name} {spec.name}: K permutation inside a block "
                                f"changed {int(np.sum(d != d_perm))} results")
            results[spec] = d
            suite = str(z["suite"])
            out = Path(out_dir) / gpu / f"{suite}__{a_fmt}x{b_fmt}__{spec.acc}__{spec.name}.npz"
            out.parent.mkdir(parents=True, exist_ok=True)
            save_record(out, a_bits, b_bits, c_bits, widen(d, spec.acc), a_format=a_fmt,
                        b_format=b_fmt, acc=spec.acc, instruction=spec.instruction,
                        sass_opcode=backend.sass(spec), kernel=spec.name,
                        kernel_source_sha256=kcompile.source_sha256(spec.source), suite=suite,
                        seed=str(z["seed"]),
                        created=_dt.datetime.now(_dt.timezone.utc).isoformat(),
                        names=z["names"], **meta, **backend.record_meta(spec))
            written.append(out)
        for spec, d in results.items():                    # register-A vs shared-A
            if spec.form == "rega":
                twin = next((s for s in results if s.form == "smem" and s.acc == spec.acc), None)
                if twin is None:
                    continue
                if not np.array_equal(d.view(np.uint8), results[twin].view(np.uint8)):
                    failures.append(f"{path.name} {spec.name}: register-A and shared-A differ")
        if progress:
            print(f"[{i}/{len(files)}] {path.name}: {len(results)} kernels, "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return {"records": [str(p) for p in written], "self_check_failures": failures,
            "kernel_errors": errors, "seconds": time.perf_counter() - t0, **meta}


def make_backend(build_dir: Path, simulate: Optional[str] = None):
    """The real device (CuPy), or with ``simulate`` = a preset name ("h100", "h100@8.9" for
    another compute capability) tcsim answering in its place: a dry run of the whole device
    path on a CPU (imports tcsim; its records say synthetic)."""
    if not simulate:
        return CupyBackend(build_dir)
    from .simulated import SimulatedBackend
    model, _, cc = simulate.partition("@")
    major, _, minor = (cc or "9.0").partition(".")
    return SimulatedBackend(model, (int(major), int(minor or 0)))


def main_run(suite: Optional[str] = None, out: str = "records", suites: Optional[str] = None,
             build: Optional[str] = None, simulate: Optional[str] = None) -> dict:
    """Entry point of ``tcsim validate run``: needs a CUDA device (RuntimeError otherwise),
    unless ``simulate`` names a tcsim preset (see :func:`make_backend`).

    Records go to ``out/<gpu>/`` and the GEMM records to ``out/<gpu>/gemm/``, the layout of
    ``gpu_validate/records``."""
    build_dir = Path(build) if build else kcompile.BUILD_DIR
    backend = make_backend(build_dir, simulate)
    suites_dir = Path(suites) if suites else build_dir / "suites"
    summary = run_suites(backend, suites_dir, Path(out), only=suite)
    if backend.cc >= (9, 0) and (suite is None or suite == "gemm"):
        steps = [("fp8_gemm.cu", lambda: run_gemm_inputs(backend, suites_dir / "gemm", Path(out)))]
        if not simulate:
            steps.append(("torch._scaled_mm", lambda: run_scaled_mm_inputs(
                suites_dir / "gemm", Path(out), backend.meta())))
        for what, step in steps:
            try:
                summary["records"] += [str(p) for p in step()]
            except Exception as exc:  # noqa: BLE001 -- keep the records and report
                summary["kernel_errors"].append(f"{what}: {type(exc).__name__}: {exc}")
                print(f"gpu_validate: {summary['kernel_errors'][-1]}", file=sys.stderr)
    Path(out).mkdir(parents=True, exist_ok=True)
    Path(out, "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gpu_validate.runner", description=__doc__)
    ap.add_argument("--suites", help="folder of suite input files (default build/suites)")
    ap.add_argument("--suite", help="run only this suite")
    ap.add_argument("--build", help="folder of compiled cubins (default gpu_validate/build)")
    ap.add_argument("--out", default="records", help="folder for the records")
    ap.add_argument("--simulate", metavar="PRESET[@CC]",
                    help="dry run on a CPU: tcsim's PRESET answers for the device (synthetic "
                         "records); default: $GPU_VALIDATE_SIMULATE, else the real GPU")
    args = ap.parse_args(argv)
    simulate = args.simulate or os.environ.get("GPU_VALIDATE_SIMULATE") or None
    try:
        summary = main_run(args.suite, args.out, args.suites, args.build, simulate)
    except RuntimeError as exc:
        print(f"gpu_validate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "records"}, indent=1))
    print(f"{len(summary['records'])} records written to {args.out}")
    return 1 if summary["self_check_failures"] or summary["kernel_errors"] else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
