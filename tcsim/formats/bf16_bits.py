"""fp32 -> bfloat16 with round-to-nearest-even, on the bits (a GEMM's bf16 output stage).

bfloat16 is the top 16 bits of binary32 (same sign, exponent and the first 7 fraction bits),
so RNE is an integer add on the binary32 pattern u: the 16 dropped bits L round up iff
L > 0x8000, or L == 0x8000 and the kept last bit is 1, i.e. iff L + 0x7FFF + lsb >= 0x10000,
where lsb = (u >> 16) & 1. Adding 0x7FFF + lsb to u and keeping the top 16 bits does exactly
that, a carry out of the fraction stepping the exponent: the next binade, or +-Inf past the
largest finite bf16 (the IEEE overflow rule). Subnormals round on the same grid (bf16 and
binary32 share their exponent range), a nonzero value that rounds to zero keeps its sign,
+-0 and +-Inf are kept. For finite and infinite u the sum stays below 2^32 (u <= 0xFF800000),
so it cannot wrap. NaN is written as the canonical quiet NaN 0x7FFF.

Bit for bit :func:`tcsim.formats.conversion.round_to_format` (x, "bf16") for every binary32
input but NaN (tests/test_formats_bf16.py checks every high half with each class of low half).
"""

from __future__ import annotations

import numpy as np

#: The bfloat16 NaN written for every NaN input (the canonical quiet NaN, positive).
BF16_CANONICAL_NAN = 0x7FFF


def fp32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """The bfloat16 RNE codes (uint16, same shape) of a float32 array; NaN -> 0x7FFF."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    lsb = (u >> np.uint32(16)) & np.uint32(1)
    codes = ((u + (np.uint32(0x7FFF) + lsb)) >> np.uint32(16)).astype(np.uint16)
    codes[np.isnan(x)] = BF16_CANONICAL_NAN
    return codes
