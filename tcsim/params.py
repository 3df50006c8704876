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
P_TERM = 2           # term rounding: 0 truncate (sign-magnitude), 1 floor, 2 nearest-even
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
N_PARAMS = 18

NO_CLAMP = -100000
TERM_CODES = {"truncate": 0, "floor": 1, "rne": 2}
ROUND_CODES = {"rz": 0, "rne": 1, "sr": 2}
OVERFLOW_CODES = {"ieee": 0, "inf": 1, "saturate": 2}

# The grid kernel sums terms in float64: each term is < 4 * 2^f grid units, so n + 1 of them fit
# exactly in the 53-bit significand while f + 2 + log2(n + 1) <= 53.
FLOAT64_SUM_BITS = 53


def kernel_params(dp: Datapath, acc: str, k: int, has_special: bool) -> np.ndarray:
    """Return the int64 parameter vector for datapath ``dp`` with accumulator ``acc`` and depth K."""
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
    if dp.term_rounding == "floor":
        return False
    if a_format not in FLOAT32_PRODUCT_FORMATS or b_format not in FLOAT32_PRODUCT_FORMATS:
        return False
    n = dp.block_size if dp.block_size is not None else max(k, 1)
    return dp.fraction_bits + 2 + math.ceil(math.log2(n + 1)) <= FLOAT32_SUM_BITS
