"""tcsim.gemm reads whole operand values (return_details, or Quantized operands) in place where
a chunk's blocks lie contiguous in them, and copies them otherwise: every case gives the bits of
quantising each chunk when it is needed, and leaves the operands' values untouched."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from helpers import bits
from tcsim import Recipe, gemm
from tcsim.quant import quantize
from tcsim.workloads import make_inputs

# (M, K, N, recipe, outputs per kernel call): K = one promotion chunk (x and w both read in
# place), K of several chunks batched (w in place, x copied), several chunks one at a time, a
# partial last chunk, and row tiles of x (in place: its rows i0 .. i1 when K is one chunk)
CASES = {
    "one_chunk": (16, 128, 24, Recipe.deepseek_v3(), 1 << 20),
    "batched_chunks": (16, 512, 24, Recipe.deepseek_v3(output="bf16"), 1 << 20),
    "chunk_by_chunk": (16, 384, 24, Recipe.deepseek_v3(), 16 * 24),
    "partial_last_chunk": (9, 288, 7, Recipe.cublas_split_accum(promotion_interval=64), 1 << 20),
    "row_tiles": (13, 128, 9, Recipe.deepseek_v3(), 4 * 9),
}


@pytest.mark.parametrize("case", list(CASES))
def test_in_place_operands_give_the_chunk_by_chunk_bits(case, monkeypatch):
    m, k, n, recipe, budget = CASES[case]
    monkeypatch.setattr(importlib.import_module("tcsim.gemm"), "BATCH_OUTPUTS", budget)
    x, w = make_inputs("outliers", m, k, n, seed=3)
    streamed = bits(gemm(x, w, recipe=recipe, progress=False))     # each chunk quantised
    y, det = gemm(x, w, recipe=recipe, progress=False, return_details=True)
    np.testing.assert_array_equal(bits(y), streamed)
    qa = quantize(x, recipe.a_format, recipe.a_scaling, "a")
    qb = quantize(w, recipe.b_format, recipe.b_scaling, "b")
    before = (qa.values.copy(), qb.values.copy())
    np.testing.assert_array_equal(bits(gemm(qa, qb, recipe=recipe, progress=False)), streamed)
    np.testing.assert_array_equal(bits(qa.values), bits(before[0]))
    np.testing.assert_array_equal(bits(qb.values), bits(before[1]))


def test_read_only_or_strided_values_are_copied():
    """Values the kernels cannot take as they are (read-only, not C-contiguous) are copied
    chunk by chunk: the same bits."""
    recipe = Recipe.deepseek_v3()
    x, w = make_inputs("normal", 8, 128, 16, seed=4)
    qa = quantize(x, "e4m3", recipe.a_scaling, "a")
    qb = quantize(w, "e4m3", recipe.b_scaling, "b")
    want = bits(gemm(qa, qb, recipe=recipe, progress=False))
    qa.values.setflags(write=False)
    wide = np.zeros((128, 32))
    wide[:, ::2] = qb.values
    qb = type(qb)(**{**qb.__dict__, "values": wide[:, ::2]})
    assert not qb.values.flags.c_contiguous
    np.testing.assert_array_equal(bits(gemm(qa, qb, recipe=recipe, progress=False)), want)
