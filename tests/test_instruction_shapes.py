"""Instruction shapes with a smaller K than the unit's block (issue 14): m16n8k8 fp16/bf16 and
m16n8k4 tf32 on Hopper and Blackwell, m16n8k16 FP8 on RTX Blackwell, CDNA3's 16x16x4_4b.

Each instruction writes its result to registers in the output format, so a GEMM built from it
is a chain of k-element blocks, each rounded result the C of the next: the shape path's block
size is the instruction's K (docs/hardware.md#instruction-shapes). The paths are discovered
from the shipped presets; each is checked against the chain of single instructions run one by
one through the unit's own default path (one instruction fits in one of its blocks), and a
hand-worked case shows that chaining k8 instructions differs from one k16 block.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import tcsim
from tcsim import load_model, preset_names
from tcsim.formats.conversion import round_to_format

SHAPE_PREFIXES = ("mma.m16n8k", "mfma.16x16x4")


def _shape_paths():
    cases = []
    for model in preset_names():
        for p in load_model(model).paths:
            if p.name.startswith(SHAPE_PREFIXES):
                cases += [(model, p.name, fmt, p.output, p.block_size) for fmt in p.inputs]
    return cases


CASES = _shape_paths()


def test_the_missing_shapes_have_paths():
    have = {(m, p) for m, p, *_ in CASES}
    for model in ("h100", "h200", "b200"):
        assert {(model, "mma.m16n8k8"), (model, "mma.m16n8k4")} <= have
    assert ("rtx-blackwell", "mma.m16n8k16") in have
    assert ("mi300", "mfma.16x16x4_4b") in have


def _operands(fmt: str, shape, rng) -> np.ndarray:
    x = rng.standard_normal(shape) * 2.0 ** rng.integers(-6, 6, size=shape)
    return round_to_format(x, fmt)


@pytest.mark.parametrize("model,path,fmt,out,k", CASES,
                         ids=[f"{m}-{p}-{f}-{o}" for m, p, f, o, _ in CASES])
def test_shape_path_is_the_chain_of_single_instructions(model, path, fmt, out, k):
    rng = np.random.default_rng(k)
    m, n, kk = 3, 5, 4 * k + (k // 2 if model != "mi300" else 0)
    a, b = _operands(fmt, (m, kk), rng), _operands(fmt, (kk, n), rng)
    dtype = np.float32 if out == "fp32" else np.float16
    c = rng.standard_normal((m, n)).astype(dtype)
    got = tcsim.mma(a, b, c, model=model, path=path, a_format=fmt, b_format=fmt, acc=out)
    want = c
    for j in range(0, kk, k):                 # one instruction at a time, default path
        want = tcsim.mma(a[:, j:j + k], b[j:j + k], want, model=model, a_format=fmt,
                         b_format=fmt, acc=out)
    view = np.uint32 if out == "fp32" else np.uint16
    assert np.array_equal(got.view(view), want.view(view))


@pytest.mark.parametrize("model", ["h100", "b200"])
def test_two_k8_instructions_are_not_one_k16_block(model):
    """Products 1 and 2^-24 in the first eight k, 2^-24 in the second, C = 0. One k16 block (25
    fraction bits below E = 0) keeps both small terms: 1 + 2^-23. Two m16n8k8 instructions round
    each result to fp32 toward zero: 1 + 2^-24 -> 1, then 1 + 2^-24 -> 1."""
    a = np.zeros((1, 16), np.float16)
    b = np.zeros((16, 1), np.float16)
    a[0, 0] = b[0, 0] = 1.0
    a[0, 1] = b[1, 0] = 2.0 ** -12
    a[0, 8] = b[8, 0] = 2.0 ** -12
    one_block = tcsim.mma(a, b, model=model)
    chained = tcsim.mma(a, b, model=model, path="mma.m16n8k8")
    assert one_block.view(np.uint32)[0, 0] == np.float32(1 + 2.0 ** -23).view(np.uint32)
    assert chained.view(np.uint32)[0, 0] == np.float32(1.0).view(np.uint32)


def test_rtx_blackwell_fp8_k16_shape_differs_from_k32():
    """E4M3 products 2^8 (k = 0), 2^-16 (k = 1) and 2^-16 (k = 16): inside one k32 block (25
    fraction bits below E = 8) the two small ones sum to 2^-15, kept on the 2^-17 grid; a k16
    instruction rounds 2^8 + 2^-16 to fp32 toward zero (2^8), and so does the second one."""
    a = np.zeros((1, 32), ml_dtypes.float8_e4m3fn)
    b = np.zeros((32, 1), ml_dtypes.float8_e4m3fn)
    a[0, 0], b[0, 0] = 16.0, 16.0
    a[0, 1], b[1, 0] = 2.0 ** -8, 2.0 ** -8
    a[0, 16], b[16, 0] = 2.0 ** -8, 2.0 ** -8
    one_block = tcsim.mma(a, b, model="rtx-blackwell")
    chained = tcsim.mma(a, b, model="rtx-blackwell", path="mma.m16n8k16")
    assert one_block[0, 0] == np.float32(2.0 ** 8 + 2.0 ** -15)
    assert chained[0, 0] == np.float32(2.0 ** 8)
