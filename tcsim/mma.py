"""``tcsim.mma``: D = A*B + C through a modelled matrix unit, bit for bit.

Stages run here, not in the kernels, and why
--------------------------------------------
:func:`run_datapath` (and tcsim.cuda.run.run_datapath, step for step on the device) runs a few
stages of tcsim.reference itself, around the kernel that tcsim.route names. Each is one
elementwise pass over an operand or over D, with the same bits as running it inside every block,
and keeping it out of the kernels keeps their compiled variants and signatures as few as they
are:

* ``flush`` (stage_flush): subnormal inputs (``subnormal_inputs = "flush"``) and the incoming C
  (``subnormal_outputs = "flush"``) become zeros of their sign, and with ``flush_nodes`` (CDNA2)
  inputs and C below their smallest normal become +0 (the oracle too flushes those once per
  chain). An input is read by many blocks, so one pass over it stands for the flush of every
  block; every later C is a block result that the kernel's own rounding already flushed
  (KernelParams.flush_out), and the tree nodes of ``flush_nodes`` are flushed inside the staged
  kernel.
* ``scales``: a NaN block scale makes its K block of that row / column NaN, which the kernels'
  NaN/Inf pass then carries, as for a NaN input.
* the exponent block scale (``block_scale = "exponent"``): a * 2^Xa is exact (a power-of-two
  scaling) and its exponent is ea + Xa, so pre-scaling each operand and shifting its exponents
  turns the plain block FMA into the scaled one; no kernel needs a scale stage for it (group
  terms scale whole group sums, so their scales stay inside the staged kernel).
* the output's conversion (:func:`to_accumulator`, NaN as the canonical pattern) and
  ``zero_sign = "unsigned"`` (stage zero_sign): one pass over D for every kernel family and the
  lowered chains. The oracle too makes a zero result +0 once, at the end of the chain: a -0 in
  the middle of a chain is a zero C, which takes no part in E and adds nothing.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np

from .datapath import Datapath
from .device import is_cuda_array, resolve_device
from .errors import ConfigError, FormatError, ShapeError, UnknownModelError
from .formats.catalog import get_format
from .formats.conversion import check_representable
from .formats.operands import (
    ACC_BITS_DTYPES,
    ACC_DTYPES,
    CANONICAL_NAN_BITS,
    dtype_values,
    operand_format,
    raw_code_values,
    unpack_e2m1,
)
from .gpu_model import INPUT_FORMATS, OUTPUT_FORMATS, GpuModel, InstructionPath
from .kernel_constants import NO_TERM
from .lowering import run_lowered
from .params import kernel_params
from .presets import ModelLike, load_model
from .route import Kernel, route
from .scales import decode_scales, scale_block, scale_format_of

# numpy / ml_dtypes dtype name -> tcsim input format name
DTYPE_FORMATS = {"float8_e4m3fn": "e4m3", "float8_e5m2": "e5m2", "float16": "fp16",
                  "float8_e4m3fnuz": "e4m3fnuz", "float8_e5m2fnuz": "e5m2fnuz",
                  "float6_e2m3fn": "e2m3", "float6_e3m2fn": "e3m2", "float4_e2m1fn": "e2m1",
                  "bfloat16": "bf16"}


def _input_format(x, given: Optional[str], what: str) -> str:
    """The input format of operand ``what``: from its ml_dtypes dtype and/or the name given."""
    if given is None and getattr(getattr(x, "dtype", None), "type", None) is np.void:
        raise FormatError(f"{what} holds raw {x.dtype.itemsize}-byte codes (dtype {x.dtype}: an "
                          f"ml_dtypes array saved with np.save?); give {what}_format")
    return operand_format(x, given, DTYPE_FORMATS, INPUT_FORMATS, f"{what}_format",
                                  "a matrix-unit input format", what,
                                  canonical=lambda n: get_format(n).name)


def input_values(x, fmt: str, what: str) -> np.ndarray:
    """Operand ``x`` (2-D, or 3-D batched) as float64 values, checked to be exactly representable
    in ``fmt``."""
    arr = np.asarray(x)
    if arr.ndim not in (2, 3):
        raise ShapeError(f"{what} must be 2-D (or 3-D for a batch), got shape {arr.shape}")
    if arr.dtype == np.uint8 and fmt == "e2m1":
        # packed FP4: two e2m1 codes per byte along K (a: the last axis, b: the one before)
        return unpack_e2m1(arr, axis=-1 if what == "a" else -2)
    if arr.dtype.type is np.void:
        # raw codes: an ml_dtypes array saved with np.save loads back as |V1 (|V2 for bf16)
        return raw_code_values(arr, fmt, what)
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
        # long double: checked in its own precision, so a value float64 would round is refused
        check_representable(arr, fmt, what=what)
        return arr.astype(np.float64)
    if arr.dtype.kind not in "fV" and arr.dtype.name not in DTYPE_FORMATS:
        raise FormatError(f"{what} must be a float array (or an ml_dtypes array, or uint8 packed "
                          f"e2m1 pairs with format e2m1), got dtype {arr.dtype}")
    if DTYPE_FORMATS.get(arr.dtype.name) == fmt:   # a dtype of the format needs no check
        return dtype_values(arr)
    values = arr.astype(np.float64)
    check_representable(values, fmt, what=what)
    return values


def flush_subnormals(values: np.ndarray, fmt: str) -> np.ndarray:
    """Subnormal values of ``fmt`` replaced by zeros of the same sign."""
    tiny = np.abs(values) < get_format(fmt).min_normal
    return np.where(tiny, np.copysign(0.0, values), values)


def resolve_datapath(model: Union[ModelLike, Datapath], a_format: str, b_format: str, acc: str,
                     path: Optional[str], scaled: bool = False,
                     scale_format: Optional[str] = None) -> Datapath:
    """The datapath a model uses for ``a_format x b_format -> acc`` (a Datapath is used as is);
    scaled: the operands carry block scales (choose among the block-scaled paths)."""
    if isinstance(model, Datapath) and not isinstance(model, GpuModel):
        if path is not None:
            raise UnknownModelError("path= only applies to a GPU model, not to a bare Datapath")
        return model
    gpu = load_model(model)
    return gpu.find_path(a_format, b_format, acc, path, scaled=scaled, scale_format=scale_format)


def to_accumulator(values: np.ndarray, acc: str) -> np.ndarray:
    """float64 result values -> the accumulator dtype, NaNs as the canonical NaN pattern."""
    out = values.astype(ACC_DTYPES[acc])
    nan = np.isnan(out)
    if nan.any():
        bits = out.view(ACC_BITS_DTYPES[acc])
        bits[nan] = CANONICAL_NAN_BITS[acc]
    return out


def mma(a, b, c=None, model: Union[ModelLike, Datapath] = "h100", a_format: Optional[str] = None,
        b_format: Optional[str] = None, acc: str = "fp32", path: Optional[str] = None,
        a_scale=None, b_scale=None, scale_format: Optional[str] = None,
        device: Optional[str] = None) -> np.ndarray:
    """Compute D = A*B + C as the modelled matrix unit does, bit for bit.

    a: (M, K) and b: (K, N) arrays (or (B, M, K) and (B, K, N) for a batch of B products) holding values exactly representable in ``a_format`` /
    ``b_format`` ("e4m3", "e5m2", "fp16", "bf16", "tf32"), or ml_dtypes / float16 arrays (their
    dtype implies the format). A value that is not representable raises FormatError: nothing is
    silently rounded. c: (M, N) (or (B, M, N)) float32 (float16 when acc="fp16"), or None for zeros.
    model: a preset name ("h100", "b200", "ideal", "fp32-fma", ...), a TOML file, a GpuModel, or a
    bare Datapath. path: choose a non-default instruction path of the model (e.g. "mma.sync" on
    b200). K longer than the block size runs as a chain of blocks, each result the next C.
    Raw-code arrays (numpy void dtype: what an ml_dtypes array saved with np.save loads back
    as) are read as codes of the format given. Long double values are checked in their own
    precision. FP4 operands may also be uint8 arrays of packed e2m1 pairs (a_format="e2m1"): two codes per
    byte along K, element 2i in the low nibble (tcsim.formats.pack_e2m1 / unpack_e2m1).

    Block-scaled paths (b200 "mxf8f6f4", "mxf4", "mxf4nvf4", rtx-blackwell): a_scale (M, K/s) and
    b_scale (K/s, N) (batched: (B, M, K/s), (B, K/s, N)) hold one scale per s consecutive K
    elements; s follows from the shapes and must be one the path allows (32 for MX, 16 for
    NVFP4). The scales are ml_dtypes float8_e8m0fnu (ue8m0) or float8_e4m3fn (ue4m3, sign
    ignored) arrays, or floats with ``scale_format`` given; K must be a multiple of the block.
    device: "cpu" or "cuda" (the GPU backend, tcsim.cuda: the same bits); default: "cuda" when
    a, b or c is a CUDA array (CuPy, PyTorch CUDA tensor, numba device array: float16 / float32
    / float64 values, the format given by a_format / b_format), else the TCSIM_DEVICE
    environment variable, else "cpu" (tcsim.device). Host arrays on "cuda" are copied in and D
    comes back as numpy; CUDA arrays stay on the GPU and D is a CUDA array of a's kind.
    Returns D in the accumulator dtype (NaN as the canonical 0x7fffffff / 0x7fff).
    """
    if acc not in OUTPUT_FORMATS:
        raise FormatError(f"acc must be one of {OUTPUT_FORMATS}, got {acc!r}")
    dev = resolve_device(device, a, b, c, a_scale, b_scale)
    if dev == "cuda" and any(is_cuda_array(x) for x in (a, b, c)):
        return _mma_cuda_arrays(a, b, c, model, a_format, b_format, acc, path, a_scale,
                                b_scale, scale_format)
    a_fmt = _input_format(a, a_format, "a")
    b_fmt = _input_format(b, b_format, "b")
    av = input_values(a, a_fmt, "a")
    bv = input_values(b, b_fmt, "b")
    if av.ndim != bv.ndim or av.shape[:-2] != bv.shape[:-2] or av.shape[-1] != bv.shape[-2]:
        raise ShapeError(f"a {av.shape} and b {bv.shape} do not multiply "
                         f"(need (M, K) x (K, N), or (B, M, K) x (B, K, N))")
    out_shape = av.shape[:-1] + bv.shape[-1:]
    if c is None:
        c = np.zeros(out_shape, dtype=ACC_DTYPES[acc])
    c = np.asarray(c)
    if c.dtype != ACC_DTYPES[acc]:
        raise FormatError(f"c must be {ACC_DTYPES[acc]} for acc={acc!r}, got {c.dtype}")
    if c.shape != out_shape:
        raise ShapeError(f"c has shape {c.shape}, expected {out_shape} for a {av.shape} x "
                         f"b {bv.shape}")
    scaled = a_scale is not None or b_scale is not None
    sfmt = None
    if a_scale is not None:     # the scale format also chooses the path (ue4m3: NVFP4)
        sfmt = scale_format_of(a_scale, scale_format, "a_scale")
    dp = resolve_datapath(model, a_fmt, b_fmt, acc, path, scaled=scaled, scale_format=sfmt)
    scales = None
    if scaled:
        scales = operand_scales(dp, a_scale, b_scale, scale_format, av.shape, bv.shape)
    elif dp.block_scale != "none":
        raise ConfigError(f"this datapath is block-scaled (block_scale = {dp.block_scale!r}): "
                          f"give a_scale and b_scale")
    cv = c.astype(np.float64)
    if av.ndim == 2:
        if scales is not None:
            scales = tuple(x[None] for x in scales[:4]) + scales[4:]
        return run_datapath(av[None], bv[None], cv[None], dp, a_fmt, b_fmt, acc, scales,
                            device=dev)[0]
    return run_datapath(av, bv, cv, dp, a_fmt, b_fmt, acc, scales, device=dev)


def _device_values(x, given: Optional[str], what: str):
    """(float64 device array, format) of a CUDA-array operand: float16 / float32 / float64
    values (ml_dtypes formats have no CUDA array interface), checked on the device to be exactly
    representable in the format (``given``, or fp16 for a float16 array)."""
    from .cuda import arrays, elementwise, validate
    dev = arrays.to_device(x)
    dtype = np.dtype(dev.dtype)
    if dtype.kind != "f":
        raise FormatError(f"{what}: a CUDA array must hold float values (float16 / float32 / "
                          f"float64), got dtype {dtype}")
    fmt = given if given is not None else ("fp16" if dtype == np.float16 else None)
    if fmt is None:
        raise FormatError(f"{what}: give {what}_format (a CUDA array of {dtype} values does not "
                          f"say which format they are codes of)")
    fmt = _input_format(np.empty(0, dtype), fmt, what)
    values = elementwise.astype(dev, np.float64)
    validate.check_representable(values, fmt, what)
    return values, fmt


def _mma_cuda_arrays(a, b, c, model, a_format, b_format, acc, path, a_scale, b_scale,
                     scale_format):
    """mma on CUDA-array operands: checked, computed and returned on the GPU."""
    from .cuda import arrays, elementwise
    from .cuda.run import run_datapath as run_cuda
    for name, x in (("a", a), ("b", b)):
        if not is_cuda_array(x):
            raise ShapeError(f"{name} is a host array while another operand is a CUDA array: "
                             f"give all of a, b, c on the same device")
    av, a_fmt = _device_values(a, a_format, "a")
    bv, b_fmt = _device_values(b, b_format, "b")
    a_shape, b_shape = tuple(av.shape), tuple(bv.shape)
    if len(a_shape) not in (2, 3) or len(a_shape) != len(b_shape) \
            or a_shape[:-2] != b_shape[:-2] or a_shape[-1] != b_shape[-2]:
        raise ShapeError(f"a {a_shape} and b {b_shape} do not multiply "
                         f"(need (M, K) x (K, N), or (B, M, K) x (B, K, N))")
    out_shape = a_shape[:-1] + b_shape[-1:]
    if c is None:
        cv = arrays.to_device(np.zeros(out_shape))
    else:
        if not is_cuda_array(c):
            raise ShapeError("c is a host array while a and b are CUDA arrays")
        cdev = arrays.to_device(c)
        if np.dtype(cdev.dtype) != ACC_DTYPES[acc]:
            raise FormatError(f"c must be {ACC_DTYPES[acc]} for acc={acc!r}, got {cdev.dtype}")
        if tuple(cdev.shape) != tuple(out_shape):
            raise ShapeError(f"c has shape {tuple(cdev.shape)}, expected {out_shape}")
        cv = elementwise.astype(cdev, np.float64)
    scaled = a_scale is not None or b_scale is not None
    host_scale = [None if s is None else arrays.to_host(arrays.to_device(s))
                  if is_cuda_array(s) else s for s in (a_scale, b_scale)]
    sfmt = None
    if host_scale[0] is not None:
        sfmt = scale_format_of(host_scale[0], scale_format, "a_scale")
    dp = resolve_datapath(model, a_fmt, b_fmt, acc, path, scaled=scaled, scale_format=sfmt)
    scales = None
    if scaled:
        scales = operand_scales(dp, host_scale[0], host_scale[1], scale_format, a_shape,
                                b_shape)
    elif dp.block_scale != "none":
        raise ConfigError(f"this datapath is block-scaled (block_scale = {dp.block_scale!r}): "
                          f"give a_scale and b_scale")
    if len(a_shape) == 2:
        av, bv, cv = (x.reshape((1,) + tuple(x.shape)) for x in (av, bv, cv))
        if scales is not None:
            scales = tuple(x[None] for x in scales[:4]) + scales[4:]
    d = run_cuda(av, bv, cv, dp, a_fmt, b_fmt, acc, scales)
    if len(out_shape) == 2:
        d = d.reshape(tuple(out_shape))
    return arrays.like(d, a)


def operand_scales(dp: Datapath, a_scale, b_scale, scale_format: Optional[str], a_shape,
                   b_shape) -> tuple:
    """Checked block scales: (sa, xa, sb, xb, block) with sa, xa (..., M, K/s) and sb, xb
    (..., K/s, N) scale values / int64 exponents, and block = s K elements per scale."""
    if dp.block_scale == "none":
        raise ConfigError("a_scale / b_scale given, but this datapath takes no block scales "
                          "(choose a block-scaled path, e.g. path='mxf8f6f4' on b200)")
    if a_scale is None or b_scale is None:
        raise ShapeError("a block-scaled MMA needs both a_scale and b_scale")
    fmt_a = scale_format_of(a_scale, scale_format, "a_scale")
    fmt_b = scale_format_of(b_scale, scale_format, "b_scale")
    if fmt_a != fmt_b:
        raise FormatError(f"a_scale is {fmt_a} but b_scale is {fmt_b}")
    if isinstance(dp, InstructionPath) and dp.scale_formats and fmt_a not in dp.scale_formats:
        raise FormatError(f"this path takes {' or '.join(dp.scale_formats)} scales, not {fmt_a}")
    sa_arr, sb_arr = np.asarray(a_scale), np.asarray(b_scale)
    k = a_shape[-1]
    block = scale_block(k, sa_arr, sb_arr, a_shape, b_shape)
    if isinstance(dp, InstructionPath) and dp.scale_blocks and block not in dp.scale_blocks:
        raise ShapeError(f"one scale per {block} K elements; this path takes one per "
                         f"{' or '.join(map(str, dp.scale_blocks))}")
    if dp.block_size is not None and k % dp.block_size:
        raise ShapeError(f"K = {k} is not a multiple of the instruction's K = {dp.block_size} "
                         f"(a block-scaled MMA is not zero-padded)")
    if dp.block_scale == "group" and block % dp.group_size:
        raise ShapeError(f"one scale per {block} K elements does not cover whole groups of "
                         f"{dp.group_size}")
    sa, xa = decode_scales(sa_arr, fmt_a, "a_scale", dp.zero_operand_exponent)
    sb, xb = decode_scales(sb_arr, fmt_b, "b_scale", dp.zero_operand_exponent)
    if dp.block_scale == "exponent":
        for name, s, x in (("a_scale", sa, xa), ("b_scale", sb, xb)):
            fin = np.isfinite(s)
            if (fin & (s != np.ldexp(1.0, x.clip(-1000, 1000)))).any():
                raise FormatError(f"{name}: block_scale 'exponent' takes power-of-two scales "
                                  f"(ue8m0)")
    return sa, xa, sb, xb, block


def run_datapath(av: np.ndarray, bv: np.ndarray, cv: np.ndarray, dp: Datapath, a_fmt: str,
                 b_fmt: str, acc: str, scales: Optional[tuple] = None,
                 device: str = "cpu") -> np.ndarray:
    """Kernel dispatch (the kernel tcsim.route.route names) on checked float64 values,
    batched: av (B, M, K), bv (B, K, N), cv (B, M, N); scales: None or (sa, xa, sb, xb, block)
    from :func:`operand_scales`, batched. No validation here; used by mma and by the other
    layers (the GEMM, lowered chains, replays). device "cuda": the same on the GPU backend
    (tcsim.cuda.run), host arrays in and out."""
    if device == "cuda":
        from .cuda import arrays, require
        from .cuda.run import run_datapath as run_cuda
        require()
        d = run_cuda(arrays.to_device(av, np.float64), arrays.to_device(bv, np.float64),
                     arrays.to_device(cv, np.float64), dp, a_fmt, b_fmt, acc, scales)
        return arrays.to_host(d)
    # the kernels (and numba) load on the first run, not on import
    from ._kernels import fused
    from ._kernels.blockfma import exact_kernel
    from ._kernels.prep import prepare_operand
    from ._kernels.staged import staged_kernel
    if (scales is None) != (dp.block_scale == "none"):
        raise ConfigError("block scales must be given exactly for a block-scaled datapath")
    # NaN/Inf inputs (the flushes below keep them) or a NaN block scale
    nan_scale = scales is not None and (np.isnan(scales[0]).any() or np.isnan(scales[2]).any())
    special = nan_scale or not (np.isfinite(av).all() and np.isfinite(bv).all()
                                and np.isfinite(cv).all())
    kernel_route = route(dp, a_fmt, b_fmt, acc, av.shape[2], special)
    if kernel_route.kernel is Kernel.LOWERED:   # its inner instructions are routed again
        return _unsigned_zero(to_accumulator(
            run_lowered(av, bv, cv, dp, a_fmt, b_fmt, acc, run_datapath).astype(np.float64),
            acc), dp)
    if dp.flush_nodes:   # CDNA2: inputs and C below their smallest normal become +0
        av = np.where(np.abs(av) < get_format(a_fmt).min_normal, 0.0, av)
        bv = np.where(np.abs(bv) < get_format(b_fmt).min_normal, 0.0, bv)
        cv = np.where(np.abs(cv) < get_format(acc).min_normal, 0.0, cv)
    if dp.subnormal_inputs == "flush":
        av, bv = flush_subnormals(av, a_fmt), flush_subnormals(bv, b_fmt)
    if dp.subnormal_outputs == "flush":
        cv = flush_subnormals(cv, acc)
    av, bv, cv = np.ascontiguousarray(av), np.ascontiguousarray(bv), np.ascontiguousarray(cv)
    dtype = np.float32 if kernel_route.float32_operands else np.float64
    a_fin, pa = np.empty(av.shape, dtype), np.empty(av.shape, np.int16)
    b_fin, pb = np.empty(bv.shape, dtype), np.empty(bv.shape, np.int16)
    zero_exp = NO_TERM if dp.zero_operand_exponent is None else dp.zero_operand_exponent
    prepare_operand(av, get_format(a_fmt).emin, zero_exp, a_fin, pa)
    prepare_operand(bv, get_format(b_fmt).emin, zero_exp, b_fin, pb)
    block = 0
    if scales is not None:
        sa, xa, sb, xb, block = scales
        # a NaN scale makes its whole K block of that row / column NaN
        # (docs/hardware.md#blackwell-block-scaled)
        nan_a = np.repeat(np.isnan(sa), block, axis=-1)
        nan_b = np.repeat(np.isnan(sb), block, axis=-2)
        if nan_a.any() or nan_b.any():
            av, bv = np.where(nan_a, np.nan, av), np.where(nan_b, np.nan, bv)
        if dp.block_scale == "exponent":
            # scaled product a*2^Xa * b*2^Xb, exponent (ea + Xa) + (eb + Xb): pre-scale each
            # operand (an exact power-of-two scaling) and shift its exponent, then run the plain
            # block FMA (tcgen05 kind::mxf8f6f4, docs/hardware.md#blackwell-block-scaled)
            xa_k = np.repeat(xa, block, axis=-1)
            xb_k = np.repeat(xb, block, axis=-2)
            a_fin = np.ldexp(a_fin, xa_k)
            b_fin = np.ldexp(b_fin, xb_k)
            pa = np.where(pa != NO_TERM, pa + xa_k, NO_TERM).astype(np.int16)
            pb = np.where(pb != NO_TERM, pb + xb_k, NO_TERM).astype(np.int16)
            scales = None
    prm = kernel_params(dp, acc, av.shape[2], special, block, a_fmt, b_fmt,
                       kernel_route)
    if kernel_route.kernel is Kernel.EXACT:
        d = exact_kernel(a_fin, b_fin, av, bv, cv, prm)
    elif kernel_route.kernel is Kernel.FUSED:       # the common FP8 paths
        d = fused.run(a_fin, b_fin, pa, pb, cv, prm)
    else:                                   # Kernel.STAGED_TILE, Kernel.PAIRWISE
        NB, M, K = av.shape
        N = bv.shape[2]
        if scales is None:
            sa, sb = np.ones((NB, M, 1)), np.ones((NB, 1, N))
            xa, xb = np.zeros((NB, M, 1), np.int64), np.zeros((NB, 1, N), np.int64)
        sa_fin = np.ascontiguousarray(np.where(np.isnan(sa), 0.0, sa))
        sb_fin = np.ascontiguousarray(np.where(np.isnan(sb), 0.0, sb))
        xa, xb = np.ascontiguousarray(xa, np.int64), np.ascontiguousarray(xb, np.int64)
        # B's raw values transposed, for the output-by-output route only
        bT_raw = np.zeros((1, 1, 1)) if prm.tiled else np.ascontiguousarray(bv.transpose(0, 2, 1))
        a32 = b32 = np.zeros((1, 1, 1), np.float32)
        if prm.int32_sums:     # exact values (no copy when prepared in float32)
            a32, b32 = np.asarray(a_fin, np.float32), np.asarray(b_fin, np.float32)
        a_fin, b_fin = np.asarray(a_fin, np.float64), np.asarray(b_fin, np.float64)
        d = staged_kernel(a_fin, b_fin, av, bv, bT_raw, pa, pb, cv, sa_fin, xa, sb_fin, xb, a32,
                          b32, prm)
    return _unsigned_zero(to_accumulator(d, acc), dp)


def _unsigned_zero(d: np.ndarray, dp: Datapath) -> np.ndarray:
    """zero_sign "unsigned": every zero result is +0, an underflow to zero included (a -0 in the
    middle of a chain changes nothing else: a zero C takes no part in E and adds nothing)."""
    if dp.zero_sign == "unsigned":
        d[d == 0] = 0
    return d
