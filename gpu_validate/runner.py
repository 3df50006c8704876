"""Run the FP8 probe kernels on a GPU and save records (the device side of gpu_validate).

Imports only numpy, ml_dtypes and (for the real device) CuPy: the GPU machine has no pydantic,
so nothing here imports tcsim. Inputs are the suite files written on the CPU by
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
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from . import compile as kcompile
from .records import save_record

FP8_DTYPES = {"e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2"}
ACC_TAG = {"fp32": "f32", "fp16": "f16"}


@dataclass(frozen=True)
class KernelSpec:
    """One compiled kernel: a format pair, an accumulator, an operand form."""

    name: str
    source: str
    arch: str
    acc: str          # "fp32" / "fp16"
    a_format: str
    b_format: str
    form: str         # "smem" / "rega" (wgmma) or "mma_sync"
    threads: int
    rows_per_block: int

    @property
    def k_groups(self) -> tuple:
        """Sets of K indices (within each 32) whose order must not change any result: the
        products one block sums. wgmma k32: all 32 (H100/H200 corpus); mma.sync on Ada: k < 16
        and k >= 16; mma.sync on sm_90, lowered onto two FP16 HMMA steps: k mod 4 in {0, 1} and
        in {2, 3} (the FP8 -> f16x2 unpack, tcsim.lowering; corpus H100/H200 d_fp16). A
        self-check failure means a layout bug or other blocks than believed: both worth a
        look."""
        if self.form != "mma_sync":
            return (tuple(range(32)),)
        if self.arch == "sm_90a":
            return (tuple(k for k in range(32) if k % 4 < 2),
                    tuple(k for k in range(32) if k % 4 >= 2))
        return (tuple(range(16)), tuple(range(16, 32)))

    @property
    def instruction(self) -> str:
        acc = ACC_TAG[self.acc]
        if self.form == "mma_sync":
            return (f"mma.sync.aligned.m16n8k32.row.col.{acc}.{self.a_format}.{self.b_format}."
                    f"{acc}")
        a = "A in registers" if self.form == "rega" else "A in shared memory"
        return f"wgmma.mma_async.sync.aligned.m64n8k32.{acc}.{self.a_format}.{self.b_format} ({a})"


def kernel_specs(compute_capability: tuple) -> list:
    """The kernels worth running on a device of this compute capability."""
    pairs = [(a, b) for a in ("e4m3", "e5m2") for b in ("e4m3", "e5m2")]
    specs = []
    if tuple(compute_capability) >= (9, 0):
        for (a, b) in pairs:
            for acc in ("fp32", "fp16"):
                for form in ("smem", "rega"):
                    specs.append(KernelSpec(f"wgmma_{ACC_TAG[acc]}_{a}_{b}_{form}", "fp8_wgmma.cu",
                                            "sm_90a", acc, a, b, form, 128, 8))
    arch = "sm_90a" if tuple(compute_capability) >= (9, 0) else "sm_89"
    if tuple(compute_capability) >= (8, 9):
        for (a, b) in pairs:
            for acc in ("fp32", "fp16"):
                specs.append(KernelSpec(f"mma_sync_{ACC_TAG[acc]}_{a}_{b}",
                                        "fp8_mma_sync.cu", arch, acc, a, b, "mma_sync", 128, 32))
    return specs


def fp8_codes(bits: np.ndarray, fmt: str) -> np.ndarray:
    """fp32 bit patterns of FP8-representable values -> FP8 codes (exact, checked)."""
    import ml_dtypes
    values = bits.view(np.float32)
    codes = values.astype(getattr(ml_dtypes, FP8_DTYPES[fmt]))
    back = codes.astype(np.float32)
    same = (back.view(np.uint32) == bits) | (np.isnan(back) & np.isnan(values))
    if not same.all():
        raise ValueError(f"input values not representable in {fmt}")
    return codes.view(np.uint8)


def c_operand(c_bits: np.ndarray, acc: str) -> np.ndarray:
    """C as the kernel takes it: fp32, or fp16 bits after RNE rounding (numpy's cast)."""
    c = c_bits.view(np.float32)
    if acc == "fp32":
        return c.copy()
    with np.errstate(over="ignore"):          # beyond fp16's range rounds to Inf, as intended
        return c.astype(np.float16).view(np.uint16)


def widen(d: np.ndarray, acc: str) -> np.ndarray:
    """Kernel output -> fp32 bit patterns (fp16 results widened exactly)."""
    if acc == "fp32":
        return d.astype(np.float32).view(np.uint32)
    return d.view(np.float16).astype(np.float32).view(np.uint32)


class CupyBackend:
    """Runs the compiled kernels on the first CUDA device."""

    def __init__(self, build_dir: Path = kcompile.BUILD_DIR):
        try:
            import cupy
        except ImportError as exc:
            raise RuntimeError("no CUDA device: CuPy is not installed") from exc
        if not cupy.cuda.is_available():
            raise RuntimeError("no CUDA device: cupy.cuda.is_available() is False")
        self.cp = cupy
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        self.gpu_name = name.decode() if isinstance(name, bytes) else str(name)
        self.cc = (int(props["major"]), int(props["minor"]))
        self.build_dir = Path(build_dir)
        manifest = self.build_dir / "manifest.json"
        self.manifest = json.loads(manifest.read_text()) if manifest.is_file() else {}
        self.modules = {}
        self.cubin_origin = {}          # (source, arch) -> "carried" / "compiled on the device"

    def record_meta(self, spec: KernelSpec) -> dict:
        """Metadata of a hardware record beyond meta(): real, and where the cubin came from."""
        return {"synthetic": "false", "model": "",
                "cubin_origin": self.cubin_origin.get((spec.source, spec.arch), "unknown")}

    def meta(self) -> dict:
        rt = self.cp.cuda.runtime
        return {"gpu_name": self.gpu_name, "compute_capability": f"{self.cc[0]}.{self.cc[1]}",
                "driver": str(rt.driverGetVersion()), "cuda_version": str(rt.runtimeGetVersion()),
                "cupy_version": self.cp.__version__}

    def _function(self, spec: KernelSpec):
        """The kernel, from the cubin carried from the CPU machine; when the driver refuses that
        cubin (or it is missing), compiled here (nvcc, else NVRTC) and disassembled here."""
        key = (spec.source, spec.arch)
        if key not in self.modules:
            cubin = self.build_dir / f"{Path(spec.source).stem}.{spec.arch}.cubin"
            try:
                if not cubin.is_file():
                    raise FileNotFoundError(cubin)
                built_from = self.manifest.get(f"{spec.source}:{spec.arch}", {})
                if built_from.get("source_sha256") != kcompile.source_sha256(spec.source):
                    raise FileNotFoundError(f"{cubin} was built from another source")
                module = self.cp.RawModule(path=str(cubin))
                module.get_function(spec.name)          # loads the module: fails here if refused
                self.cubin_origin[key] = "carried"
            except (FileNotFoundError, self.cp.cuda.driver.CUDADriverError) as exc:
                print(f"gpu_validate: {cubin.name} not usable ({exc}); compiling on the device",
                      file=sys.stderr)
                fresh = kcompile.compile_cubin(spec.source, spec.arch, self.build_dir / "device")
                module = self.cp.RawModule(path=str(fresh))
                self.cubin_origin[key] = "compiled on the device"
                try:
                    self.manifest[f"{spec.source}:{spec.arch}"] = {
                        "sass": kcompile.sass_opcodes(fresh)}
                except (kcompile.ToolMissing, RuntimeError) as err:
                    print(f"gpu_validate: no disassembly on the device ({err})", file=sys.stderr)
                    self.manifest.pop(f"{spec.source}:{spec.arch}", None)
            self.modules[key] = module
        return self.modules[key].get_function(spec.name)

    def sass(self, spec: KernelSpec) -> str:
        entry = self.manifest.get(f"{spec.source}:{spec.arch}", {})
        return ", ".join(entry.get("sass", {}).get(spec.name, [])) or "unknown"

    def run_gemm(self, a_format: str, b_format: str, x_bits, w_bits, sa, sb, promotion: int,
                 mode: int) -> np.ndarray:
        """y = the multi-instruction FP8 GEMM kernel (kernels/fp8_gemm.cu) on these operands."""
        cp = self.cp
        spec = KernelSpec(f"gemm_f32_{a_format}_{b_format}", "fp8_gemm.cu", "sm_90a", "fp32",
                          a_format, b_format, "gemm", 128, 64)
        x = fp8_codes(np.ascontiguousarray(x_bits), a_format)
        wt = np.ascontiguousarray(fp8_codes(np.ascontiguousarray(w_bits), b_format).T)
        (m, k), n = x.shape, wt.shape[0]
        y = cp.zeros((m, n), dtype=cp.float32)
        grid = ((n + 7) // 8, (m + 63) // 64)
        self._function(spec)(grid, (128,), (cp.asarray(x), cp.asarray(wt),
                                            cp.asarray(np.asarray(sa, np.float32)),
                                            cp.asarray(np.asarray(sb, np.float32)), y,
                                            np.int32(m), np.int32(n), np.int32(k),
                                            np.int32(k // np.asarray(sa).shape[1]),
                                            np.int32(promotion), np.int32(mode)))
        cp.cuda.runtime.deviceSynchronize()
        return cp.asnumpy(y)

    def run(self, spec: KernelSpec, a_codes, b_codes, c, k: int) -> np.ndarray:
        cp = self.cp
        rows = a_codes.shape[0]
        a_d, b_d, c_d = cp.asarray(a_codes), cp.asarray(b_codes), cp.asarray(c)
        d_d = cp.zeros_like(c_d)
        blocks = (rows + spec.rows_per_block - 1) // spec.rows_per_block
        self._function(spec)((blocks,), (spec.threads,),
                             (a_d, b_d, c_d, d_d, np.int32(rows), np.int32(k)))
        cp.cuda.runtime.deviceSynchronize()
        return cp.asnumpy(d_d)


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


def gpu_folder(gpu_name: str) -> str:
    """A folder name for the device ("NVIDIA H200" -> "NVIDIA_H200"): letters, digits, '.',
    '_' and '-' only, so that it survives the trip back from the device machine."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", gpu_name).strip("_") or "gpu"


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
        from .gemm import run_gemm_inputs, run_scaled_mm_inputs
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
