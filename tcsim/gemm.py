"""``tcsim.gemm``: a whole FP8 GEMM as production kernels compute it, bit for bit.

Two levels of accumulation (docs/hardware.md#promotion): the modelled tensor core sums
``promotion_interval`` elements of K at a time (a chain of block FMAs starting from C = 0); each
such partial is scaled and added into an FP32 accumulator with IEEE arithmetic in the recipe's
epilogue order, and the tensor-core accumulator restarts. With fast accumulation (no promotion)
the whole K stays in the tensor core and the scales are applied once.

K is streamed a promotion chunk at a time, and each chunk's operands are quantised when it is
needed (tcsim.quant.quantize_plan): beside the inputs, memory is the FP32 accumulator (M*N) and
buffers of at most BATCH_OUTPUTS outputs, never O(M*N*K), and no float64 copy of a whole
operand unless ``return_details`` asks for the quantised operands. Chunks are independent until
the epilogue, so equal chunks run as one batched kernel call, and rows are split into tiles,
whenever the datapath's results do not depend on an output's position in the call; the
epilogue then applies the batch's partials in K order. The bits are the same for every
batching and thread count (tests/test_gemm.py).
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from .datapath import Datapath
from .device import is_cuda_array, resolve_device
from .errors import ConfigError, ShapeError
from .formats.bf16_bits import fp32_to_bf16_bits
from .formats.operands import CANONICAL_NAN_BITS
from .mma import resolve_datapath, run_datapath
from .presets import ModelLike
from .quant import Quantized, quantize_plan
from .recipe import Recipe
from .scales import decode_scales

# Show progress on stderr by default from this many multiply-adds on.
PROGRESS_MACS = 2 ** 34
# Outputs per kernel call (batch x rows x N) when chunks may be batched and rows split: the
# float64 buffers of one call stay at 8 MB (below glibc's largest mmap threshold, so they are
# reused rather than mapped and faulted in afresh for every call). Measured at 1024x1024x3072:
# 2^20 and 2^21 take the same time, 2^23 (64 MB buffers) 15-25% longer.
BATCH_OUTPUTS = 1 << 20
# Kernel calls of fewer multiply-adds run on one thread (_serial_below).
PARALLEL_MIN_MACS = 1 << 22


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


def _operand(x, fmt: str, recipe_scaling, role: str, history, need_values: bool):
    """(source, Quantized): source fills blocks of the operand's float64 values (see _Source);
    the Quantized holds the values too when given one or when ``need_values``, otherwise a
    placeholder (the values are made one promotion chunk at a time)."""
    if isinstance(x, Quantized):
        if x.fmt != fmt:
            raise ConfigError(f"{'x' if role == 'a' else 'w'}: quantised as {x.fmt} but the "
                              f"recipe says {fmt}")
        return _Source(x.values, None), x
    plan, q = quantize_plan(x, fmt, recipe_scaling, role, amax_history=history)
    if need_values:
        q = plan.quantized(q)
        return _Source(q.values, None), q
    return _Source(None, plan), q


@dataclass(frozen=True)
class _Source:
    """The float64 values of an operand, block by block: copied from ``values`` or quantised
    on the fly by ``plan`` (tcsim.quant.quantize_plan)."""

    values: Optional[np.ndarray]
    plan: object

    def blocks(self, r0: int, c0: int, buf, shape: tuple, along_k: bool):
        """The B blocks (R, C) of ``fill`` (``shape`` = (B, R, C)) as a C-contiguous array: a
        view of ``values`` when the blocks are whole rows lying one after another in it (rows
        r0 .. r0 + B*R: blocks along the rows, or one block along K spanning every column),
        else the start of the flat buffer ``buf`` filled with them. A view holds the bits the
        copy would; the kernels only read their operands."""
        nb, r, c = shape
        v = self.values
        if (self.plan is None and isinstance(buf, np.ndarray) and c0 == 0 and c == v.shape[1]
                and (nb == 1 or not along_k) and v.dtype == np.float64
                and v.flags.c_contiguous and v.flags.writeable):    # the kernels' one signature
            return v[r0:r0 + nb * r].reshape(shape)
        out = _view(buf, shape)
        self.fill(r0, c0, out, along_k)
        return out

    def fill(self, r0: int, c0: int, out: np.ndarray, along_k: bool) -> None:
        """out (B, R, C) <- the values of B blocks (R, C) of the operand (in its own layout)
        from (r0, c0) on, side by side along its columns (``along_k``) or its rows."""
        if self.plan is not None:
            self.plan.fill(r0, c0, out, along_k)
            return
        nb, r, c = out.shape
        host = out if isinstance(out, np.ndarray) else np.empty((nb, r, c))
        for b in range(nb):
            i, j = (r0, c0 + b * c) if along_k else (r0 + b * r, c0)
            host[b] = self.values[i:i + r, j:j + c]
        if host is not out:         # a device buffer (tcsim.cuda): the block goes over
            out.copy_to_device(host)


def _position_free(dp: Datapath) -> bool:
    """Whether the kernel's results are independent of an output's position in the call: true
    unless some rounding is stochastic (its random numbers are keyed by batch entry, row,
    column and block), so chunks may be batched and rows split only then."""
    def has_sr(v) -> bool:
        if isinstance(v, dict):
            return any(has_sr(u) for u in v.values())
        if isinstance(v, (list, tuple)):
            return any(has_sr(u) for u in v)
        return v == "sr"
    return not has_sr(dp.model_dump())


def gemm(x, w, model: Union[ModelLike, Datapath] = "h100",
         recipe: Union[Recipe, str, None] = None,
         return_details: bool = False, path: Optional[str] = None,
         progress: Optional[bool] = None, a_amax_history=None, b_amax_history=None,
         device: Optional[str] = None):
    """Simulate y = x @ w as an FP8 GEMM kernel computes it on the modelled matrix unit.

    x: (M, K) activations, w: (K, N) weights: float32/float64 arrays, quantised here with the
    recipe's formats and scaling (tcsim.quant), or pre-quantised ``tcsim.quant.Quantized``
    operands (roles "a" and "b"), e.g. to feed a kernel's own quantisation.
    model: preset name, TOML file, GpuModel or bare Datapath; its FP8 -> fp32 path is used.
    recipe: tcsim.Recipe, or the name of a named recipe ("deepseek_v3", "cublas_fast_accum",
        ...: tcsim.recipe.RECIPE_NAMES); default Recipe.deepseek_v3().
    progress: a progress line on stderr (default: on for GEMMs of 2^34 multiply-adds or more).
    a_amax_history, b_amax_history: previous amax values for delayed scaling recipes.
    device: "cpu" or "cuda" (tcsim.device: default "cuda" for CUDA-array x / w, else
        TCSIM_DEVICE, else "cpu"). On "cuda" the whole GEMM runs on the GPU backend
        (tcsim.cuda) with the CPU's bits: quantisation (only the per-group amaxes and the
        scales travel to the host and back), the tensor-core chunks and the FP32 promotion.
        CUDA-array x / w (float32 / float64) stay on the device and y is a CUDA array of x's
        kind (fp32 output; bf16 output and ``return_details`` come back as host arrays).
    Returns float32 (or ml_dtypes.bfloat16 when recipe.output == "bf16") y of shape (M, N); with
    return_details=True, (y, GemmDetails).

    NaN/Inf: float inputs with NaN/Inf are rejected by the quantiser (they cannot be scaled);
    pre-quantised operands may hold the format's NaN/Inf, which propagate per IEEE.
    """
    dev = resolve_device(device, getattr(x, "values", x), getattr(w, "values", w))
    ops = _CudaOps() if dev == "cuda" else _HostOps()
    if recipe is None:
        recipe = Recipe.deepseek_v3()
    elif not isinstance(recipe, Recipe):
        recipe = Recipe.named(recipe)       # ConfigError for anything but a recipe's name
    for name, arr, role in (("x", x, "a"), ("w", w, "b")):
        if isinstance(arr, Quantized) and arr.role != role:
            raise ShapeError(f"{name}: a Quantized operand of role {arr.role!r} given where role "
                             f"{role!r} is needed")
    _check_shapes(tuple(np.shape(getattr(x, "values", x))),
                  tuple(np.shape(getattr(w, "values", w))))
    src_a, qa = _operand(ops.operand(x), recipe.a_format, recipe.a_scaling, "a",
                         a_amax_history, return_details)
    src_b, qb = _operand(ops.operand(w), recipe.b_format, recipe.b_scaling, "b",
                         b_amax_history, return_details)
    (m, k), n = qa.values.shape, qb.values.shape[1]
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
    acc = ops.accumulator(m, n)
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
    from ._kernels.epilogue import EPILOGUE_CODES  # numba loads on first use
    mode = EPILOGUE_CODES[recipe.epilogue]
    # Work plan. Chunks are independent until the epilogue, and outputs independent of each
    # other, so several equal chunks run as one batched kernel call and the rows are split into
    # tiles to bound the buffers, when the datapath's results do not depend on an output's
    # position (no stochastic rounding) and the block scales line up with the chunks.
    free = _position_free(dp) and (native is None or (step % group_a == 0
                                                         and step % group_b == 0))
    rows = max(1, min(m, BATCH_OUTPUTS // max(1, n))) if free else max(m, 1)
    batch = max(1, min(len(starts), BATCH_OUTPUTS // max(1, rows * n))) if free else 1
    width = min(step, k)
    a_buf = ops.buffer(batch * rows * width)        # chunk values, reused for every call
    b_buf = ops.buffer(batch * width * n)
    c_zero = ops.zeros(batch * rows * n)            # the tensor core starts from C = 0
    done = 0
    while done < len(starts):
        k0 = starts[done]
        nb = 1 if min(k0 + step, k) - k0 != width else \
            min(batch, len(starts) - done, (k - k0) // width)
        k1 = k0 + nb * width if nb > 1 else min(k0 + step, k)
        cw = (k1 - k0) // nb
        bv = src_b.blocks(k0, 0, b_buf, (nb, cw, n), along_k=False)
        kc = [k0 + c * cw for c in range(nb)]        # first K of each chunk
        for i0 in range(0, m, rows):
            i1 = min(i0 + rows, m)
            av = src_a.blocks(i0, k0, a_buf, (nb, i1 - i0, cw), along_k=True)
            cz = _view(c_zero, (nb, i1 - i0, n))
            if native is not None:
                va, xa, vb, xb = native
                s0, s1 = k0 // group_a, (k1 + group_a - 1) // group_a
                spc = (s1 - s0) // nb
                chunk_scales = (_per_chunk_a(va[i0:i1, s0:s1], nb, spc),
                                _per_chunk_a(xa[i0:i1, s0:s1], nb, spc),
                                np.ascontiguousarray(vb[s0:s1].reshape(nb, spc, n)),
                                np.ascontiguousarray(xb[s0:s1].reshape(nb, spc, n)), group_a)
                sa_c = np.ascontiguousarray(np.broadcast_to(sa32[i0:i1, 0], (nb, i1 - i0)))
                sb_c = np.ascontiguousarray(np.broadcast_to(sb32[0], (nb, n)))
            else:
                chunk_scales = None
                sa_c = np.ascontiguousarray(sa32[i0:i1, [kk // group_a for kk in kc]].T)
                sb_c = np.ascontiguousarray(sb32[[kk // group_b for kk in kc], :])
            partial = ops.run(av, bv, cz, dp.for_chunk(done), recipe.a_format, recipe.b_format,
                              chunk_scales, nb * (i1 - i0) * cw * n)
            ops.promote(acc[i0:i1], partial, ops.small(sa_c), ops.small(sb_c), mode)
        done += nb
        report.update(done)
    acc32 = ops.canonical_nan(acc)
    if recipe.output == "bf16":
        import ml_dtypes
        y = fp32_to_bf16_bits(ops.host(acc32)).view(ml_dtypes.bfloat16)    # RNE, NaN 0x7FFF
    else:
        y = acc32 if _on_gpu(x, w) else ops.host(acc32)
    if _on_gpu(x, w) and recipe.output == "fp32":
        from .cuda import arrays
        y = arrays.like(y, x if is_cuda_array(getattr(x, "values", x)) else w)
    if return_details:
        return y, GemmDetails(qa, qb, dp, recipe, len(starts), ops.host(acc32))
    return y


def _on_gpu(x, w) -> bool:
    """True when x or w is a CUDA array: y is then returned as one (fp32 output)."""
    return is_cuda_array(getattr(x, "values", x)) or is_cuda_array(getattr(w, "values", w))


class _HostOps:
    """gemm's chunk loop on the CPU: numpy buffers, the numba kernels."""

    def buffer(self, size: int):
        return np.empty(size)

    def zeros(self, size: int):
        return np.zeros(size)

    def accumulator(self, m: int, n: int):
        return np.zeros((m, n), dtype=np.float32)

    def small(self, x: np.ndarray):
        """A per-chunk scale array where the epilogue reads it."""
        return x

    def operand(self, x):
        """An operand (array or Quantized) where the quantisation reads it."""
        return x

    def run(self, av, bv, cz, dp, a_fmt, b_fmt, chunk_scales, macs: int):
        with _serial_below(macs, PARALLEL_MIN_MACS):
            return run_datapath(av, bv, cz, dp, a_fmt, b_fmt, "fp32", chunk_scales)

    def promote(self, acc_rows, partial, sa_c, sb_c, mode: int) -> None:
        from ._kernels.epilogue import promote
        promote(acc_rows, partial, sa_c, sb_c, mode)

    def canonical_nan(self, acc):
        return _canonical_nan(acc)

    def host(self, x) -> np.ndarray:
        return x


class _CudaOps(_HostOps):
    """gemm's chunk loop on the GPU backend (tcsim.cuda): device buffers, the chunk values
    quantised on the device (tcsim.quant.DeviceQuantPlan), the tensor-core chunks and the FP32
    promotion on the device; only the per-chunk scale rows (M + N values) travel."""

    def __init__(self):
        from .cuda import require
        require()

    def buffer(self, size: int):
        from .cuda import arrays
        return arrays.empty((size,), np.float64)

    def zeros(self, size: int):
        from .cuda import arrays
        return arrays.to_device(np.zeros(size))

    def accumulator(self, m: int, n: int):
        from .cuda import arrays
        return arrays.to_device(np.zeros((m, n), dtype=np.float32))

    def small(self, x: np.ndarray):
        from .cuda import arrays
        return arrays.to_device(np.ascontiguousarray(x))

    def operand(self, x):
        """A host array goes to the device once (quantised there chunk by chunk); CUDA arrays
        and Quantized operands (values given) stay as they are."""
        if isinstance(x, Quantized) or is_cuda_array(x):
            return x
        from .cuda import arrays
        a = np.asarray(x)
        return arrays.to_device(a) if a.dtype in (np.float32, np.float64) else a

    def run(self, av, bv, cz, dp, a_fmt, b_fmt, chunk_scales, macs: int):
        from .cuda.run import run_datapath as run_cuda
        return run_cuda(av, bv, cz, dp, a_fmt, b_fmt, "fp32", chunk_scales)

    def promote(self, acc_rows, partial, sa_c, sb_c, mode: int) -> None:
        from .cuda.epilogue import promote
        promote(acc_rows, partial, sa_c, sb_c, mode)

    def canonical_nan(self, acc):
        from .cuda import prep
        return prep.to_accumulator(acc, "fp32")     # float32 -> float32, NaN canonical

    def host(self, x) -> np.ndarray:
        from .cuda import arrays
        return arrays.to_host(x)


def _check_shapes(x_shape: tuple, w_shape: tuple) -> None:
    """x (M, K) and w (K, N), checked before anything else looks at K (quantisation would
    otherwise report w's N as a K that is no multiple of its block): a w in PyTorch's (N, K)
    layout is named as such."""
    for name, shape, dims in (("x", x_shape, "(M, K)"), ("w", w_shape, "(K, N)")):
        if len(shape) != 2:
            raise ShapeError(f"{name} must be 2-D {dims}, got shape {shape}")
    k = x_shape[1]
    if w_shape[0] != k:
        hint = (f"; w.T {w_shape[::-1]} would fit (a PyTorch weight is (N, K): pass w.T)"
                if w_shape[1] == k else "")
        raise ShapeError(f"inner dimensions differ: x is (M, K) = {x_shape} but w {w_shape} has "
                         f"{w_shape[0]} rows; w must be (K, N) with K = {k}{hint}")
    if k == 0:
        raise ShapeError(f"x has K = 0 (shape {x_shape}): a GEMM needs K >= 1")


@contextmanager
def _serial_below(work: int, threshold: int):
    """Run the numba calls in this block on one thread when ``work`` < ``threshold``: a parallel
    region's fork and join, and on a loaded machine the wait of a worker thread for a core, cost
    more than small work (two threads made gemm several times slower than one on per-chunk
    calls). The kernels compute each output whole in one thread: the bits do not change."""
    import numba
    threads = numba.get_num_threads()
    if work >= threshold or threads == 1:
        yield
        return
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)


def _view(buf: np.ndarray, shape) -> np.ndarray:
    """A C-contiguous array of ``shape`` on the start of the flat buffer ``buf``."""
    return buf[:int(np.prod(shape))].reshape(shape)


def _per_chunk_a(x: np.ndarray, nb: int, per_chunk: int) -> np.ndarray:
    """(rows, nb * per_chunk) scales of A along K -> (nb, rows, per_chunk), contiguous."""
    return np.ascontiguousarray(x.reshape(x.shape[0], nb, per_chunk).transpose(1, 0, 2))


def _canonical_nan(x: np.ndarray) -> np.ndarray:
    nan = np.isnan(x)
    if nan.any():
        x.view(np.uint32)[nan] = CANONICAL_NAN_BITS["fp32"]
    return x
