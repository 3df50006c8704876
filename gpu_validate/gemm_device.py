"""The device side of the GEMM validation: run the ``gemm__*.npz`` inputs (written on the CPU by
gpu_validate.gemm) through the multi-instruction kernel ``kernels/fp8_gemm.cu``, and through
``torch._scaled_mm`` where PyTorch is present, and write GEMM records.

Imports numpy only (the device side runs without pydantic, so without tcsim).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from .device import gpu_folder
from .records import read_npz, write_npz

# The ``mode`` argument of kernels/fp8_gemm.cu for each epilogue (tcsim.recipe.EPILOGUE_NAMES:
# the order of the scaling FMA at each promotion); the kernel's calling convention, so stated
# here beside it, and checked against tcsim's list by tests/test_layering.py.
EPILOGUE_MODES = {"deepgemm": 0, "1d1d": 1, "2d1d": 2, "2d2d": 3, "mul_add": 4}


def run_gemm_inputs(backend, inputs_dir, out_dir, progress: bool = False) -> list:
    """Device side: run every gemm input through the backend; write GEMM records to
    ``out_dir/<gpu>/gemm/``."""
    written = []
    meta = backend.meta()
    gpu = gpu_folder(meta["gpu_name"])
    for path in sorted(Path(inputs_dir).glob("gemm__*.npz")):
        z = read_npz(path)
        y = backend.run_gemm(str(z["a_format"]), str(z["b_format"]), z["x_bits"], z["w_bits"],
                             z["sa"], z["sb"], int(str(z["promotion"])),
                             EPILOGUE_MODES[str(z["epilogue"])])
        out = Path(out_dir) / gpu / "gemm" / f"{path.stem}__record.npz"
        out.parent.mkdir(parents=True, exist_ok=True)
        arrays = dict(z)
        arrays["y_bits"] = y.astype(np.float32).view(np.uint32)
        arrays.update({k: np.array(str(v)) for k, v in meta.items()})
        extra = getattr(backend, "gemm_meta", None)
        arrays.update({k: np.array(str(v)) for k, v in (extra() if extra else
                                                         {"synthetic": "false"}).items()})
        arrays["kernel"] = np.array(f"gemm_f32_{z['a_format']}_{z['b_format']}")
        arrays["created"] = np.array(_dt.datetime.now(_dt.timezone.utc).isoformat())
        write_npz(out, arrays)
        written.append(out)
    return written


def run_scaled_mm_inputs(inputs_dir, out_dir, meta: dict) -> list:
    """The production cuBLASLt path where PyTorch is present: torch._scaled_mm with fast
    accumulation on and off, on every per-tensor-scaled GEMM input. Records name the promotion
    they are replayed with: K (fast accumulation) or 128 (cuBLAS's split accumulation,
    docs/hardware.md#promotion, to be confirmed by these very records). Returns [] without
    torch/CUDA."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    written = []
    gpu = gpu_folder(meta["gpu_name"])
    dtypes = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
    for path in sorted(Path(inputs_dir).glob("gemm__*.npz")):
        z = read_npz(path)
        sa, sb = z["sa"], z["sb"]
        if sa.shape[1] != 1 or np.unique(sa).size != 1 or np.unique(sb).size != 1:
            continue                                  # per-tensor scales only
        x = torch.from_numpy(z["x_bits"].view(np.float32).copy()).cuda()
        w = torch.from_numpy(z["w_bits"].view(np.float32).copy()).cuda()
        xa = x.to(dtypes[str(z["a_format"])])
        wb = w.t().contiguous().to(dtypes[str(z["b_format"])]).t()      # column-major B
        k = x.shape[1]
        for fast in (True, False):
            y = torch._scaled_mm(xa, wb, scale_a=torch.tensor(float(sa[0, 0])).cuda(),
                                 scale_b=torch.tensor(float(sb[0, 0])).cuda(),
                                 out_dtype=torch.float32, use_fast_accum=fast)
            arrays = dict(z)
            arrays["y_bits"] = y.cpu().numpy().astype(np.float32).view(np.uint32)
            arrays["promotion"] = np.array(str(k if fast else 128))
            arrays["epilogue"] = np.array("2d2d")
            arrays["recipe"] = np.array(f"torch_scaled_mm_fast{int(fast)}")
            arrays.update({key: np.array(str(v)) for key, v in meta.items()})
            arrays["kernel"] = np.array(f"torch._scaled_mm(use_fast_accum={fast}) "
                                        f"torch {torch.__version__}")
            arrays["synthetic"] = np.array("false")
            arrays["created"] = np.array(_dt.datetime.now(_dt.timezone.utc).isoformat())
            name = f"{path.stem}__scaled_mm_fast{int(fast)}__record.npz"
            out = Path(out_dir) / gpu / "gemm" / name
            out.parent.mkdir(parents=True, exist_ok=True)
            write_npz(out, arrays)
            written.append(out)
    return written
