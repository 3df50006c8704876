"""A stand-in device that answers with tcsim's models (imports tcsim: host side only).

It lets the runner's whole path (suite files, kernel table, self-checks, record writing) run
and be tested without a GPU. Its records are synthetic and say so.
"""

from __future__ import annotations

import numpy as np

from .device import FP8_DTYPES, KernelSpec
from .gemm import simulate_gemm
from .gemm_device import EPILOGUE_MODES


class SimulatedBackend:
    """Answers every kernel with a tcsim preset: wgmma -> the preset's "wgmma" path, mma.sync ->
    the preset's "mma.sync" path on Hopper (lowered onto FP16 HMMA), Ada's below sm_90."""

    def __init__(self, model: str = "h100", compute_capability=(9, 0)):
        self.model = model
        self.cc = tuple(compute_capability)
        self.gpu_name = f"synthetic (tcsim {model} model)"

    def meta(self) -> dict:
        return {"gpu_name": self.gpu_name, "compute_capability": f"{self.cc[0]}.{self.cc[1]}",
                "driver": "n/a", "cuda_version": "n/a", "cupy_version": "n/a"}

    def _model_path(self, spec: KernelSpec) -> tuple:
        if spec.form != "mma_sync":
            return self.model, "wgmma"
        # mma.sync: native on Ada; lowered onto FP16 HMMA on Hopper (the preset's mma.sync path)
        return (self.model if self.cc >= (9, 0) else "ada"), "mma.sync"

    def record_meta(self, spec: KernelSpec) -> dict:
        """Records made here are synthetic and name the model that answered."""
        model, path = self._model_path(spec)
        return {"synthetic": "true", "model": f"{model}:{path}", "cubin_origin": "n/a"}

    def gemm_meta(self) -> dict:
        return {"synthetic": "true", "model": self.model}

    def sass(self, spec: KernelSpec) -> str:
        return "n/a (simulated)"

    def run(self, spec: KernelSpec, a_codes, b_codes, c, k: int) -> np.ndarray:
        import ml_dtypes

        from tcsim import load_model
        from tcsim.mma import run_datapath
        model, path = self._model_path(spec)
        dp = load_model(model).find_path(spec.a_format, spec.b_format, spec.acc, path).datapath()
        av = a_codes.view(getattr(ml_dtypes, FP8_DTYPES[spec.a_format])).astype(np.float64)
        bv = b_codes.view(getattr(ml_dtypes, FP8_DTYPES[spec.b_format])).astype(np.float64)
        cv = c.astype(np.float64) if spec.acc == "fp32" else c.view(np.float16).astype(np.float64)
        rows = av.shape[0]
        d = run_datapath(av.reshape(rows, 1, k), bv.reshape(rows, k, 1), cv.reshape(rows, 1, 1),
                         dp, spec.a_format, spec.b_format, spec.acc).reshape(rows)
        return d if spec.acc == "fp32" else d.view(np.uint16)

    def run_gemm(self, a_format, b_format, x_bits, w_bits, sa, sb, promotion, mode):
        name = {v: k for k, v in EPILOGUE_MODES.items()}[mode]
        return simulate_gemm(a_format, b_format, x_bits, w_bits, sa, sb, promotion, name,
                             self.model)
