"""The device side of gpu_validate: which kernels a GPU runs (:class:`KernelSpec`), operand
conversion to the kernels' codes, and :class:`CupyBackend`, which runs them on the first CUDA
device.

Imports only numpy, ml_dtypes and (for the real device) CuPy: the GPU machine has no pydantic,
so nothing here imports tcsim. The host side (tcsim answering for the device, replay) is
gpu_validate.simulated, gpu_validate.gemm and gpu_validate.replay.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import compile as kcompile

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
    # A pinned copy of tcsim.recorded_rows.c_in_accumulator (RNE, subnormals kept, overflow to
    # Inf), which the replay of these records uses: this side runs without tcsim.
    # tests/test_gpu_validate_replay.py holds the two equal.
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


def gpu_folder(gpu_name: str) -> str:
    """A folder name for the device ("NVIDIA H200" -> "NVIDIA_H200"): letters, digits, '.',
    '_' and '-' only, so that it survives the trip back from the device machine."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", gpu_name).strip("_") or "gpu"
