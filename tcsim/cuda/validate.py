"""Input checks of the GPU backend on device arrays: the same rule as the CPU's
(tcsim.formats.check_representable: nothing is rounded silently), on the device, with only a
flag (and, on a failure, the mask for the message) read back."""

from __future__ import annotations

import numpy as np

from .._kernels.codec import (
    P_EMAX,
    P_EMIN,
    P_HAS_INF,
    P_HAS_ZERO,
    P_MAN_BITS,
    P_NAN_KIND,
    P_QMAX,
    P_SIGNED,
    representable_value,
)
from ..errors import FormatError
from ..formats.catalog import get_format
from ..formats.conversion import format_params, index_str
from . import THREADS, arrays, blocks, cuda

_cuda = cuda()


@_cuda.jit
def _representable_flat(x, m, emin, emax, qmax, has_zero, signed, has_inf, nan_kind, ok,
                        any_bad):
    """ok[t] = x[t] is exactly a value of the format (tcsim._kernels.codec.representable_value,
    the CPU's own per-value rule, with the format's fields); any_bad[0] = 1 when some is not."""
    t = _cuda.grid(1)
    if t < x.size:
        good = representable_value(x[t], m, emin, emax, qmax, has_zero, signed, has_inf,
                                   nan_kind)
        ok[t] = good
        if not good:
            any_bad[0] = 1


def check_representable(values, fmt: str, what: str) -> None:
    """Raise FormatError unless every element of the float64 device array ``values`` is exactly
    a value of ``fmt`` (the CPU check's message: first offending element, how many more)."""
    if values.size == 0:
        return
    f = get_format(fmt)
    fields = [int(v) for v in format_params(f)[[P_MAN_BITS, P_EMIN, P_EMAX, P_QMAX,
                                                          P_HAS_ZERO, P_SIGNED, P_HAS_INF,
                                                          P_NAN_KIND]]]
    flat = values.reshape(values.size)
    ok = arrays.empty((values.size,), np.bool_)
    bad = arrays.to_device(np.zeros(1, np.int32))
    _representable_flat[blocks(values.size), THREADS](flat, *fields, ok, bad)
    if not bad.copy_to_host()[0]:
        return
    mask = ok.copy_to_host()
    idx = np.flatnonzero(~mask)
    i = int(idx[0])
    value = flat[i:i + 1].copy_to_host()[0]
    more = f" (and {idx.size - 1} more)" if idx.size > 1 else ""
    raise FormatError(f"{what} is not exactly representable in {f.name}: "
                      f"{what}{index_str(values.shape, i)} = {value}{more}")


KERNELS = {
    "representable": (_representable_flat, "void(float64[:], int64, int64, int64, int64, int64, "
                                           "int64, int64, int64, boolean[:], int32[:])"),
}
