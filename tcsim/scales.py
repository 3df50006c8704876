"""Scale operands of block-scaled MMA instructions (docs/hardware.md#blackwell-block-scaled).

Two scale formats:

* ``ue8m0``: an unsigned power of two 2^(code - 127), code 0..254; code 0xFF is NaN; no zero.
  Given as an ml_dtypes ``float8_e8m0fnu`` array, or as floats that are such powers of two.
  Raw 1-byte codes (numpy void ``|V1``: what an ml_dtypes array saved with ``np.save`` loads
  back as) are read as codes of the scale format given, in either format.
* ``ue4m3``: an e4m3 value whose sign is ignored (NVFP4's per-16 scale). Given as an ml_dtypes
  ``float8_e4m3fn`` array, or as floats representable in e4m3.

A scale s is used as its exponent X = floor(log2 s) (clamped at e4m3's emin -6 for a subnormal
ue4m3, whose significand is then 0.mmm) and its value s = sig * 2^X. A zero ue4m3 scale has the
datapath's zero-operand exponent (MMA-Sim's current code: a zero gets exponent -126; its code
before 2026-01-22 gave -999, the same as taking no part in E).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import FormatError, ShapeError
from .formats.conversion import check_representable
from .formats.operands import operand_format, raw_code_values
from .kernel_constants import NO_TERM

SCALE_FORMATS = ("ue8m0", "ue4m3")
_DTYPE_SCALE_FORMATS = {"float8_e8m0fnu": "ue8m0", "float8_e4m3fn": "ue4m3"}
_SCALE_FORMAT_DTYPES = {fmt: dtype for dtype, fmt in _DTYPE_SCALE_FORMATS.items()}
_CODE_FORMATS = {"ue8m0": "e8m0", "ue4m3": "e4m3"}      # whose codes a scale format's are
UE4M3_EMIN = -6       # e4m3: smallest normal exponent; subnormals share it


def scale_format_of(x, given: Optional[str], what: str) -> str:
    """The scale format of ``x``: from its ml_dtypes dtype and/or the name given."""
    return operand_format(x, given, _DTYPE_SCALE_FORMATS, SCALE_FORMATS, "scale_format",
                                  "a scale format", what)


def decode_scales(x, fmt: str, what: str, zero_exp: Optional[int]):
    """(values, exponents) of a scale array: float64 values (NaN kept, ue4m3 sign dropped) and
    int64 exponents X (NaN: 0; a zero ue4m3 scale: ``zero_exp``, or NO_TERM when None)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fV" and arr.dtype.name not in _DTYPE_SCALE_FORMATS:
        raise FormatError(f"{what} must be a float array (or an ml_dtypes array), got dtype "
                          f"{arr.dtype}")
    # codes of fmt (raw bytes, or the ml_dtypes dtype of fmt itself) need no representability
    # check; values of any other dtype do
    coded = arr.dtype.type is np.void or arr.dtype.name == _SCALE_FORMAT_DTYPES[fmt]
    if arr.dtype.type is np.void:
        # raw codes: an ml_dtypes scale array saved with np.save loads back as |V1
        values = raw_code_values(arr, _CODE_FORMATS[fmt], what)
    else:
        values = arr.astype(np.float64)
    nan = np.isnan(values)
    if fmt == "ue8m0":
        if not coded:
            check_representable(np.where(nan, 1.0, values), "e8m0", what=what)
    else:
        if not coded:
            check_representable(np.where(nan, 0.0, values), "e4m3", what=what)
        values = np.abs(values)
    mant, exp = np.frexp(np.where(nan | (values == 0.0), 1.0, values))
    exps = (exp - 1).astype(np.int64)                       # floor(log2 s)
    if fmt == "ue4m3":
        exps = np.maximum(exps, UE4M3_EMIN)
        zero = (values == 0.0) & ~nan
        exps[zero] = NO_TERM if zero_exp is None else zero_exp
    exps[nan] = 0
    return values, exps


def scale_block(k: int, a_scale: np.ndarray, b_scale: np.ndarray, a_shape, b_shape) -> int:
    """K elements per scale, from the shapes: a_scale (..., M, K/s), b_scale (..., K/s, N)."""
    if a_scale.ndim != len(a_shape) or b_scale.ndim != len(b_shape):
        raise ShapeError(f"a_scale {a_scale.shape} / b_scale {b_scale.shape} must have the "
                         f"dimensions of a {tuple(a_shape)} / b {tuple(b_shape)}")
    ns = a_scale.shape[-1]
    if ns == 0 or k % ns:
        raise ShapeError(f"a_scale has {ns} scales per row, which does not divide K = {k}")
    want_a = tuple(a_shape[:-1]) + (ns,)
    want_b = tuple(b_shape[:-2]) + (ns, b_shape[-1])
    if a_scale.shape != want_a:
        raise ShapeError(f"a_scale has shape {a_scale.shape}, expected {want_a} "
                         f"(one scale per {k // ns} K elements of each row of a)")
    if b_scale.shape != want_b:
        raise ShapeError(f"b_scale has shape {b_scale.shape}, expected {want_b} "
                         f"(one scale per {k // ns} K elements of each column of b)")
    return k // ns
