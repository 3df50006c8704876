"""tcsim.torch.stats: the cosine-similarity columns (acc_cos, e2e_cos) of GemmStats, by hand and
on a real layer whose accumulator is narrowed."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tcsim.torch as tt  # noqa: E402
from tcsim.torch.stats import COLUMNS, GemmStats, cosine  # noqa: E402


def test_cosine_of_hand_computed_cases():
    # (1, 2, 2) . (2, 1, 2) = 8, both norms 3: 8/9; (3, 4) . (4, 3) = 24, norms 5: 24/25
    assert cosine(np.array([[1.0, 2.0], [2.0, 0.0]]), np.array([[2.0, 1.0], [2.0, 0.0]])) == 8 / 9
    assert cosine(np.float32([3, 4]), np.float64([4, 3])) == 24 / 25
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 5.0])) == 0.0        # orthogonal
    assert cosine(np.array([1.0, -2.0]), np.array([-3.0, 6.0])) == -1.0     # opposite
    # the arrays are flattened: the shape does not matter, only the elements' order
    a, b = np.arange(1.0, 7.0), np.arange(6.0, 0.0, -1.0)
    assert cosine(a.reshape(2, 3), b.reshape(2, 3)) == cosine(a, b) == 56 / 91


def test_cosine_of_zero_arrays():
    zero, y = np.zeros((3, 4)), np.ones((3, 4))
    assert cosine(zero, zero) == 1.0           # nothing to turn away from
    assert cosine(zero, y) == 0.0 and cosine(y, zero) == 0.0
    assert cosine(np.zeros((0, 4)), np.zeros((0, 4))) == 1.0


def test_cosine_of_an_array_with_itself_is_exactly_one():
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (7, 13), (64, 96)):
        y = rng.standard_normal(shape).astype(np.float32) * 10.0 ** rng.integers(-20, 20)
        assert cosine(y, y.astype(np.float64)) == 1.0
        assert cosine(-y, y) == -1.0


def test_record_writes_both_cosines_in_columns_order():
    stats = GemmStats(every=1)
    stats.begin_step(0)
    y = np.array([[1.0, 2.0], [2.0, 0.0]], dtype=np.float32)
    stats.record("l", "wgrad", 5, y, ref_acc=y.astype(np.float64),
                 ref_e2e=np.array([[2.0, 1.0], [2.0, 0.0]]))
    df = stats.frame()
    assert list(df.columns) == list(COLUMNS)
    assert "acc_cos" in COLUMNS and "e2e_cos" in COLUMNS
    assert df.loc[0, "acc_cos"] == 1.0 and df.loc[0, "e2e_cos"] == 8 / 9


def _wgrad_cos(fraction_bits: int) -> float:
    """acc_cos of wgrad (K = 256 tokens) of one step of a layer on
    accumulator_proposal(fraction_bits) (h100, fast accumulation in all three GEMMs)."""
    torch.manual_seed(0)
    layer = tt.Linear(64, 32, bias=False,
                      recipe=tt.TrainingRecipe.accumulator_proposal(fraction_bits), name="l")
    stats = tt.GemmStats(every=1)
    layer.stats = stats
    stats.begin_step(0)
    x, dy = torch.randn(256, 64), torch.randn(256, 32)
    layer(x).backward(dy)
    rows = stats.frame().set_index("gemm")
    cos = rows[["acc_cos", "e2e_cos"]].to_numpy()
    assert ((cos > 0.0) & (cos <= 1.0)).all()
    return float(rows.loc["wgrad", "acc_cos"])


def test_a_narrow_accumulator_turns_the_weight_gradient_away():
    narrow, h100 = _wgrad_cos(1), _wgrad_cos(13)
    assert narrow < h100
    assert 1.0 - h100 < 1e-5              # 13 fraction bits: the direction is kept
    assert 1.0 - narrow > 100 * (1.0 - h100)
