"""``tcsim.mma``: D = A*B + C through a modelled matrix unit, bit for bit."""

from __future__ import annotations

from typing import Optional, Union

import numpy as np

from . import formats
from ._kernels.blockfma import NO_TERM, exact_kernel, grid_kernel, grid_kernel_f32
from ._kernels.prep import prepare_operand
from .config import Datapath, GpuModel, INPUT_FORMATS, OUTPUT_FORMATS
from .errors import FormatError, ShapeError, UnknownModelError
from .params import fits_float32, kernel_params
from .presets import ModelLike, load_model

# NVIDIA's canonical NaN (PTX ISA: results that are NaN are the canonical NaN 0x7fffffff).
CANONICAL_NAN_BITS = {"fp32": np.uint32(0x7FFFFFFF), "fp16": np.uint16(0x7FFF)}
ACC_DTYPES = {"fp32": np.dtype(np.float32), "fp16": np.dtype(np.float16)}

# numpy / ml_dtypes dtype name -> tcsim input format name
_DTYPE_FORMATS = {"float8_e4m3fn": "e4m3", "float8_e5m2": "e5m2", "float16": "fp16",
                  "float8_e4m3fnuz": "e4m3fnuz", "float8_e5m2fnuz": "e5m2fnuz",
                  "float6_e2m3fn": "e2m3", "float6_e3m2fn": "e3m2", "float4_e2m1fn": "e2m1",
                  "bfloat16": "bf16"}


def _input_format(x, given: Optional[str], what: str) -> str:
    """The input format of operand ``what``: from its ml_dtypes dtype and/or the name given."""
    implied = _DTYPE_FORMATS.get(getattr(getattr(x, "dtype", None), "name", ""))
    if given is None:
        if implied is None:
            raise FormatError(f"{what}_format is required for a {np.asarray(x).dtype} array "
                              f"(one of {', '.join(INPUT_FORMATS)})")
        return implied
    name = formats.get_format(given).name
    if name not in INPUT_FORMATS:
        raise FormatError(f"{what}_format {given!r} is not a matrix-unit input format "
                          f"(one of {', '.join(INPUT_FORMATS)})")
    if implied is not None and implied != name:
        raise FormatError(f"{what} has dtype {x.dtype} but {what}_format is {given!r}")
    return name


def input_values(x, fmt: str, what: str) -> np.ndarray:
    """Operand ``x`` (2-D, or 3-D batched) as float64 values, checked to be exactly representable
    in ``fmt``."""
    arr = np.asarray(x)
    if arr.ndim not in (2, 3):
        raise ShapeError(f"{what} must be 2-D (or 3-D for a batch), got shape {arr.shape}")
    if arr.dtype.kind not in "fV" and arr.dtype.name not in _DTYPE_FORMATS:
        raise FormatError(f"{what} must be a float array (or an ml_dtypes array), "
                          f"got dtype {arr.dtype}")
    if _DTYPE_FORMATS.get(arr.dtype.name) == fmt:   # a dtype of the format needs no check
        return formats.dtype_values(arr)
    values = arr.astype(np.float64)
    formats.check_representable(values, fmt, what=what)
    return values


def flush_subnormals(values: np.ndarray, fmt: str) -> np.ndarray:
    """Subnormal values of ``fmt`` replaced by zeros of the same sign."""
    tiny = np.abs(values) < formats.get_format(fmt).min_normal
    return np.where(tiny, np.copysign(0.0, values), values)


def resolve_datapath(model: Union[ModelLike, Datapath], a_format: str, b_format: str, acc: str,
                     path: Optional[str]) -> Datapath:
    """The datapath a model uses for ``a_format x b_format -> acc`` (a Datapath is used as is)."""
    if isinstance(model, Datapath) and not isinstance(model, GpuModel):
        if path is not None:
            raise UnknownModelError("path= only applies to a GPU model, not to a bare Datapath")
        return model
    gpu = load_model(model)
    return gpu.find_path(a_format, b_format, acc, path)


def to_accumulator(values: np.ndarray, acc: str) -> np.ndarray:
    """float64 result values -> the accumulator dtype, NaNs as the canonical NaN pattern."""
    out = values.astype(ACC_DTYPES[acc])
    nan = np.isnan(out)
    if nan.any():
        bits = out.view(np.uint32 if acc == "fp32" else np.uint16)
        bits[nan] = CANONICAL_NAN_BITS[acc]
    return out


def mma(a, b, c=None, model: Union[ModelLike, Datapath] = "h100", a_format: Optional[str] = None,
        b_format: Optional[str] = None, acc: str = "fp32", path: Optional[str] = None) -> np.ndarray:
    """Compute D = A*B + C as the modelled matrix unit does, bit for bit.

    a: (M, K) and b: (K, N) arrays (or (B, M, K) and (B, K, N) for a batch of B products) holding values exactly representable in ``a_format`` /
    ``b_format`` ("e4m3", "e5m2", "fp16", "bf16", "tf32"), or ml_dtypes / float16 arrays (their
    dtype implies the format). A value that is not representable raises FormatError: nothing is
    silently rounded. c: (M, N) (or (B, M, N)) float32 (float16 when acc="fp16"), or None for zeros.
    model: a preset name ("h100", "b200", "ideal", "fp32-fma", ...), a TOML file, a GpuModel, or a
    bare Datapath. path: choose a non-default instruction path of the model (e.g. "mma.sync" on
    b200). K longer than the block size runs as a chain of blocks, each result the next C.
    Returns D in the accumulator dtype (NaN as the canonical 0x7fffffff / 0x7fff).
    """
    if acc not in OUTPUT_FORMATS:
        raise FormatError(f"acc must be one of {OUTPUT_FORMATS}, got {acc!r}")
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
    dp = resolve_datapath(model, a_fmt, b_fmt, acc, path)
    cv = c.astype(np.float64)
    if av.ndim == 2:
        return run_datapath(av[None], bv[None], cv[None], dp, a_fmt, b_fmt, acc)[0]
    return run_datapath(av, bv, cv, dp, a_fmt, b_fmt, acc)


def run_datapath(av: np.ndarray, bv: np.ndarray, cv: np.ndarray, dp: Datapath, a_fmt: str,
                 b_fmt: str, acc: str) -> np.ndarray:
    """Kernel dispatch on checked float64 values, batched: av (B, M, K), bv (B, K, N),
    cv (B, M, N). No validation here; used by mma and by the other layers."""
    if dp.subnormal_inputs == "flush":
        av, bv = flush_subnormals(av, a_fmt), flush_subnormals(bv, b_fmt)
    if dp.subnormal_outputs == "flush":
        cv = flush_subnormals(cv, acc)
    av, bv, cv = np.ascontiguousarray(av), np.ascontiguousarray(bv), np.ascontiguousarray(cv)
    dtype = np.float64
    if dp.fraction_bits is not None and fits_float32(dp, a_fmt, b_fmt, av.shape[2]):
        dtype = np.float32
    a_fin, pa = np.empty(av.shape, dtype), np.empty(av.shape, np.int16)
    b_fin, pb = np.empty(bv.shape, dtype), np.empty(bv.shape, np.int16)
    zero_exp = NO_TERM if dp.zero_operand_exponent is None else dp.zero_operand_exponent
    special = prepare_operand(av, formats.get_format(a_fmt).emin, zero_exp, a_fin, pa) > 0
    special |= prepare_operand(bv, formats.get_format(b_fmt).emin, zero_exp, b_fin, pb) > 0
    special |= not np.isfinite(cv).all()
    prm = kernel_params(dp, acc, av.shape[2], special)
    if dp.fraction_bits is None:
        d = exact_kernel(a_fin, b_fin, av, bv, cv, prm)
    elif dtype == np.float32:
        d = grid_kernel_f32(a_fin, b_fin, av, bv, pa, pb, cv, prm)
    else:
        d = grid_kernel(a_fin, b_fin, av, bv, pa, pb, cv, prm)
    return to_accumulator(d, acc)
