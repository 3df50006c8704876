"""tcsim.explain traces the kernel's own answer: its final value equals tcsim.mma's bits."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from tcsim import FormatError, round_to_format
from tcsim.explain import deepseek_example, explain


@pytest.mark.parametrize("model,fmt", [("h100", "e4m3"), ("ada", "e5m2"), ("b200", "e4m3"),
                                       ("ideal", "e4m3"), ("a100", "bf16"), ("v100", "fp16")])
def test_explain_equals_the_kernel(model, fmt):
    rng = np.random.default_rng(1)
    for seed in range(5):
        a = round_to_format(rng.standard_normal(70) * 2.0 ** rng.integers(-6, 6, 70), fmt,
                            overflow="saturate")
        b = round_to_format(rng.standard_normal(70), fmt, overflow="saturate")
        ex = explain(a, b, float(np.float32(rng.standard_normal())), model=model, a_format=fmt)
        # explain raises if its trace differs from tcsim.mma; check the bookkeeping too
        for blk in ex.blocks:
            assert blk.aligned_sum == sum((t.aligned for t in blk.terms), Fraction(0))
            if blk.grid is not None:
                assert all((t.aligned / blk.grid).denominator == 1 for t in blk.terms)
        assert ex.exact == sum((Fraction(x) * Fraction(y) for x, y in zip(a, b)),
                               ex.blocks[0].c_in)


def test_deepseek_fourteen_bits_are_visible(tmp_path):
    a, b, c = deepseek_example()
    h100 = explain(a, b, c, model="h100")
    assert h100.result == 1.0 and h100.blocks[0].grid == Fraction(1, 2 ** 13)
    assert sum(t.swamped for t in h100.blocks[0].terms) == 31
    assert "SWAMPED" in h100.text()
    b200 = explain(a, b, c, model="b200")
    assert b200.result == float(h100.exact) and not any(t.swamped for t in b200.blocks[0].terms)
    pytest.importorskip("matplotlib")
    assert h100.figure(tmp_path / "e.png") and (tmp_path / "e.png").stat().st_size > 1000


def test_promotion_trace():
    rng = np.random.default_rng(2)
    a = round_to_format(rng.random(256), "e4m3")
    b = round_to_format(rng.random(256), "e4m3")
    ex = explain(a, b, 0.0, model="h100", promotion_interval=128, a_scales=[0.5, 2.0],
                 b_scales=[1.0, 0.25])
    assert len(ex.promotions) == 2 and len(ex.blocks) == 8
    p0, p1 = ex.promotions
    assert p0.acc_before == 0.0 and p1.acc_before == p0.acc_after and ex.result == p1.acc_after
    assert p0.partial == ex.blocks[3].result and p1.partial == ex.blocks[7].result


def test_bad_input_and_cli(tmp_path):
    with pytest.raises(FormatError, match="finite"):
        explain([np.inf], [1.0], model="h100", a_format="e5m2")
    with pytest.raises(FormatError, match="not exactly representable"):
        explain([0.3], [1.0])
    out = subprocess.run([sys.executable, "-m", "tcsim.cli", "explain", "--example",
                          "--max-terms", "3"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "swamped terms 31" in out.stdout
