"""tcsim.recorded_rows: recorded C brought into the accumulator, rows simulated to fp32 bits."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import bits
from tcsim import load_model, mma
from tcsim.formats.conversion import round_to_format
from tcsim.recorded_rows import c_in_accumulator, rows_to_bits


def test_c_in_accumulator_rounds_to_nearest_even_into_fp16():
    c = np.array([1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 65519.0, 65520.0, -1e6, 2.0 ** -25,
                  1.5 * 2.0 ** -25, -0.0, np.inf, np.nan])
    want = [1.0, 1 + 2.0 ** -9, 65504.0, np.inf, -np.inf, 0.0, 2.0 ** -24, -0.0, np.inf, np.nan]
    got = c_in_accumulator(c, "fp16")
    np.testing.assert_array_equal(bits(got), bits(np.array(want)))
    assert np.array_equal(c_in_accumulator(got, "fp16"), got, equal_nan=True)   # idempotent
    np.testing.assert_array_equal(c_in_accumulator(c, "fp32"), c)


@pytest.mark.parametrize("model, fmt, acc", [("h100", "e4m3", "fp32"), ("ada", "e4m3", "fp16"),
                                             ("a100", "bf16", "fp32")])
def test_rows_to_bits_is_mma_row_by_row(model, fmt, acc):
    """Row i of rows_to_bits is tcsim.mma of a[i] (1 x K) and b[i] (K x 1) plus c[i], as fp32
    bits (fp16 results widened exactly)."""
    rng = np.random.default_rng(3)
    rows, k = 12, 32
    a = round_to_format(rng.standard_normal((rows, k)) * 4, fmt, overflow="saturate")
    b = round_to_format(rng.standard_normal((rows, k)), fmt, overflow="saturate")
    c = c_in_accumulator(rng.standard_normal(rows).astype(np.float32) * 8, acc)
    path = load_model(model).find_path(fmt, fmt, acc)
    got = rows_to_bits(a, b, c, path.datapath(), fmt, fmt, acc)
    assert got.dtype == np.uint32 and got.shape == (rows,)
    acc_dtype = np.float32 if acc == "fp32" else np.float16
    for i in range(rows):
        d = mma(a[i:i + 1], b[i][:, None], c[i:i + 1, None].astype(acc_dtype), model=model,
                a_format=fmt, b_format=fmt, acc=acc)
        assert got[i] == bits(d.astype(np.float32))[0, 0], i
