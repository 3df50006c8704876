"""Compile a validated :class:`~tcsim.datapath.Datapath` into the settings the kernels read.

The kernels never see pydantic objects or globals: every setting travels in one small named
tuple of int64 / bool fields (:class:`KernelParams`), so each kernel has exactly one compiled
signature (CPFloat's "validate once, precompute" idea). Numba-free: the kernels are imported by
tcsim.mma only where they run.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from .datapath import Datapath
from .formats.catalog import get_format
from .kernel_constants import NO_CLAMP, NO_TERM
from .overflow import DATAPATH_NAMES
from .rounding import Rounding
from .route import Route, block_of, check_sum_bits, staged_variant

BLOCK_SCALE_CODES = {"none": 0, "exponent": 1, "group": 2}


class KernelParams(NamedTuple):
    """Every setting a kernel reads, as exact int64 / bool fields (one numba type: one compiled
    signature for all datapaths). Built once by :func:`kernel_params`, never changed after.
    Rounding fields hold tcsim.rounding codes, ``overflow`` a tcsim.overflow code."""

    block: int          # block size n (K when the datapath has none)
    frac: int           # fraction bits f below E; -1 = exact alignment
    term: int           # term rounding: RZ (sign-magnitude truncation), RD (floor), RNE, SR
    normalized: bool    # products aligned on their normalised exponent
    c_after: bool       # C added after the product sum
    psum_prec: int      # product-sum precision (c_placement = after)
    psum_rnd: int       # product-sum rounding: RZ or RNE
    out_prec: int       # output precision p (significant bits)
    out_rnd: int        # output rounding: RZ, RNE or SR
    min_exp: int        # lower clamp of E (NO_CLAMP if none)
    flush_out: bool     # subnormal results flushed to zero
    zero_ieee: bool     # IEEE sign of an exact zero (else always +0)
    overflow: int       # overflow policy: a tcsim.overflow code (IEEE, INF, SATURATE)
    acc_emin: int       # accumulator format emin
    acc_emax: int       # accumulator format emax
    has_special: bool   # inputs hold NaN/Inf (enables the special-value pass)
    sr_bits: int        # stochastic rounding: random bits compared
    sr_seed: int        # stochastic rounding: seed of the counter-based hash
    block_scale: int    # BLOCK_SCALE_CODES: none, exponent (products pre-scaled), group terms
    group: int          # group size of the exact sub-group sums (block_scale = group)
    lanes: int          # 1, or 2 (even/odd K fused separately)
    c_asymmetric: bool  # c_placement = asymmetric
    join_sum_bits: int  # asymmetric join: fraction bits of the product sum below E'
    join_c_bits: int    # asymmetric join: fraction bits of C below E'
    join_c_window: int  # asymmetric join: C dropped when e_C < E' - window (-1: never)
    pairwise: bool      # pairwise tree of rounded products
    flush_nodes: bool   # flush every tree node and the accumulator
    scale_block: int    # K elements per scale (K when the operands carry no scales)
    zero_exp: int       # exponent of a zero operand / zero scale (NO_TERM: takes no part in E)
    product_ovf: bool   # a product >= 2^(emax + 1) makes its block Inf (product_overflow inf)
    tiled: bool         # staged kernel: the tiled route, else output by output (tcsim.route)
    int32_sums: bool    # staged kernel: product sums as int32 of float32 products (tcsim.route)


def _code(name: str) -> int:
    return int(Rounding.from_name(name))


def kernel_params(dp: Datapath, acc: str, k: int, has_special: bool, scale_block: int = 0,
                  a_format: str = "", b_format: str = "",
                  route: Optional[Route] = None) -> KernelParams:
    """The kernel settings for datapath ``dp`` with accumulator ``acc`` and depth K
    (scale_block: K elements per operand scale, 0 when the operands carry none; a_format,
    b_format: the input formats, which choose the staged kernel's int32 sums). The one
    parameter compiler of every kernel family; ``route``: the tcsim.route.route of these
    operands, whose staged variant (tiled, int32_sums) it carries (else found here the same way)."""
    accf = get_format(acc)
    n = block_of(dp, k)
    f = -1 if dp.fraction_bits is None else dp.fraction_bits
    if route is None:
        check_sum_bits(dp, n)
        tiled, int32_sums = staged_variant(dp, acc, a_format, b_format, n)
    else:
        tiled, int32_sums = route.tiled, route.int32_sums
    return KernelParams(
        block=int(n),
        frac=int(f),
        term=_code(dp.term_rounding),
        normalized=dp.product_alignment == "normalized",
        c_after=dp.c_placement == "after",
        psum_prec=int(dp.product_sum_precision or 0),
        psum_rnd=_code(dp.product_sum_rounding),
        out_prec=int(dp.output_precision or accf.precision),
        out_rnd=_code(dp.output_rounding),
        min_exp=NO_CLAMP if dp.min_exp_limit is None else int(dp.min_exp_limit),
        flush_out=dp.subnormal_outputs == "flush",
        zero_ieee=dp.zero_sign == "ieee",
        overflow=int(DATAPATH_NAMES[dp.overflow]),
        acc_emin=int(accf.emin),
        acc_emax=int(accf.emax),
        has_special=bool(has_special),
        sr_bits=int(dp.sr_bits),
        sr_seed=int(dp.sr_seed),
        block_scale=BLOCK_SCALE_CODES[dp.block_scale],
        group=int(dp.group_size or 1),
        lanes=int(dp.lanes),
        c_asymmetric=dp.c_placement == "asymmetric",
        join_sum_bits=int(dp.join_sum_bits or 0),
        join_c_bits=int(dp.join_c_bits or 0),
        join_c_window=-1 if dp.join_c_window is None else int(dp.join_c_window),
        pairwise=dp.product_sum == "pairwise",
        flush_nodes=bool(dp.flush_nodes),
        scale_block=int(scale_block or max(k, 1)),
        zero_exp=NO_TERM if dp.zero_operand_exponent is None else int(dp.zero_operand_exponent),
        product_ovf=dp.product_overflow == "inf",
        tiled=bool(tiled),
        int32_sums=bool(int32_sums),
    )
