"""The GPU backend's kernel dispatch: tcsim.mma.run_datapath on device arrays.

The same steps as the CPU's run_datapath, each on the device: the route (tcsim.route, one
statement for both backends), the flushes, the operand preparation, the block scales, the one
parameter compiler (tcsim.params.kernel_params), the kernel the route names, the conversion to
the accumulator format. A route whose kernel family the GPU does not run (tcsim.cuda.SERVED), or
a mode its staged kernel does not model, raises DeviceError naming it: never a silent fallback.
"""

from __future__ import annotations

import numpy as np

from ..datapath import Datapath
from ..errors import ConfigError, DeviceError
from ..formats.catalog import get_format
from ..kernel_constants import NO_TERM
from ..params import kernel_params
from ..route import Kernel, require, route
from . import SERVED, arrays


def run_datapath(av, bv, cv, dp: Datapath, a_fmt: str, b_fmt: str, acc: str,
                 scales=None):
    """D = A*B + C on the GPU. av (B, M, K), bv (B, K, N), cv (B, M, N): float64 device arrays
    of checked values (as tcsim.mma.run_datapath takes them on the host); scales: None or
    (sa, xa, sb, xb, block) with device (or host) arrays. Returns a device array of the
    accumulator dtype (float32 / float16), NaN as the canonical pattern."""
    from . import blockscale, elementwise, fused, prep, staged
    if (scales is None) != (dp.block_scale == "none"):
        raise ConfigError("block scales must be given exactly for a block-scaled datapath")
    NB, M, K = av.shape
    N = bv.shape[2]
    if scales is not None:
        sa, xa, sb, xb, block = scales
        sa, sb = arrays.to_device(sa, np.float64), arrays.to_device(sb, np.float64)
        xa, xb = arrays.to_device(xa, np.int64), arrays.to_device(xb, np.int64)
        nan_scale = elementwise.any_nan(sa) or elementwise.any_nan(sb)
    else:
        nan_scale, block = False, 0
    special = nan_scale or prep.has_special(av, bv, cv)
    kernel_route = route(dp, a_fmt, b_fmt, acc, K, special)
    require(kernel_route, SERVED, "the GPU backend (tcsim.cuda)", dp, error=DeviceError)
    if kernel_route.kernel is Kernel.LOWERED:   # its inner instructions are routed again
        from .lowered import run_lowered
        d = run_lowered(av, bv, cv, dp, a_fmt, b_fmt, acc, run_datapath)
        return prep.to_accumulator(d, acc, unsigned_zero=dp.zero_sign == "unsigned")
    if dp.flush_nodes:   # CDNA2: inputs and C below their smallest normal become +0
        av = prep.flush_below_normal(av, a_fmt)
        bv = prep.flush_below_normal(bv, b_fmt)
        cv = prep.flush_below_normal(cv, acc)
    if dp.subnormal_inputs == "flush":
        av, bv = prep.flush_subnormals(av, a_fmt), prep.flush_subnormals(bv, b_fmt)
    if dp.subnormal_outputs == "flush":
        cv = prep.flush_subnormals(cv, acc)
    dtype = np.float32 if kernel_route.float32_operands else np.float64
    a_fin, pa = arrays.empty(av.shape, dtype), arrays.empty(av.shape, np.int16)
    b_fin, pb = arrays.empty(bv.shape, dtype), arrays.empty(bv.shape, np.int16)
    zero_exp = NO_TERM if dp.zero_operand_exponent is None else dp.zero_operand_exponent
    if scales is not None:
        # a NaN scale makes its whole K block of that row / column NaN (before the preparation,
        # which reads NaN as a special value)
        if nan_scale:
            av, bv = elementwise.copy(av), elementwise.copy(bv)
            blockscale.nan_blocks(av, bv, sa, sb, block)
    prep.prepare_operand(av, get_format(a_fmt).emin, zero_exp, a_fin, pa)
    prep.prepare_operand(bv, get_format(b_fmt).emin, zero_exp, b_fin, pb)
    if scales is not None and dp.block_scale == "exponent":
        blockscale.prescale(a_fin, pa, xa, b_fin, pb, xb, block)
        scales = None
    prm = kernel_params(dp, acc, K, special, block, a_fmt, b_fmt, kernel_route)
    if kernel_route.kernel is Kernel.FUSED:
        d = fused.run(a_fin, b_fin, pa, pb, cv, prm)
    else:
        reason = staged.unserved(prm)
        if reason is not None:
            name = getattr(dp, "name", None)
            raise DeviceError(f"the GPU backend (tcsim.cuda) does not serve "
                              f"{'path ' + repr(name) if name else 'this datapath'}: {reason}")
        if scales is None:
            sa = arrays.to_device(np.ones((NB, M, 1)))
            sb = arrays.to_device(np.ones((NB, 1, N)))
            xa = arrays.to_device(np.zeros((NB, M, 1), np.int64))
            xb = arrays.to_device(np.zeros((NB, 1, N), np.int64))
        else:
            sa, sb = elementwise.nan_to_zero(sa), elementwise.nan_to_zero(sb)
        dummy = arrays.to_device(np.zeros((1, 1, 1)))
        bT_raw = dummy if prm.tiled else elementwise.transpose_kn(bv)
        a32 = b32 = arrays.to_device(np.zeros((1, 1, 1), np.float32))
        if prm.int32_sums:
            a32 = elementwise.astype(a_fin, np.float32)
            b32 = elementwise.astype(b_fin, np.float32)
        a64 = elementwise.astype(a_fin, np.float64)
        b64 = elementwise.astype(b_fin, np.float64)
        d = staged.staged_kernel(a64, b64, av, bv, bT_raw, pa, pb, cv, sa, xa, sb, xb, a32,
                                 b32, prm)
    return prep.to_accumulator(d, acc, unsigned_zero=dp.zero_sign == "unsigned")
