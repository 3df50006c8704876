"""``tcsim.torch.emulate``: run unmodified FP8 code (``torch._scaled_mm``) on the modelled unit.

    import tcsim.torch as tt
    with tt.emulate(model="h100"):          # or @tt.emulate(model="h100") on a function
        loss = model(x).square().mean()     # e.g. a torchao convert_to_float8_training model
        loss.backward()

Training code that calls ``torch._scaled_mm`` (torchao's Float8Linear, hand-written FP8 GEMMs)
decides itself the scales, the formats and which GEMM uses fast accumulation; under ``emulate``
each such call runs through :func:`tcsim.gemm` on the modelled matrix unit with exactly the
codes and scales it was given (tcsim.torch.scaled_gemm gives the arithmetic, the supported scale
layouts and output dtypes, and how sure the split-accumulation model is). The public
``torch.nn.functional.scaled_mm`` calls another operator, ``aten::_scaled_mm_v2``, which is
emulated too (tensor-wise, row-wise and 1x128 / 128x128 block-wise recipes, no swizzle).

Where: ``device`` picks tcsim's backend for the simulated GEMMs: None (default) follows the
tensors, FP8 code on CUDA tensors running on tcsim's GPU backend (tcsim.cuda) and on CPU
tensors where tcsim.gemm runs host arrays (the CPU, unless ``TCSIM_DEVICE`` says otherwise);
"cpu" or "cuda" names the backend for both (``device="cuda"`` on CPU tensors: numba's CUDA
simulator on a machine without a GPU). The backend changes no bits. Results come back on the
tensors' device; a CUDA tensor's FP8 codes and scales are read on the host first
(tcsim.torch.scaled_gemm.scaled_mm says why).

How: entering the outermost ``emulate`` registers Python kernels for those operators (and
``_scaled_mm.out``) at the CPU and CUDA dispatch keys through ``torch.library``; leaving it
removes them, and torch's own kernels serve the operators again (on a CPU-only torch build the
CUDA key has no kernel before or after; the registration is accepted all the same). Nothing
else in torch is touched: ``torch.mm``, ``F.linear`` and the rest run as before. Nested
contexts stack: the innermost one's model and device serve the calls, and the outer one's again
after the inner exits. Not thread-safe (one registration per process).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Optional

import torch

from ..errors import ConfigError
from ..mma import resolve_datapath
from .device import check_device
from .scaled_gemm import SCALING_TYPES, Accumulation, UnsupportedScaledMM, scaled_mm

#: the operators emulate() serves, as torch.library names them
OPERATORS = ("_scaled_mm", "_scaled_mm.out", "_scaled_mm_v2")
#: the dispatch keys they are registered at: the tensors' devices
DISPATCH_KEYS = ("CPU", "CUDA")

# the emulate contexts entered, innermost last, and the torch.library registration they share
_active: list = []
_library: Optional[torch.library.Library] = None


def _current() -> Accumulation:
    return _active[-1].accumulation


def _scaled_mm_kernel(a, b, scale_a, scale_b, bias=None, scale_result=None, out_dtype=None,
                      use_fast_accum=False):
    return scaled_mm(a, b, scale_a, scale_b, bias, scale_result, out_dtype, use_fast_accum,
                     accumulation=_current())


def _scaled_mm_out_kernel(a, b, scale_a, scale_b, bias=None, scale_result=None, out_dtype=None,
                          use_fast_accum=False, *, out):
    y = scaled_mm(a, b, scale_a, scale_b, bias, scale_result,
                  out.dtype if out_dtype is None else out_dtype, use_fast_accum,
                  accumulation=_current())
    if y.dtype != out.dtype:
        raise ConfigError(f"out: dtype {out.dtype} differs from out_dtype {out_dtype}")
    out.resize_(y.shape)
    out.copy_(y)
    return out


def _single(values, what: str):
    """The one entry of a _scaled_mm_v2 list argument (one scale / recipe per operand)."""
    if len(values) != 1:
        raise UnsupportedScaledMM(f"{what}: one entry per operand is supported, got "
                                  f"{len(values)} (two-level scaling is not modelled)")
    return values[0]


def _scaled_mm_v2_kernel(a, b, scale_a, recipe_a, swizzle_a, scale_b, recipe_b, swizzle_b,
                         bias=None, out_dtype=None, contraction_dim=(), use_fast_accum=False):
    if any(swizzle_a) or any(swizzle_b):
        raise UnsupportedScaledMM("swizzle_a / swizzle_b: swizzled scale layouts are not "
                                  "supported (NO_SWIZZLE only)")
    if list(contraction_dim) not in ([], [1, 0]):
        raise UnsupportedScaledMM(f"contraction_dim: {list(contraction_dim)} is not supported "
                                  f"(a (M, K) and b (K, N): [] or [1, 0])")
    layouts = []
    for what, rec in (("scale_recipe_a", recipe_a), ("scale_recipe_b", recipe_b)):
        r = int(_single(rec, what))
        if r not in SCALING_TYPES:
            raise UnsupportedScaledMM(f"{what}: unknown ScalingType value {r}")
        layouts.append(SCALING_TYPES[r])
    # torch.nn.functional.scaled_mm's default output, as on CUDA: bfloat16
    return scaled_mm(a, b, _single(scale_a, "scale_a"), _single(scale_b, "scale_b"), bias, None,
                     torch.bfloat16 if out_dtype is None else out_dtype, use_fast_accum,
                     accumulation=_current(), layouts=tuple(layouts))


_KERNELS = {"_scaled_mm": _scaled_mm_kernel, "_scaled_mm.out": _scaled_mm_out_kernel,
            "_scaled_mm_v2": _scaled_mm_v2_kernel}


def _register() -> torch.library.Library:
    lib = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        # "Overriding a previously registered kernel": replacing torch's kernels is the point
        warnings.simplefilter("ignore", UserWarning)
        for name in OPERATORS:
            for key in DISPATCH_KEYS:
                lib.impl(name, _KERNELS[name], key)
    return lib


class emulate(contextlib.ContextDecorator):
    """A context manager (and decorator) under which every ``torch._scaled_mm`` and
    ``torch.nn.functional.scaled_mm`` on CPU or CUDA tensors runs through :func:`tcsim.gemm` on
    the modelled matrix unit (module docstring; arithmetic: tcsim.torch.scaled_gemm).

    model: tcsim.gemm's model: a preset name ("h100", "b200", "ideal", ...), a TOML model file,
        a GpuModel or a Datapath. path: its instruction path (None: the FP8 -> fp32 path).
    split_interval: elements of K per promotion into FP32 for ``use_fast_accum=False``
        (default 128, tcsim's cublas_split_accum; must divide 128 for block-wise scales).
    device: tcsim's backend for the GEMMs: None (follow the tensors), "cpu" or "cuda" (module
        docstring).
    The model is resolved on construction (an unknown one raises then, not at the first GEMM),
    and so is the GPU backend for ``device="cuda"`` (DeviceError without numba-cuda and a GPU
    or numba's CUDA simulator).
    """

    def __init__(self, model="h100", path: Optional[str] = None, split_interval: int = 128,
                 device: Optional[str] = None):
        if not isinstance(split_interval, int) or isinstance(split_interval, bool) \
                or split_interval < 1:
            raise ConfigError(f"split_interval: expected a positive int, got {split_interval!r}")
        check_device(device)
        resolve_datapath(model, "e4m3", "e4m3", "fp32", path)      # fails early if unknown
        if device == "cuda":
            from ..cuda import require
            require()
        self.accumulation = Accumulation(model=model, path=path, split_interval=split_interval,
                                         device=device)

    def __repr__(self) -> str:
        a = self.accumulation
        where = "" if a.path is None else f", path={a.path!r}"
        where += "" if a.device is None else f", device={a.device!r}"
        return f"emulate(model={a.model!r}{where}, split_interval={a.split_interval})"

    def __enter__(self) -> "emulate":
        global _library
        if _library is None:
            _library = _register()
        _active.append(self)
        return self

    def __exit__(self, *exc) -> bool:
        global _library
        # the innermost entry of this context (contexts exit in reverse order of entry)
        for i in range(len(_active) - 1, -1, -1):
            if _active[i] is self:
                del _active[i]
                break
        if not _active and _library is not None:
            _library._destroy()      # torch's own kernels serve the operators again
            _library = None
        return False


def is_emulating() -> bool:
    """Whether an :class:`emulate` context is active (torch's _scaled_mm is replaced)."""
    return bool(_active)
