"""Compile a validated :class:`~tcsim.config.Datapath` into the int64 parameter vector the kernels read.

The kernels never see pydantic objects or globals: every setting travels in one small int64 array,
so each kernel has exactly one compiled signature (CPFloat's "validate once, precompute" idea).
"""

from __future__ import annotations

import math

import numpy as np

from .config import Datapath
from .errors import ConfigError
from .formats import get_format

# Slot indices into the parameter vector (mirrored as literals in tcsim/_kernels/blockfma.py).
P_BLOCK = 0          # block size n (K when the datapath has none)
P_FRAC = 1           # fraction bits f below E; -1 = exact alignment
P_TERM = 2           # term rounding: 0 truncate (sign-magnitude), 1 floor, 2 nearest-even,
                     # 3 stochastic (staged kernel only)
P_NORMALIZED = 3     # 1: products aligned on their normalised exponent
P_C_AFTER = 4        # 1: C added after the product sum
P_PSUM_PREC = 5      # product-sum precision (c_placement = after)
P_PSUM_RND = 6       # product-sum rounding: 0 rz, 1 rne
P_OUT_PREC = 7       # output precision p (significant bits)
P_OUT_RND = 8        # output rounding: 0 rz, 1 rne, 2 stochastic
P_MIN_EXP = 9        # lower clamp of E (NO_CLAMP if none)
P_FLUSH_OUT = 10     # 1: subnormal results flushed to zero
P_ZERO_IEEE = 11     # 1: IEEE sign of an exact zero, 0: always +0
P_OVERFLOW = 12      # 0 ieee (rne->Inf, rz->max), 1 Inf, 2 saturate
P_ACC_EMIN = 13      # accumulator format emin
P_ACC_EMAX = 14      # accumulator format emax
P_SPECIAL = 15       # 1: inputs hold NaN/Inf (enables the special-value pass)
P_SR_BITS = 16       # stochastic output rounding: random bits compared
P_SR_SEED = 17       # stochastic output rounding: seed of the counter-based hash
# Slots read only by the staged kernel (tcsim/_kernels/staged.py)
P_BLOCK_SCALE = 18   # 0 none, 1 exponent (products pre-scaled; grid kernels), 2 group terms
P_GROUP = 19         # group size of the exact sub-group sums (block_scale = group)
P_LANES = 20         # 1, or 2 (even/odd K fused separately)
P_ASYM = 21          # 1: c_placement = asymmetric
P_JOIN_S = 22        # asymmetric join: fraction bits of the product sum below E'
P_JOIN_C = 23        # asymmetric join: fraction bits of C below E'
P_JOIN_WIN = 24      # asymmetric join: C dropped when e_C < E' - window (-1: never)
P_PAIRWISE = 25      # 1: pairwise tree of rounded products
P_FLUSH_NODES = 26   # 1: flush every tree node and the accumulator
P_SCALE_BLOCK = 27   # K elements per scale (K when the operands carry no scales)
P_ZERO_EXP = 28      # exponent of a zero operand / zero scale (NO_TERM: takes no part in E)
P_SUM32 = 29         # 1: staged product sums as int32 of float32 products (staged_sum32)
P_TILED = 30         # 1: the staged kernel's tiled route (staged_tiled), 0: output by output
P_PRODUCT_OVF = 31   # 1: a product >= 2^(emax + 1) makes its block Inf (product_overflow inf)
N_PARAMS = 32
NO_TERM = -16000     # the same constant as tcsim._kernels.blockfma.NO_TERM

NO_CLAMP = -100000
TERM_CODES = {"truncate": 0, "floor": 1, "rne": 2, "sr": 3}
ROUND_CODES = {"rz": 0, "rne": 1, "sr": 2}
OVERFLOW_CODES = {"ieee": 0, "inf": 1, "saturate": 2}

# The grid kernel sums terms in float64: each term is < 4 * 2^f grid units, so n + 1 of them fit
# exactly in the 53-bit significand while f + 2 + log2(n + 1) <= 53.
FLOAT64_SUM_BITS = 53


def kernel_params(dp: Datapath, acc: str, k: int, has_special: bool,
                  scale_block: int = 0) -> np.ndarray:
    """Return the int64 parameter vector for datapath ``dp`` with accumulator ``acc`` and depth K
    (scale_block: K elements per operand scale, 0 when the operands carry none)."""
    accf = get_format(acc)
    n = dp.block_size if dp.block_size is not None else max(k, 1)
    f = -1 if dp.fraction_bits is None else dp.fraction_bits
    if f >= 0 and f + 2 + math.ceil(math.log2(n + 1)) > FLOAT64_SUM_BITS:
        raise ConfigError(
            f"fraction_bits: {f} with block_size {n} needs more than {FLOAT64_SUM_BITS} bits of "
            f"exact sum (f + 2 + log2(n + 1) <= 53); use fraction_bits = None for exact alignment")
    p = dp.output_precision or accf.precision
    out = np.zeros(N_PARAMS, dtype=np.int64)
    out[P_BLOCK] = n
    out[P_FRAC] = f
    out[P_TERM] = TERM_CODES[dp.term_rounding]
    out[P_NORMALIZED] = dp.product_alignment == "normalized"
    out[P_C_AFTER] = dp.c_placement == "after"
    out[P_PSUM_PREC] = dp.product_sum_precision or 0
    out[P_PSUM_RND] = ROUND_CODES[dp.product_sum_rounding]
    out[P_OUT_PREC] = p
    out[P_OUT_RND] = ROUND_CODES[dp.output_rounding]
    out[P_MIN_EXP] = NO_CLAMP if dp.min_exp_limit is None else dp.min_exp_limit
    out[P_FLUSH_OUT] = dp.subnormal_outputs == "flush"
    out[P_ZERO_IEEE] = dp.zero_sign == "ieee"
    out[P_OVERFLOW] = OVERFLOW_CODES[dp.overflow]
    out[P_ACC_EMIN] = accf.emin
    out[P_ACC_EMAX] = accf.emax
    out[P_SPECIAL] = bool(has_special)
    out[P_SR_BITS] = dp.sr_bits
    out[P_SR_SEED] = dp.sr_seed
    out[P_BLOCK_SCALE] = {"none": 0, "exponent": 1, "group": 2}[dp.block_scale]
    out[P_GROUP] = dp.group_size or 1
    out[P_LANES] = dp.lanes
    out[P_ASYM] = dp.c_placement == "asymmetric"
    out[P_JOIN_S] = dp.join_sum_bits or 0
    out[P_JOIN_C] = dp.join_c_bits or 0
    out[P_JOIN_WIN] = -1 if dp.join_c_window is None else dp.join_c_window
    out[P_PAIRWISE] = dp.product_sum == "pairwise"
    out[P_FLUSH_NODES] = dp.flush_nodes
    out[P_SCALE_BLOCK] = scale_block or max(k, 1)
    out[P_ZERO_EXP] = NO_TERM if dp.zero_operand_exponent is None else dp.zero_operand_exponent
    out[P_PRODUCT_OVF] = dp.product_overflow == "inf"
    return out


# Inputs whose products are exact, normal float32 numbers: |a*b| in [2^-48, 2^32] (FP8, FNUZ FP8,
# FP6, FP4 and fp16: at most 11 x 11 significant bits, exponents within +-24 of 1).
FLOAT32_PRODUCT_FORMATS = ("e4m3", "e5m2", "fp16", "e4m3fnuz", "e5m2fnuz", "e2m3", "e3m2",
                           "e2m1")
FLOAT32_SUM_BITS = 24


def fits_float32(dp: Datapath, a_format: str, b_format: str, k: int) -> bool:
    """True when the grid kernel may run its product loops in float32 with the same bits.

    Needs exact float32 products, n + 1 terms of < 4 * 2^f units summing exactly in 24 bits, and
    a term rounding for which a product scaled below the float32 range (trunc/rint of a value
    < 1 in magnitude) gives the same 0 as the exact value does (not true for floor). The
    normalised alignment reads float64 exponent fields, so it stays in float64.
    """
    if dp.fraction_bits is None or dp.product_alignment != "unnormalized":
        return False
    if dp.block_scale != "none" or dp.staged():
        return False            # scaled products leave the float32 range; staged runs float64
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


def staged_sum32(dp: Datapath, a_format: str, b_format: str) -> bool:
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
    n = dp.block_size
    return dp.fraction_bits + 2 + math.ceil(math.log2(n + 1)) <= INT32_SUM_BITS


def staged_tiled(dp: Datapath, acc: str) -> bool:
    """Which route of the staged kernel serves ``dp``: the output tiles (the fused modes with C
    inside or the asymmetric join on unnormalised products, and pairwise trees whose every node
    is an IEEE binary32 RNE operation), or output by output (everything else)."""
    if dp.product_sum == "pairwise":
        p = dp.output_precision or get_format(acc).precision
        return (acc == "fp32" and dp.product_sum_precision == 24 and p == 24
                and dp.output_rounding == "rne")
    return dp.c_placement != "after" and dp.product_alignment == "unnormalized"
