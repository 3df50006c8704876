"""Compile a validated :class:`~tcsim.config.Datapath` into the settings the kernels read.

The kernels never see pydantic objects or globals: every setting travels in one small named
tuple of int64 / bool fields (:class:`KernelParams`), so each kernel has exactly one compiled
signature (CPFloat's "validate once, precompute" idea). Numba-free: the kernels are imported by
tcsim.mma only where they run.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .config import Datapath
from .errors import ConfigError
from .formats import get_format
from .overflow import DATAPATH_NAMES
from .rounding import Rounding

NO_TERM = -16000     # the same constant as tcsim._kernels.blockfma.NO_TERM
NO_CLAMP = -100000
BLOCK_SCALE_CODES = {"none": 0, "exponent": 1, "group": 2}

# The staged kernel sums terms in float64: each term is < 4 * 2^f grid units, so n + 1 of them
# fit exactly in the 53-bit significand while f + 2 + log2(n + 1) <= 53.
FLOAT64_SUM_BITS = 53


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
    special: bool       # inputs hold NaN/Inf (enables the special-value pass)
    sr_bits: int        # stochastic rounding: random bits compared
    sr_seed: int        # stochastic rounding: seed of the counter-based hash
    block_scale: int    # BLOCK_SCALE_CODES: none, exponent (products pre-scaled), group terms
    group: int          # group size of the exact sub-group sums (block_scale = group)
    lanes: int          # 1, or 2 (even/odd K fused separately)
    asym: bool          # c_placement = asymmetric
    join_s: int         # asymmetric join: fraction bits of the product sum below E'
    join_c: int         # asymmetric join: fraction bits of C below E'
    join_win: int       # asymmetric join: C dropped when e_C < E' - window (-1: never)
    pairwise: bool      # pairwise tree of rounded products
    flush_nodes: bool   # flush every tree node and the accumulator
    scale_block: int    # K elements per scale (K when the operands carry no scales)
    zero_exp: int       # exponent of a zero operand / zero scale (NO_TERM: takes no part in E)
    product_ovf: bool   # a product >= 2^(emax + 1) makes its block Inf (product_overflow inf)
    tiled: bool         # staged kernel: the tiled route (staged_tiled), else output by output
    sum32: bool         # staged kernel: product sums as int32 of float32 products (staged_sum32)


def _code(name: str) -> int:
    return int(Rounding.from_name(name))


def kernel_params(dp: Datapath, acc: str, k: int, has_special: bool, scale_block: int = 0,
                  a_format: str = "", b_format: str = "") -> KernelParams:
    """The kernel settings for datapath ``dp`` with accumulator ``acc`` and depth K
    (scale_block: K elements per operand scale, 0 when the operands carry none; a_format,
    b_format: the input formats, which choose the staged kernel's int32 sums)."""
    accf = get_format(acc)
    n = dp.block_size if dp.block_size is not None else max(k, 1)
    f = -1 if dp.fraction_bits is None else dp.fraction_bits
    if f >= 0 and f + 2 + math.ceil(math.log2(n + 1)) > FLOAT64_SUM_BITS:
        raise ConfigError(
            f"fraction_bits: {f} with block_size {n} needs more than {FLOAT64_SUM_BITS} bits of "
            f"exact sum (f + 2 + log2(n + 1) <= 53); use fraction_bits = None for exact alignment")
    staged = dp.staged() or dp.fraction_bits is not None    # else the exact kernel
    tiled = staged and staged_tiled(dp, acc)
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
        special=bool(has_special),
        sr_bits=int(dp.sr_bits),
        sr_seed=int(dp.sr_seed),
        block_scale=BLOCK_SCALE_CODES[dp.block_scale],
        group=int(dp.group_size or 1),
        lanes=int(dp.lanes),
        asym=dp.c_placement == "asymmetric",
        join_s=int(dp.join_sum_bits or 0),
        join_c=int(dp.join_c_bits or 0),
        join_win=-1 if dp.join_c_window is None else int(dp.join_c_window),
        pairwise=dp.product_sum == "pairwise",
        flush_nodes=bool(dp.flush_nodes),
        scale_block=int(scale_block or max(k, 1)),
        zero_exp=NO_TERM if dp.zero_operand_exponent is None else int(dp.zero_operand_exponent),
        product_ovf=dp.product_overflow == "inf",
        tiled=bool(tiled),
        sum32=bool(tiled and staged_sum32(dp, a_format, b_format, n)),
    )


# Inputs whose products are exact, normal float32 numbers: |a*b| in [2^-48, 2^32] (FP8, FNUZ FP8,
# FP6, FP4 and fp16: at most 11 x 11 significant bits, exponents within +-24 of 1).
FLOAT32_PRODUCT_FORMATS = ("e4m3", "e5m2", "fp16", "e4m3fnuz", "e5m2fnuz", "e2m3", "e3m2",
                           "e2m1")
FLOAT32_SUM_BITS = 24


def fits_float32(dp: Datapath, a_format: str, b_format: str, k: int) -> bool:
    """True when the operands may be prepared in float32 for the fused float32 tile
    (tcsim._kernels.fused, which also checks fused.serves) with the same bits.

    Needs exact float32 products, n + 1 terms of < 4 * 2^f units summing exactly in 24 bits, and
    a term rounding for which a product scaled below the float32 range (trunc/rint of a value
    < 1 in magnitude) gives the same 0 as the exact value does (not true for floor). The
    normalised alignment reads float64 exponent fields, so it stays in float64.
    """
    if dp.fraction_bits is None or dp.product_alignment != "unnormalized":
        return False
    if dp.block_scale != "none" or dp.staged():
        return False            # scaled products leave the float32 range; staged: float64
    if dp.term_rounding == "floor":
        return False
    if a_format not in FLOAT32_PRODUCT_FORMATS or b_format not in FLOAT32_PRODUCT_FORMATS:
        return False
    n = dp.block_size if dp.block_size is not None else max(k, 1)
    return dp.fraction_bits + 2 + math.ceil(math.log2(n + 1)) <= FLOAT32_SUM_BITS


def check_staged_bits(dp: Datapath, a_format: str, b_format: str) -> None:
    """Raise ConfigError unless the staged kernel's float64 sums are exact for these formats.

    Group terms: a group sum of G products is a multiple of the product quantum q (the product of
    the two smallest subnormals) below G * max|a| * max|b|, so it is exact while that span fits 53
    bits; a term (group sum times two scale significands < 2, on the grid 2^(X - f)) needs
    f + log2(G * max|a*b|) + 2 + log2(terms + 1) <= 53.
    """
    if dp.block_scale != "group":
        return
    fa, fb = get_format(a_format), get_format(b_format)
    G = dp.group_size
    top = G * fa.max_finite * fb.max_finite
    quantum = 2.0 ** (fa.emin - fa.mantissa_bits + fb.emin - fb.mantissa_bits)
    terms = dp.block_size // G
    span = math.ceil(math.log2(top / quantum))
    need = dp.fraction_bits + math.ceil(math.log2(top)) + 2 + math.ceil(math.log2(terms + 2))
    if span > FLOAT64_SUM_BITS or need > FLOAT64_SUM_BITS:
        raise ConfigError(
            f"block_scale: group sums of {G} {a_format} x {b_format} products with "
            f"{dp.fraction_bits} fraction bits are not modelled exactly (needs {max(span, need)} "
            f"> {FLOAT64_SUM_BITS} bits); group terms take FP4 (e2m1) or e2m3 inputs")


INT32_SUM_BITS = 31


def staged_sum32(dp: Datapath, a_format: str, b_format: str, n: int) -> bool:
    """True when the staged kernel may sum truncated products as int32 of float32 values: the
    products are exact, normal float32 numbers (FLOAT32_PRODUCT_FORMATS), a term scaled onto the
    grid, |a*b| * 2^(f-E) < 2^(f+2), is then exact in float32 and its truncation toward zero is
    the float -> int32 conversion, and n + 1 such terms add exactly in int32 while
    f + 2 + log2(n + 1) <= 31."""
    if dp.fraction_bits is None or dp.term_rounding != "truncate" or dp.block_scale != "none":
        return False
    if dp.product_alignment != "unnormalized" or dp.product_sum != "fused":
        return False
    if a_format not in FLOAT32_PRODUCT_FORMATS or b_format not in FLOAT32_PRODUCT_FORMATS:
        return False
    return dp.fraction_bits + 2 + math.ceil(math.log2(n + 1)) <= INT32_SUM_BITS


def staged_tiled(dp: Datapath, acc: str) -> bool:
    """Which route of the staged kernel serves ``dp``: the output tiles (every fused product
    sum, and pairwise trees whose every node is an IEEE binary32 RNE operation), or output by
    output (the other pairwise trees)."""
    if dp.product_sum == "pairwise":
        p = dp.output_precision or get_format(acc).precision
        return (acc == "fp32" and dp.product_sum_precision == 24 and p == 24
                and dp.output_rounding == "rne")
    return True
