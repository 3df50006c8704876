"""``tcsim.gemm``: a whole FP8 GEMM as production kernels compute it, bit for bit.

Two levels of accumulation (docs/hardware.md#promotion): the modelled tensor core sums
``promotion_interval`` elements of K at a time (a chain of block FMAs starting from C = 0); each
such partial is scaled and added into an FP32 accumulator with IEEE arithmetic in the recipe's
epilogue order, and the tensor-core accumulator restarts. With fast accumulation (no promotion)
the whole K stays in the tensor core and the scales are applied once. K is streamed one promotion
chunk at a time: memory stays O(M*K + K*N + M*N), never O(M*N*K).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from . import formats
from ._kernels.epilogue import EPILOGUE_CODES, promote
from .config import Datapath, Recipe
from .errors import ConfigError, ShapeError
from .mma import resolve_datapath, run_datapath
from .presets import ModelLike
from .quant import Quantized, quantize
from .scales import decode_scales

# Show progress on stderr by default from this many multiply-adds on.
PROGRESS_MACS = 2 ** 34


@dataclass(frozen=True)
class GemmDetails:
    """What ``gemm(..., return_details=True)`` returns beside the result: every stage's inputs."""

    a: Quantized              # codes (values) and scales of x
    b: Quantized              # codes (values) and scales of w
    datapath: Datapath        # the tensor-core datapath used
    recipe: Recipe
    chunks: int               # tensor-core partial sums per output (promotions)
    accumulator: np.ndarray   # the FP32 accumulator before the output conversion (float32)

    def exact_product(self) -> np.ndarray:
        """The exact product of the quantised operands a and b (float64), the reference of the
        accumulation error: see :func:`tcsim.metrics.exact_product` and, for both errors in
        one call, :func:`tcsim.metrics.gemm_errors`."""
        from .metrics import exact_product
        return exact_product(self.a, self.b)


class _Progress:
    """A one-line progress report on stderr: chunks done, rate and ETA."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.start = total, enabled, time.perf_counter()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (self.total - done)
        end = "\n" if done == self.total else "\r"
        print(f"tcsim.gemm: {done}/{self.total} K-chunks, {elapsed:6.1f} s elapsed, "
              f"ETA {eta:6.1f} s", end=end, file=sys.stderr, flush=True)


def _operand(x, fmt: str, recipe_scaling, role: str, history) -> Quantized:
    if isinstance(x, Quantized):
        if x.role != role:
            raise ShapeError(f"{'x' if role == 'a' else 'w'}: a Quantized operand of role "
                             f"{x.role!r} given where role {role!r} is needed")
        if x.fmt != fmt:
            raise ConfigError(f"{'x' if role == 'a' else 'w'}: quantised as {x.fmt} but the "
                              f"recipe says {fmt}")
        return x
    return quantize(x, fmt, recipe_scaling, role, amax_history=history)


def gemm(x, w, model: Union[ModelLike, Datapath] = "h100",
         recipe: Union[Recipe, str, None] = None,
         return_details: bool = False, path: Optional[str] = None,
         progress: Optional[bool] = None, a_amax_history=None, b_amax_history=None):
    """Simulate y = x @ w as an FP8 GEMM kernel computes it on the modelled matrix unit.

    x: (M, K) activations, w: (K, N) weights: float32/float64 arrays, quantised here with the
    recipe's formats and scaling (tcsim.quant), or pre-quantised ``tcsim.quant.Quantized``
    operands (roles "a" and "b"), e.g. to feed a kernel's own quantisation.
    model: preset name, TOML file, GpuModel or bare Datapath; its FP8 -> fp32 path is used.
    recipe: tcsim.Recipe, or the name of a named recipe ("deepseek_v3", "cublas_fast_accum",
        ...: tcsim.config.RECIPE_NAMES); default Recipe.deepseek_v3().
    progress: a progress line on stderr (default: on for GEMMs of 2^34 multiply-adds or more).
    a_amax_history, b_amax_history: previous amax values for delayed scaling recipes.
    Returns float32 (or ml_dtypes.bfloat16 when recipe.output == "bf16") y of shape (M, N); with
    return_details=True, (y, GemmDetails).

    NaN/Inf: float inputs with NaN/Inf are rejected by the quantiser (they cannot be scaled);
    pre-quantised operands may hold the format's NaN/Inf, which propagate per IEEE.
    """
    if recipe is None:
        recipe = Recipe.deepseek_v3()
    elif not isinstance(recipe, Recipe):
        recipe = Recipe.named(recipe)       # ConfigError for anything but a recipe's name
    for name, arr, axis in (("x", x, 1), ("w", w, 0)):
        shape = getattr(getattr(arr, "values", arr), "shape", ())
        if len(shape) == 2 and shape[axis] == 0:
            raise ShapeError(f"{name} has K = 0 (shape {shape}): a GEMM needs K >= 1")
    qa = _operand(x, recipe.a_format, recipe.a_scaling, "a", a_amax_history)
    qb = _operand(w, recipe.b_format, recipe.b_scaling, "b", b_amax_history)
    (m, k), (k2, n) = qa.values.shape, qb.values.shape
    if k != k2:
        raise ShapeError(f"inner dimensions differ: x is {qa.values.shape}, w is {qb.values.shape}")
    scale_fmt = None
    if recipe.scales_in_mma:
        scale_fmt = "ue4m3" if recipe.a_scaling.granularity == "nvfp4" else "ue8m0"
    dp = resolve_datapath(model, recipe.a_format, recipe.b_format, "fp32", path,
                          scaled=recipe.scales_in_mma, scale_format=scale_fmt)
    if recipe.scales_in_mma != (dp.block_scale != "none"):
        raise ConfigError("recipe.scales_in_mma needs a block-scaled datapath (e.g. b200 path "
                          "'mxf8f6f4'), and a block-scaled datapath needs scales_in_mma"
                          if recipe.scales_in_mma else
                          "this datapath is block-scaled: use a recipe with scales_in_mma "
                          "(Recipe.mxfp8_native())")
    step = recipe.promotion_interval or k
    if recipe.promotion_interval is not None and dp.block_size is not None \
            and recipe.promotion_interval % dp.block_size:
        raise ConfigError(f"promotion_interval: {recipe.promotion_interval} is not a multiple of "
                          f"the datapath's block size {dp.block_size}")
    sa, sb = qa.k_scales(), qb.k_scales()               # (M, nK), (nK, N)
    group_a, group_b = k // sa.shape[1], k // sb.shape[0]
    acc = np.zeros((1, m, n), dtype=np.float32)
    zeros = np.zeros((1, m, n))
    sa32, sb32 = sa.astype(np.float32), sb.astype(np.float32)   # fp32 values: exact
    native = None
    if recipe.scales_in_mma:
        # the block scales go into the instruction; the promotion multiplies each partial by
        # the per-tensor scales (1, or NVFP4's fp32 tensor scales) and adds it in fp32
        if dp.block_size is not None and k % dp.block_size:
            raise ShapeError(f"K = {k} is not a multiple of the block-scaled instruction's K = "
                             f"{dp.block_size}: pad K with zeros (tcsim.quant.pad_k)")
        z = dp.zero_operand_exponent
        bsa, bsb = qa.block_scales(), qb.block_scales()
        native = decode_scales(bsa, scale_fmt, "x scales", z) + decode_scales(bsb, scale_fmt,
                                                                              "w scales", z)
        group_a, group_b = k // bsa.shape[1], k // bsb.shape[0]
        sa32 = np.full((m, 1), np.float32(qa.global_scale))
        sb32 = np.full((1, n), np.float32(qb.global_scale))
    starts = range(0, k, step)
    report = _Progress(len(starts), progress if progress is not None
                       else m * n * k >= PROGRESS_MACS)
    mode = EPILOGUE_CODES[recipe.epilogue]
    for done, k0 in enumerate(starts, 1):
        k1 = min(k0 + step, k)
        chunk_scales = None
        if native is not None:
            va, xa, vb, xb = native
            s0, s1 = k0 // group_a, (k1 + group_a - 1) // group_a
            chunk_scales = (va[None, :, s0:s1], xa[None, :, s0:s1], vb[None, s0:s1, :],
                            xb[None, s0:s1, :], group_a)
        partial = run_datapath(np.ascontiguousarray(qa.values[None, :, k0:k1]),
                               qb.values[None, k0:k1, :], zeros, dp.for_chunk(done - 1),
                               recipe.a_format, recipe.b_format, "fp32", chunk_scales)
        ia, ib = (0, 0) if native is not None else (k0 // group_a, k0 // group_b)
        promote(acc, partial, np.ascontiguousarray(sa32[None, :, ia]),
                np.ascontiguousarray(sb32[None, ib, :]), mode)
        report.update(done)
    acc32 = _canonical_nan(acc[0])
    if recipe.output == "bf16":
        import ml_dtypes
        y = formats.round_to_format(acc32.astype(np.float64), "bf16").astype(ml_dtypes.bfloat16)
        y.view(np.uint16)[np.isnan(acc32)] = 0x7FFF
    else:
        y = acc32
    if return_details:
        return y, GemmDetails(qa, qb, dp, recipe, len(starts), acc32)
    return y


def _canonical_nan(x: np.ndarray) -> np.ndarray:
    nan = np.isnan(x)
    if nan.any():
        x.view(np.uint32)[nan] = 0x7FFFFFFF
    return x
