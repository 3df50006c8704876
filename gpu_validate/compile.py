"""Compile the FP8 probe kernels to cubins and check which matrix instruction they use.

Works without a GPU: nvcc (or NVRTC through CuPy) compiles for sm_90a / sm_89, and nvdisasm (the
``nvidia-cuda-nvdisasm`` wheel, or one on PATH) disassembles. A record states the SASS opcode
(QGMMA on Hopper wgmma, QMMA on Ada mma.sync, HMMA where Hopper emulates FP8 mma.sync with
FP16). Imports only the standard library (and CuPy for the NVRTC fallback), so it runs on the
GPU machine without tcsim's dependencies.

    python -m gpu_validate.compile [--out gpu_validate/build]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
BUILD_DIR = Path(__file__).resolve().parent / "build"

# source file -> (architectures, instruction family)
SOURCES = {
    "fp8_wgmma.cu": (("sm_90a",), "wgmma.mma_async.sync.aligned.m64n8k32"),
    "fp8_mma_sync.cu": (("sm_89", "sm_90a"), "mma.sync.aligned.m16n8k32.row.col"),
    "fp8_gemm.cu": (("sm_90a",), "wgmma.mma_async.sync.aligned.m64n8k32 + FP32 promotion"),
}
MATRIX_OPCODE = re.compile(r"\b((?:QGMMA|HGMMA|QMMA|HMMA|IMMA)[.A-Za-z0-9_x]*)")


class ToolMissing(RuntimeError):
    """No compiler or disassembler is available."""


def source_sha256(name: str) -> str:
    """sha256 of a kernel source together with the headers it may include."""
    h = hashlib.sha256((KERNEL_DIR / name).read_bytes())
    for header in HEADERS:
        h.update((KERNEL_DIR / header).read_bytes())
    return h.hexdigest()


def find_nvcc() -> Optional[str]:
    for cand in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).is_file():
            return cand
    return None


def find_nvdisasm() -> Optional[str]:
    found = shutil.which("nvdisasm")
    if found:
        return found
    try:
        import nvidia  # the nvidia-cuda-nvdisasm wheel installs nvidia/cu*/bin/nvdisasm
        for root in nvidia.__path__:
            for cand in sorted(Path(root).glob("cu*/bin/nvdisasm")):
                return str(cand)
    except ImportError:
        pass
    return None


HEADERS = ("wgmma_common.cuh",)


def _nvrtc_cubin(source: str, arch: str) -> bytes:
    """Compile with NVRTC through CuPy's bindings (the GPU machine may have no nvcc); the
    kernels' own headers are handed over by name."""
    try:
        from cupy_backends.cuda.libs import nvrtc
    except ImportError as exc:
        raise ToolMissing("neither nvcc nor CuPy's NVRTC is available") from exc
    headers = [(KERNEL_DIR / h).read_text() for h in HEADERS]
    prog = nvrtc.createProgram(source, "kernel.cu", headers, list(HEADERS))
    try:
        nvrtc.compileProgram(prog, [f"-arch={arch}".encode(), b"-std=c++17"])
        return bytes(nvrtc.getCUBIN(prog))
    finally:
        nvrtc.destroyProgram(prog)


def compile_cubin(name: str, arch: str, out_dir: Path = BUILD_DIR) -> Path:
    """Compile kernels/<name> for ``arch`` into ``out_dir``; return the cubin path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{Path(name).stem}.{arch}.cubin"
    nvcc = find_nvcc()
    if nvcc:
        res = subprocess.run([nvcc, "-cubin", f"-arch={arch}", "-o", str(out),
                              str(KERNEL_DIR / name)], capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"nvcc failed for {name} ({arch}):\n{res.stderr}")
    else:
        out.write_bytes(_nvrtc_cubin((KERNEL_DIR / name).read_text(), arch))
    return out


def flushing_fp_ops(cubin: Path) -> list[str]:
    """FP32 arithmetic instructions that flush subnormals (FADD/FMUL/FFMA with .FTZ): the
    promotion epilogue must have none (CuPy's default -ftz=true would add them)."""
    text = disassemble(cubin)
    return sorted(set(re.findall(r"\b(F(?:ADD|MUL|FMA)\.FTZ[.A-Z0-9]*)", text)))


def disassemble(cubin: Path) -> str:
    """nvdisasm's text of a cubin."""
    nvdisasm = find_nvdisasm()
    if not nvdisasm:
        raise ToolMissing("nvdisasm not found: pip install nvidia-cuda-nvdisasm")
    data = Path(cubin).read_bytes()
    # CuPy's NVRTC path drops the cubin's last byte; the driver does not mind but nvdisasm does
    tmp = Path(cubin).with_suffix(".disasm.cubin")
    tmp.write_bytes(data + (b"\0" if len(data) % 2 else b""))
    try:
        res = subprocess.run([nvdisasm, "-c", str(tmp)], capture_output=True, text=True)
    finally:
        tmp.unlink()
    if res.returncode:
        raise RuntimeError(f"nvdisasm failed on {cubin}:\n{res.stderr}")
    return res.stdout


def sass_opcodes(cubin: Path) -> dict[str, list[str]]:
    """kernel name -> the matrix-unit opcodes (QGMMA/QMMA/HMMA...) in its SASS."""
    ops: dict[str, set] = {}
    current = None
    for line in disassemble(cubin).splitlines():
        m = re.match(r"^\.text\.([A-Za-z0-9_]+):", line.strip())
        if m:
            current = m.group(1)
            ops.setdefault(current, set())
            continue
        if current:
            ops[current].update(MATRIX_OPCODE.findall(line))
    return {k: sorted(v) for k, v in ops.items()}


def build_all(out_dir: Path = BUILD_DIR) -> dict:
    """Compile every kernel source for its architectures, disassemble, write manifest.json."""
    manifest = {}
    for name, (archs, instruction) in SOURCES.items():
        for arch in archs:
            cubin = compile_cubin(name, arch, out_dir)
            manifest[f"{name}:{arch}"] = {
                "cubin": cubin.name, "arch": arch, "instruction": instruction,
                "source_sha256": source_sha256(name), "sass": sass_opcodes(cubin)}
    Path(out_dir, "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gpu_validate.compile", description=__doc__)
    ap.add_argument("--out", default=str(BUILD_DIR))
    args = ap.parse_args(argv)
    manifest = build_all(Path(args.out))
    for key, entry in manifest.items():
        opcodes = sorted({op.split(".")[0] for ops in entry["sass"].values() for op in ops})
        print(f"{key:<26} {len(entry['sass']):3d} kernels  {', '.join(opcodes)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
