"""Recorded tensor-core rows through a datapath, results as fp32 bit patterns.

A recorded row i holds a_i, b_i (K values each), C_i and the hardware's D_i = sum_k a_ik *
b_ik + C_i: one (1, K) x (K, 1) product. Every replay of such rows (``tcsim corpus``,
``tcsim fit``, gpu_validate's replay) takes the same two steps, stated here once:

* :func:`c_in_accumulator`: C is recorded as an fp32 value; the unit receives it in its
  accumulator format (an fp16-output path rounds it to fp16 first);
* :func:`rows_to_bits`: simulate every row, and give the results as the fp32 bit patterns the
  hardware outputs are recorded in (fp16 results widened to fp32, exactly).

gpu_validate's device side, which runs without tcsim, keeps its own copy of the first step
(gpu_validate.device.c_operand, tested equal to this one).
"""

from __future__ import annotations

import numpy as np

from .datapath import Datapath
from .formats.conversion import round_to_format
from .mma import run_datapath

__all__ = ["c_in_accumulator", "rows_to_bits"]


def c_in_accumulator(c, acc: str, rounding: str = "rne") -> np.ndarray:
    """The recorded C (fp32 values, any shape) as the unit receives it for accumulator ``acc``
    (float64 values): fp32 as is; a narrower format (fp16) rounded to it with ``rounding``
    (``Datapath.c_precision_rounding``: RNE on every known path), subnormals kept, overflow to
    +-Inf, NaN as NaN. The exact oracle does the same when it decodes C
    (tcsim.reference.trace_dot's "decode" stage). For a C that ``acc`` already holds this is the
    identity."""
    c = np.asarray(c, dtype=np.float64)
    if acc == "fp32":
        return c
    return round_to_format(c, acc, rounding=rounding)


def rows_to_bits(a, b, c, datapath: Datapath, a_format: str, b_format: str,
                 acc: str) -> np.ndarray:
    """The datapath's result of every row as fp32 bit patterns (uint32, shape (rows,)).

    a, b: (rows, K) float64 values of ``a_format`` / ``b_format``; c: (rows,) values already in
    the accumulator format (see :func:`c_in_accumulator`). Row i is the product of a[i] as a
    (1, K) matrix and b[i] as a (K, 1) matrix, plus c[i]; fp16 results are widened to fp32
    (exact), as the recorded outputs store them. No validation (as tcsim.mma.run_datapath).
    """
    a, b, c = (np.ascontiguousarray(x) for x in (a, b, c))
    rows, k = a.shape
    d = run_datapath(a.reshape(rows, 1, k), b.reshape(rows, k, 1), c.reshape(rows, 1, 1),
                     datapath, a_format, b_format, acc).reshape(rows)
    return np.ascontiguousarray(d.astype(np.float32)).view(np.uint32)
