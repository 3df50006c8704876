"""Operand and result preparation on the device: what tcsim.mma.run_datapath does around the
kernels, as elementwise CUDA kernels (one thread per element, flat C-contiguous arrays).

- :func:`prepare_operand`: tcsim._kernels.prep.prepare_operand (finite values, int16 exponents,
  the number of NaN/Inf entries);
- :func:`flush_subnormals`: tcsim.mma.flush_subnormals (|x| below the smallest normal -> a zero
  of x's sign), and :func:`flush_below_normal`, run_datapath's CDNA ``flush_nodes`` rule (-> +0);
- :func:`has_special`: any NaN/Inf in a, b or c (one launch, one flag back to the host);
- :func:`to_accumulator`: tcsim.mma.to_accumulator (float64 / float32 -> the accumulator dtype,
  NaN as the canonical 0x7fffffff / 0x7fff), with run_datapath's zero_sign "unsigned" rule
  (every zero result +0) as an option.

Each function takes device arrays (or host arrays, copied over) and returns device arrays; the
bits equal the CPU function's (tests/test_cuda_prep.py).
"""

from __future__ import annotations

import math

import numpy as np
from numba import types

from .. import cuda as tcsim_cuda
from .._kernels import scalar
from .._kernels.prep import prepare_value
from ..device import is_cuda_array
from ..formats.catalog import get_format
from ..formats.operands import ACC_BITS_DTYPES, ACC_DTYPES, CANONICAL_NAN_BITS
from . import arrays

cuda = tcsim_cuda.cuda()


def on_device(x) -> bool:
    """True for a device array (tcsim.device.is_cuda_array: numba-cuda's, any
    __cuda_array_interface__ object, or the simulator's stand-in)."""
    return is_cuda_array(x)


def device_array(x, dtype=None):
    """x as a C-contiguous device array (of ``dtype`` when given): tcsim.cuda.arrays.to_device
    (a device array as is, its dtype checked; anything else copied over), which must be
    C-contiguous."""
    arr = arrays.to_device(x, dtype)
    if on_device(x) and not arr.is_c_contiguous():
        raise ValueError("device arrays must be C-contiguous")
    return arr


def flat(x):
    """The 1-D view of a C-contiguous device array (the elementwise kernels' layout)."""
    return x.reshape(x.size)


def launch(kernel, size: int):
    """``kernel`` configured with one thread per element of ``size``."""
    return kernel[tcsim_cuda.blocks(size), tcsim_cuda.THREADS]


# ---- kernels ---------------------------------------------------------------------------------
@cuda.jit
def prepare_kernel(values, emin, zero_exp, out_values, out_exps, special):
    """tcsim._kernels.prep.prepare_operand for element i (its per-value rule, prepare_value: a
    finite x is kept, with exponent max(exponent_of(x), emin), ``zero_exp`` for a zero; a NaN/Inf
    becomes 0 with NO_TERM); NaN/Inf are counted in special[0] (an atomic integer add: the count
    is order-free)."""
    i = cuda.grid(1)
    if i < values.size:
        v, e, bad = prepare_value(values[i], emin, zero_exp)
        out_values[i] = v
        out_exps[i] = e
        if bad:
            cuda.atomic.add(special, 0, 1)


@cuda.jit
def flush_kernel(values, tiny, signed, out):
    """out[i] = a zero (of x's sign when ``signed``, else +0) where |x| < tiny, else x (a NaN
    compares false and is kept, payload included)."""
    i = cuda.grid(1)
    if i < values.size:
        x = values[i]
        if abs(x) < tiny:
            out[i] = math.copysign(0.0, x) if signed else 0.0
        else:
            out[i] = x


@cuda.jit
def special_kernel(a, b, c, found):
    """found[0] = 1 if any element of a, b or c is NaN or Inf (every writer writes 1)."""
    i = cuda.grid(1)
    bad = False
    if i < a.size and not scalar.isfinite(a[i]):
        bad = True
    if i < b.size and not scalar.isfinite(b[i]):
        bad = True
    if i < c.size and not scalar.isfinite(c[i]):
        bad = True
    if bad:
        found[0] = 1


def _accumulator_kernel(cast):
    """The to_accumulator kernel of one accumulator dtype (``cast``: np.float32 / np.float16,
    one IEEE conversion, nearest-even, as numpy's astype)."""
    @cuda.jit
    def kernel(values, out, out_bits, nan_bits, unsigned_zero):
        """out[i] = cast(values[i]); a NaN result as the canonical ``nan_bits`` (written through
        out_bits, the unsigned view of out); with unsigned_zero every zero result (an underflow
        to zero included) +0."""
        i = cuda.grid(1)
        if i < values.size:
            y = cast(values[i])
            w = np.float32(y)       # exact widening: the tests on y run in float32
            if w != w:
                out_bits[i] = nan_bits
            elif unsigned_zero and w == 0.0:
                out[i] = cast(0)
            else:
                out[i] = y
    return kernel


to_fp32_kernel = _accumulator_kernel(np.float32)
to_fp16_kernel = _accumulator_kernel(np.float16)
ACCUMULATOR_KERNELS = {"fp32": to_fp32_kernel, "fp16": to_fp16_kernel}


def _arr(dtype):
    return types.Array(dtype, 1, "C")


_F64, _F32, _F16 = _arr(types.float64), _arr(types.float32), _arr(types.float16)
KERNELS = {
    "prepare_kernel[float32]": (prepare_kernel, (_F64, types.int64, types.int64, _F32,
                                                 _arr(types.int16), _arr(types.int64))),
    "prepare_kernel[float64]": (prepare_kernel, (_F64, types.int64, types.int64, _F64,
                                                 _arr(types.int16), _arr(types.int64))),
    "flush_kernel": (flush_kernel, (_F64, types.float64, types.boolean, _F64)),
    "special_kernel": (special_kernel, (_F64, _F64, _F64, _arr(types.int32))),
    "to_fp32_kernel[float64]": (to_fp32_kernel, (_F64, _F32, _arr(types.uint32), types.int64,
                                                 types.boolean)),
    "to_fp32_kernel[float32]": (to_fp32_kernel, (_F32, _F32, _arr(types.uint32), types.int64,
                                                 types.boolean)),
    "to_fp16_kernel[float64]": (to_fp16_kernel, (_F64, _F16, _arr(types.uint16), types.int64,
                                                 types.boolean)),
    "to_fp16_kernel[float32]": (to_fp16_kernel, (_F32, _F16, _arr(types.uint16), types.int64,
                                                 types.boolean)),
}


# ---- host functions on device arrays ---------------------------------------------------------
def prepare_operand(values, emin: int, zero_exp: int, out_values, out_exps) -> int:
    """tcsim._kernels.prep.prepare_operand on the device: values (float64, any shape), out_values
    (float32 or float64) and out_exps (int16) device arrays of the same shape, filled in place.
    Returns the number of NaN/Inf entries."""
    src = device_array(values, np.float64)
    ov, op = device_array(out_values), device_array(out_exps, np.int16)
    if ov.dtype not in (np.float32, np.float64) or ov.shape != src.shape or op.shape != src.shape:
        raise ValueError("out_values (float32 / float64) and out_exps must have values' shape")
    special = cuda.to_device(np.zeros(1, np.int64))
    if src.size:
        launch(prepare_kernel, src.size)(flat(src), int(emin), int(zero_exp), flat(ov), flat(op),
                                         special)
    return int(special.copy_to_host()[0])


def _flush(values, tiny: float, signed: bool):
    src = device_array(values, np.float64)
    out = cuda.device_array(src.shape, np.float64)
    if src.size:
        launch(flush_kernel, src.size)(flat(src), float(tiny), bool(signed), flat(out))
    return out


def flush_subnormals(values, fmt: str):
    """tcsim.mma.flush_subnormals on the device: float64 values below ``fmt``'s smallest normal
    in magnitude -> a zero of the same sign; a new device array."""
    return _flush(values, get_format(fmt).min_normal, True)


def flush_below_normal(values, fmt: str):
    """run_datapath's CDNA flush (dp.flush_nodes) on the device: float64 values below ``fmt``'s
    smallest normal in magnitude -> +0; a new device array."""
    return _flush(values, get_format(fmt).min_normal, False)


def has_special(a, b, c) -> bool:
    """True when any element of the float64 arrays a, b or c is NaN or Inf (one launch)."""
    arrs = [device_array(x, np.float64) for x in (a, b, c)]
    found = cuda.to_device(np.zeros(1, np.int32))
    size = max(x.size for x in arrs)
    if size:
        launch(special_kernel, size)(*[flat(x) for x in arrs], found)
    return bool(found.copy_to_host()[0])


def to_accumulator(values, acc: str, unsigned_zero: bool = False):
    """tcsim.mma.to_accumulator on the device: float64 (or float32) result values -> a new device
    array of the accumulator dtype (float32 for "fp32", float16 for "fp16"), NaNs as the
    canonical pattern. unsigned_zero: also run_datapath's zero_sign "unsigned" rule (every zero
    result +0), i.e. ``_unsigned_zero(to_accumulator(d, acc), dp)`` in one pass."""
    src = device_array(values)
    if src.dtype not in (np.float32, np.float64):
        raise TypeError(f"values must be float32 or float64, got {src.dtype}")
    out = cuda.device_array(src.shape, ACC_DTYPES[acc])
    if src.size:
        launch(ACCUMULATOR_KERNELS[acc], src.size)(flat(src), flat(out),
                                                   flat(out).view(ACC_BITS_DTYPES[acc]),
                                                   CANONICAL_NAN_BITS[acc], bool(unsigned_zero))
    return out
