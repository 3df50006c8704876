"""Products: every pair of FP8 codes through a one-term block, exact (DESIGN.md test layer 3).

With K = 1 and C = 0 a block holds a single exact product, so every model must return the exact
product (it has at most 8 significant bits and fits every output precision); the truth is the
float64 product of ml_dtypes' decoded values. NaN codes and e5m2 Inf give NaN / Inf per IEEE.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from tcsim import mma

DTYPES = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2,
          "e4m3fnuz": ml_dtypes.float8_e4m3fnuz, "e5m2fnuz": ml_dtypes.float8_e5m2fnuz}


@pytest.mark.parametrize("a_fmt,b_fmt,model", [("e4m3", "e4m3", "h100"), ("e5m2", "e5m2", "h100"),
                                               ("e4m3", "e5m2", "ada"), ("e5m2", "e4m3", "ideal"),
                                               ("e4m3", "e4m3", "fp32-fma"),
                                               ("e4m3fnuz", "e5m2fnuz", "ideal"),
                                               ("e5m2fnuz", "e4m3fnuz", "fp32-fma")])
def test_all_code_pairs(a_fmt, b_fmt, model):
    codes = np.arange(256, dtype=np.uint8)
    av = codes.view(DTYPES[a_fmt]).astype(np.float64)
    bv = codes.view(DTYPES[b_fmt]).astype(np.float64)
    a = np.repeat(av, 256).reshape(-1, 1, 1)            # batch of 65,536 1x1x1 products
    b = np.tile(bv, 256).reshape(-1, 1, 1)
    got = mma(a, b, a_format=a_fmt, b_format=b_fmt, model=model).reshape(-1)
    with np.errstate(invalid="ignore"):                  # Inf * 0 -> NaN, as intended
        want = (a * b).reshape(-1).astype(np.float32)   # exact: <= 8 significant bits
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.all(got.view(np.uint32)[nan] == 0x7FFFFFFF)
    # nonzero products and their signs bit for bit; an exact zero product plus C = +0 is +0
    # (H100 rule) or the IEEE sum (ideal, fp32-fma): +0 as well, since C = +0
    want_bits = np.where(want == 0, np.uint32(0), want.view(np.uint32))
    assert np.array_equal(got.view(np.uint32)[~nan], want_bits[~nan])
