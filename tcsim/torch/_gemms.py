"""The numpy side of tcsim.torch: one GEMM of a linear layer as its GemmSetting says.

Operands arrive as numpy arrays, or as CUDA arrays that stay on the GPU (a: (M, K), b: (K, N);
tcsim.torch.device), and the FP8 GEMMs run through :func:`tcsim.gemm` on the setting's
datapath, unchanged.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..gemm import GemmDetails, gemm
from ..quant import Quantized, pad_k
from ..recipe import Recipe
from ..reciprocal_scaling import quantize_reciprocal
from .device import gemm_kwargs, is_cuda_array
from .nonfinite import quantize_around
from .recipes import GemmSetting

_K_GROUPED = ("group", "block", "mx", "nvfp4")


def k_multiple(recipe: Recipe) -> int:
    """K must be a multiple of this for the recipe's scale groups (1: any K)."""
    m = 1
    for sc in (recipe.a_scaling, recipe.b_scaling):
        if sc.granularity in _K_GROUPED:
            m = math.lcm(m, sc.group_size)
    return m


def pad_operands(a: np.ndarray, b: np.ndarray, multiple: int):
    """Zero-pad K (a's axis 1, b's axis 0) to a multiple, as a GEMM kernel's tile loads fill
    out-of-range elements with zeros: zeros add nothing to the products and change no amax."""
    if a.shape[1] % multiple == 0:
        return a, b
    return pad_k(a, multiple, "a"), pad_k(b, multiple, "b")


def uses_history(recipe: Recipe, role: str) -> bool:
    """Whether the recipe's operand ``role`` ("a"/"b") has delayed scaling (an amax history)."""
    return getattr(recipe, f"{role}_scaling").amax_history is not None


def fp8_gemm(setting: GemmSetting, a, b, a_history: Optional[np.ndarray] = None,
             b_history: Optional[np.ndarray] = None, device: Optional[str] = None,
             nonfinite: bool = False) -> tuple[np.ndarray, GemmDetails]:
    """y = a @ b through tcsim.gemm with the setting's datapath and recipe; (y float32, details).

    a_history / b_history: previous amaxes (oldest first) for a delayed-scaling operand, else
    ignored. Operands of a setting with scale_rule "torchao" / "te_delayed" are quantised
    here by tcsim.reciprocal_scaling and go to tcsim.gemm pre-quantised. K of numpy operands is zero-padded to the recipe's scale-group multiple when
    needed (CUDA operands come padded: tcsim.torch.device.pad_k_cuda). device: tcsim.gemm's
    (None: left to tcsim.gemm). A CUDA array result is returned as it is (no host copy).
    nonfinite: the numpy operands may hold NaN/Inf; each that does is quantised here with
    tcsim.torch.nonfinite.quantize_around (its specials carried into FP8) and goes to tcsim.gemm
    pre-quantised, which propagates them per IEEE."""
    recipe = setting.recipe
    if not (is_cuda_array(a) or is_cuda_array(b)):
        a, b = pad_operands(a, b, k_multiple(recipe))
    if nonfinite:
        a = _around(a, recipe, "a", a_history)
        b = _around(b, recipe, "b", b_history)
    if setting.scale_rule != "tcsim":
        a = _by_rule(setting, a, "a", a_history)
        b = _by_rule(setting, b, "b", b_history)
    y, det = gemm(a, b, model=setting.resolved_datapath(), recipe=recipe, return_details=True,
                  progress=False,
                  a_amax_history=a_history if uses_history(recipe, "a") else None,
                  b_amax_history=b_history if uses_history(recipe, "b") else None,
                  **gemm_kwargs(device))
    # a bf16 output (recipe.output) is returned as its values in float32 (exact)
    return (y if is_cuda_array(y) else np.asarray(y, dtype=np.float32)), det


def _by_rule(setting: GemmSetting, x, role: str, history: Optional[np.ndarray]):
    """x quantised by the setting's scale_rule (tcsim.reciprocal_scaling), on the host; an
    operand already quantised (dgrad's reused w, or NaN/Inf carried by quantize_around, which
    follows tcsim.quant's rule) is left as it is."""
    if isinstance(x, Quantized):
        return x
    if is_cuda_array(x):
        from ..cuda import arrays
        x = arrays.to_host(x)
    r = setting.recipe
    return quantize_reciprocal(x, getattr(r, f"{role}_format"), role, setting.scale_rule,
                               getattr(r, f"{role}_scaling"), history)


def _around(x, recipe: Recipe, role: str, history: Optional[np.ndarray]):
    """x itself, or x quantised around its NaN/Inf when it is a numpy array holding some."""
    if not isinstance(x, np.ndarray) or np.isfinite(x).all():
        return x
    return quantize_around(x, getattr(recipe, f"{role}_format"), getattr(recipe, f"{role}_scaling"),
                           role, history if uses_history(recipe, role) else None)


def fp32_dequantized(q: Quantized) -> np.ndarray:
    """A quantised operand as a kernel holds it dequantised in fp32: RN32(value * scale) per
    element (an FP8 value times an fp32 scale can need up to 28 bits, so this rounds)."""
    return (q.values.astype(np.float32) * q.element_scales().astype(np.float32))


def reusable_transpose(q: Quantized, other: GemmSetting) -> Optional[Quantized]:
    """fprop's quantised w^T (role b, (in, out)) as dgrad's quantised w (role b, (out, in)),
    when that is what quantising w for ``other`` (dgrad) would give; else None.

    Quantisation is element-wise given the scales, so it commutes with transposition whenever
    the scale groups do: one scale per tensor, or whole g x g blocks (both dims multiples of g:
    a block of w^T is a block of w). The same format, scaling and amax history are needed."""
    r = other.recipe if other.precision == "fp8" else None
    if r is None or r.b_format != q.fmt or r.b_scaling != q.scaling or r.scales_in_mma:
        return None
    if q.values.shape[1] % k_multiple(r):      # dgrad's K (out) would need padding
        return None
    gran, g = q.scaling.granularity, q.scaling.group_size
    if gran == "block":
        if any(dim % g for dim in q.values.shape):
            return None
    elif gran != "tensor":
        return None
    return Quantized(values=np.ascontiguousarray(q.values.T),
                     scales=np.ascontiguousarray(q.scales.T), fmt=q.fmt, role="b",
                     scaling=q.scaling, amax=q.amax, global_scale=q.global_scale)
