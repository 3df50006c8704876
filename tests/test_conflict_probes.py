"""Probes for hardware evidence that conflicts (docs/hardware.md#conflicting-evidence): each
result the document states is recomputed here with exact rationals, independently of tcsim,
and compared bit for bit with the probe's expectations and with tcsim's result.

* CDNA2: FTTN measured different answers on MI250X and MI100, while the mi250 model is the
  mi100 tree plus flushing (equal on normal inputs); the probe separates that tree from a chain
  that rounds after every product.
* Hopper FP8 with A = B = 0: wgmma clears the low 10 mantissa bits of C (SageAttention2), the
  lowered mma.sync model keeps C whole; the gpu_validate c-only suite carries the row that
  settles it on an H100/H200.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

import tcsim
from tcsim.vectors import unit_probes


def _bits(x) -> int:
    return int(np.float32(x).view(np.uint32))


def _probe(name: str):
    found = [p for p in unit_probes() if p.name == name]
    assert len(found) == 1, f"unit_probes() has no probe {name!r}"
    return found[0]


def _fp32_rne(x: Fraction) -> Fraction:
    """x rounded to the nearest fp32 value, ties to even (normal range only: the probes stay
    far from under- and overflow)."""
    if x == 0:
        return x
    e = abs(x.numerator).bit_length() - abs(x.denominator).bit_length()
    if Fraction(2) ** e > abs(x):                      # make 2^e <= |x| < 2^(e + 1)
        e -= 1
    ulp = Fraction(2) ** (e - 23)
    q, r = divmod(x / ulp, 1)                           # floor quotient, remainder in [0, 1)
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and q % 2):
        q += 1
    return q * ulp


def test_exact_fp32_rounding_helper():
    assert _fp32_rne(Fraction(1) + Fraction(1, 2 ** 24)) == 1                # tie to even
    assert _fp32_rne(Fraction(1) + Fraction(3, 2 ** 24)) == 1 + Fraction(1, 2 ** 22)
    assert _fp32_rne(Fraction(-5, 3)) == Fraction(float(np.float32(-5 / 3)))


def test_mi250_tree_vs_product_chain_by_exact_arithmetic():
    """One fp16 MFMA with C = 2^20 and products -2^-5, -2^-6, -2^-5, -2^-6: the group of four
    summed exactly (each product and each pair is exact in fp32) and added to C with one RNE
    gives 2^20 - 2^-3; rounding after every product gives 2^20."""
    p = _probe("mi250-tree-vs-product-chain")
    products = [Fraction(float(x)) * Fraction(float(y)) for x, y in zip(p.a, p.b)]
    c = Fraction(float(p.c))
    assert c == 2 ** 20 and products[:4] == [-Fraction(1, 32), -Fraction(1, 64)] * 2
    tree = _fp32_rne(c + _fp32_rne(_fp32_rne(products[0] + products[1])
                                   + _fp32_rne(products[2] + products[3])))
    chain = c
    for q in products:
        chain = _fp32_rne(chain + q)
    assert tree == 2 ** 20 - Fraction(1, 8) and chain == 2 ** 20
    assert _bits(p.expect["mfma"]) == _bits(float(tree))
    assert _bits(p.expect["mfma+block_size=1"]) == _bits(float(chain))
    for path in p.expect:                                # and tcsim gives both
        assert _bits(p.run(path)) == _bits(p.expect[path]), path


def test_mi250_model_equals_mi100_on_normal_inputs():
    """The conflict in the docs rests on this: without subnormals the CDNA2 model computes
    exactly what the CDNA1 model does, so it cannot give MI250X and MI100 different answers."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((8, 64)).astype(np.float16)
    b = rng.standard_normal((64, 8)).astype(np.float16)
    c = (rng.standard_normal((8, 8)) * 64).astype(np.float32)
    d250 = tcsim.mma(a, b, c, model="mi250")
    d100 = tcsim.mma(a, b, c, model="mi100")
    assert np.array_equal(d250.view(np.uint32), d100.view(np.uint32))


def test_h100_fp8_c_without_products_by_bits():
    """A = B = 0: wgmma returns C with its low 10 mantissa bits cleared (cut to 13 bits below
    its exponent, RZ to 14 significant bits); the lowered mma.sync returns C's bits."""
    p = _probe("h100-fp8-c-low-bits-without-products")
    assert not p.a.any() and not p.b.any()
    c_bits = _bits(p.c)
    assert c_bits & 0x7ff == 0x7ff                       # bit 10 and bits 0-9 of C are set
    assert _bits(p.expect["wgmma"]) == c_bits & ~0x3ff
    assert _bits(p.expect["mma.sync"]) == c_bits
    for path in p.expect:
        assert _bits(p.run(path)) == _bits(p.expect[path]), path


def test_gpu_validate_c_only_suite_carries_the_low_bits_row():
    """The c-only suite runs through every kernel of an H100/H200 (wgmma and mma.sync): its row
    with C's low 10 bits set answers the question on the hardware."""
    from gpu_validate import records, suites
    s = suites.build_suite("c-only", "e4m3", "e4m3", rows=4)
    rows = [i for i, n in enumerate(s.names) if "low 10 bits set" in n]
    assert len(rows) == 1
    i = rows[0]
    assert not s.a_bits[i].any() and not s.b_bits[i].any()
    assert int(s.c_bits[i]) == _bits(_probe("h100-fp8-c-low-bits-without-products").c)
    a = records.bits_to_values(s.a_bits[i:i + 1])
    b = records.bits_to_values(s.b_bits[i:i + 1]).T
    c = records.bits_to_values(s.c_bits[i:i + 1]).reshape(1, 1).astype(np.float32)
    got = {path: _bits(tcsim.mma(a, b, c, model="h100", path=path, a_format="e4m3",
                                 b_format="e4m3")[0, 0]) for path in ("wgmma", "mma.sync")}
    assert got["wgmma"] == int(s.c_bits[i]) & ~0x3ff and got["mma.sync"] == int(s.c_bits[i])
