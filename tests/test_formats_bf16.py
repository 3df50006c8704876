"""tcsim.formats.bf16_bits: the bit-level fp32 -> bfloat16 RNE of a GEMM's bf16 output is
round_to_format(x, "bf16") for every binary32 input (NaN canonical)."""

from __future__ import annotations

import numpy as np

from tcsim.formats.bf16_bits import BF16_CANONICAL_NAN, fp32_to_bf16_bits
from tcsim.formats.conversion import encode

# RNE depends on the 16 dropped bits only through their class: 0, below the half, the half
# (a tie), above it; these low halves cover each class and both ends of the range.
LOW_HALVES = (0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF)


def _every_class() -> np.ndarray:
    """Every high half (sign, exponent, 7 fraction bits) with each low half: float32."""
    high = np.arange(1 << 16, dtype=np.uint32) << np.uint32(16)
    return (high[:, None] | np.array(LOW_HALVES, dtype=np.uint32)).ravel().view(np.float32)


def test_every_high_half_and_rounding_class_matches_the_codec():
    x = _every_class()
    nan = np.isnan(x)
    got = fp32_to_bf16_bits(x)
    want = encode(np.where(nan, 0.0, x).astype(np.float64), "bf16").astype(np.uint16)
    assert np.array_equal(got[~nan], want[~nan])
    assert (got[nan] == BF16_CANONICAL_NAN).all()


def test_ties_overflow_zeros_and_shape():
    u = np.array([[0x3F808000, 0x3F818000], [0x7F7F8000, 0x80000001]], dtype=np.uint32)
    got = fp32_to_bf16_bits(u.view(np.float32))
    # a tie down to the even 0x3F80; a tie up to the even 0x3F82; max finite bf16 plus half
    # an ulp, a tie up to +Inf; the smallest negative fp32 subnormal rounds to -0
    assert got.shape == (2, 2)
    assert got.tolist() == [[0x3F80, 0x3F82], [0x7F80, 0x8000]]
