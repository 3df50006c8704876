"""Operand arrays and format codes: ml_dtypes arrays, raw-code arrays, packed FP4, the
accumulator's arrays.

What turns the arrays a user passes (ml_dtypes / float16 arrays, raw bytes saved with
``np.save``, uint8 pairs of packed e2m1 codes) into float64 values of a format, and which
format an operand is in (:func:`operand_format`: its dtype and/or a keyword). ml_dtypes is
imported only by :func:`ml_dtype`. The accumulator's dtypes and canonical NaN
(:data:`ACC_DTYPES`, :data:`ACC_BITS_DTYPES`, :data:`CANONICAL_NAN_BITS`) are stated here once
for tcsim.mma and the GPU backend (tcsim.cuda.prep), which both write C and D arrays.
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np

from ..errors import FormatError
from .catalog import FloatFormat, code_bits, get_format
from .conversion import check_representable, decode, encode

__all__ = ["ACC_BITS_DTYPES", "ACC_DTYPES", "CANONICAL_NAN_BITS", "dtype_values", "ml_dtype",
           "operand_format", "pack_e2m1", "raw_code_values", "unpack_e2m1"]


# ---- the accumulator's arrays (C and D) ----------------------------------------------------------

# The dtype of C and D for each accumulator format, and the unsigned view of the same width
# that writes a value's bits.
ACC_DTYPES = {"fp32": np.dtype(np.float32), "fp16": np.dtype(np.float16)}
ACC_BITS_DTYPES = {"fp32": np.dtype(np.uint32), "fp16": np.dtype(np.uint16)}
# NVIDIA's canonical NaN (PTX ISA: results that are NaN are the canonical NaN 0x7fffffff), the
# pattern every NaN result takes. Plain ints: the CUDA kernel takes one as an int64 argument.
CANONICAL_NAN_BITS = {"fp32": 0x7FFFFFFF, "fp16": 0x7FFF}


# ---- ml_dtypes interop ---------------------------------------------------------------------------

def ml_dtype(fmt: str | FloatFormat):
    """The ml_dtypes / numpy dtype holding ``fmt`` codes, or None (tf32, fp32 have none here)."""
    import ml_dtypes
    table = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2,
             "e4m3fnuz": ml_dtypes.float8_e4m3fnuz, "e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
             "fp16": np.float16, "bf16": ml_dtypes.bfloat16, "e8m0": ml_dtypes.float8_e8m0fnu,
             "e2m3": ml_dtypes.float6_e2m3fn, "e3m2": ml_dtypes.float6_e3m2fn,
             "e2m1": ml_dtypes.float4_e2m1fn}
    dt = table.get(get_format(fmt).name)
    return None if dt is None else np.dtype(dt)


@functools.lru_cache(maxsize=16)
def _decode_table(dtype: np.dtype) -> np.ndarray:
    codes = np.arange(1 << (8 * dtype.itemsize), dtype=f"u{dtype.itemsize}")
    return codes.view(dtype).astype(np.float64)


def dtype_values(arr: np.ndarray) -> np.ndarray:
    """float64 values of an 8- or 16-bit float array (ml_dtypes or float16), by table lookup:
    several times faster than ml_dtypes' element-wise cast, and the same values."""
    arr = np.asarray(arr)
    return _decode_table(arr.dtype)[arr.view(f"u{arr.dtype.itemsize}")]


def raw_code_values(arr: np.ndarray, fmt: str | FloatFormat, what: str) -> np.ndarray:
    """float64 values of a raw-bytes array (numpy void dtype, e.g. ``|V1``) read as codes of
    ``fmt``: what an ml_dtypes array saved with ``np.save`` loads back as. FormatError when the
    code width is not the format's or a code is not one of ``fmt``."""
    arr = np.asarray(arr)
    f = get_format(fmt)
    n = arr.dtype.itemsize
    if arr.dtype.type is not np.void or n not in (1, 2, 4) or code_bits(f) != 8 * n:
        raise FormatError(f"{what} holds raw {n}-byte values (dtype {arr.dtype}); format "
                          f"{f.name} has {code_bits(f) // 8}-byte codes")
    try:
        return decode(arr.view(f"u{n}"), f)
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from None


# ---- packed FP4 ----------------------------------------------------------------------------------
# Block-scaled FP4 instructions take two e2m1 codes per byte: element 2i in the low nibble,
# element 2i + 1 in the high nibble, packed along K (MMA-Sim's unpack_fp4_tensor; PTX .e2m1x2).

def unpack_e2m1(packed, axis: int = -1) -> np.ndarray:
    """float64 values of a uint8 array of packed e2m1 pairs; ``axis`` doubles in length."""
    p = np.asarray(packed)
    if p.dtype != np.uint8:
        raise FormatError(f"packed FP4 must be a uint8 array, got dtype {p.dtype}")
    low = decode((p & 0x0F).astype(np.uint8), "e2m1")
    high = decode((p >> 4).astype(np.uint8), "e2m1")
    out = np.stack([np.moveaxis(low, axis, -1), np.moveaxis(high, axis, -1)], axis=-1)
    out = out.reshape(out.shape[:-2] + (-1,))
    return np.moveaxis(out, -1, axis)


def pack_e2m1(values, axis: int = -1) -> np.ndarray:
    """uint8 pairs of e2m1 codes (low nibble first) of values exactly representable in e2m1;
    ``axis`` (even length) halves."""
    v = np.asarray(values, dtype=np.float64)
    check_representable(v, "e2m1", what="values")
    if v.shape[axis] % 2:
        raise FormatError(f"pack_e2m1: axis {axis} has odd length {v.shape[axis]}")
    codes = np.moveaxis(encode(v, "e2m1").astype(np.uint8), axis, -1)
    pairs = codes.reshape(codes.shape[:-1] + (-1, 2))
    return np.moveaxis((pairs[..., 0] | (pairs[..., 1] << 4)).astype(np.uint8), -1, axis)


# ---- the format of an operand --------------------------------------------------------------------

def operand_format(x, given: Optional[str], dtype_formats: dict, allowed, option: str,
                   kind: str, what: str, canonical=None) -> str:
    """The format name of operand ``x``: implied by its (ml_dtypes) dtype through
    ``dtype_formats`` and/or ``given`` (the value of the keyword ``option``), one of ``allowed``.
    ``canonical`` maps a given name to its canonical spelling (e.g. get_format(n).name).
    FormatError when neither says, when the name is not ``kind``, or when they disagree."""
    implied = dtype_formats.get(getattr(getattr(x, "dtype", None), "name", ""))
    if given is None:
        if implied is None:
            raise FormatError(f"{option} is required for a {np.asarray(x).dtype} array {what} "
                              f"(one of {', '.join(allowed)})")
        return implied
    name = canonical(given) if canonical is not None else given
    if name not in allowed:
        raise FormatError(f"{option} {given!r} is not {kind} (one of {', '.join(allowed)})")
    if implied is not None and implied != name:
        raise FormatError(f"{what} has dtype {x.dtype} but {option} is {given!r}")
    return name
