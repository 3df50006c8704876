"""Operand preparation for the kernels, in one serial pass (private)."""

from __future__ import annotations

from numba import njit

from ..kernel_constants import NO_TERM
from . import scalar
from .roundpack import exponent_of


@njit(cache=True, inline="always")
def prepare_value(x, emin, zero_exp):
    """(value, exponent, special) of one input x (see prepare_operand): a finite x is kept with
    exp(x) = max(floor(log2|x|), emin), ``zero_exp`` for a zero; a NaN/Inf becomes 0 with
    NO_TERM and special = 1. One element: the CPU loop below and the GPU backend's kernel
    (tcsim.cuda.prep) both call it."""
    if scalar.isfinite(x):
        return x, max(exponent_of(x), emin) if x != 0.0 else zero_exp, 0
    return 0.0, NO_TERM, 1


@njit(cache=True)
def prepare_operand(values, emin, zero_exp, out_values, out_exps):
    """One pass over an operand (any shape, C-contiguous float64 values):

    out_values = values with NaN/Inf replaced by 0 (the kernels' finite part);
    out_exps (int16) = exp(x) for finite nonzero x, else NO_TERM, where exp(x) = floor(log2|x|)
    clamped below at the format's emin: the unnormalised product exponent is ea + eb
    (docs/hardware.md#products); every input value is a normal float64, so floor(log2|x|) is
    its biased exponent field minus 1023. A zero gets ``zero_exp`` (NO_TERM, or the datapath's
    zero_operand_exponent).
    Returns the number of NaN/Inf entries. Serial: it runs at memory speed (about 0.3 ns an
    element), where a parallel loop cost more in thread start-up than it saved. The outputs are
    float64 or float32 (the two signatures this helper is compiled for); both hold the values
    exactly.
    """
    flat = values.reshape(-1)
    ov = out_values.reshape(-1)
    op = out_exps.reshape(-1)
    special = 0
    for i in range(flat.size):
        v, e, bad = prepare_value(flat[i], emin, zero_exp)
        ov[i] = v
        op[i] = e
        special += bad
    return special
