"""Error bounds: simulation never exceeds the worst-case bound of tcsim.bounds."""

from __future__ import annotations

import numpy as np
import pytest

from tcsim import Recipe, Scaling, bounds, gemm, load_model, mma
from tcsim.formats.catalog import get_format
from tcsim.formats.conversion import round_to_format
from tcsim.workloads import make_inputs


def _normal_values(x: np.ndarray, fmt: str) -> np.ndarray:
    """Quantise to fmt and drop subnormals (the bound assumes normal values)."""
    v = round_to_format(x.astype(np.float64), fmt, overflow="saturate")
    return np.where(np.abs(v) < get_format(fmt).min_normal, 0.0, v)


@pytest.mark.parametrize("model,fmt", [("h100", "e4m3"), ("ada", "e5m2"), ("b200", "e4m3"),
                                       ("a100", "bf16"), ("h100", "fp16"), ("ideal", "e4m3"),
                                       ("fp32-fma", "e4m3")])
@pytest.mark.parametrize("dist", ["uniform", "normal", "outliers"])
def test_mma_never_exceeds_the_worst_case(model, fmt, dist):
    path = load_model(model).find_path(fmt, fmt, "fp32")
    dp, p = path.datapath(), path.effective_output_precision()
    for k in (32, 256, 1024):
        x, w = make_inputs(dist, 8, k, 8, seed=k)
        a, b = _normal_values(x / 4, fmt), _normal_values(w / 4, fmt)
        c = np.zeros((8, 8), np.float32)
        y = mma(a, b, c, model=model, a_format=fmt, b_format=fmt).astype(np.float64)
        err = np.abs(y - a @ b) / bounds.magnitude_sum(a, b, c)
        assert err.max() <= bounds.worst_case(k, dp, p), (k, err.max())


@pytest.mark.parametrize("interval", [32, 128, None])
def test_gemm_with_promotion_never_exceeds_the_worst_case(interval):
    path = load_model("h100").find_path("e4m3", "e4m3", "fp32")
    dp, p = path.datapath(), path.effective_output_precision()
    x, w = make_inputs("uniform", 16, 2048, 16, seed=9)
    sc = Scaling(scale_dtype="pow2")
    recipe = Recipe(a_scaling=sc, b_scaling=sc, promotion_interval=interval, epilogue="2d2d")
    y, det = gemm(x, w, model="h100", recipe=recipe, return_details=True)
    a, b = det.a.values, det.b.values
    scale = det.a.scales[0, 0] * det.b.scales[0, 0]
    err = np.abs(y - (a @ b) * scale) / bounds.magnitude_sum(a, b, 0.0, scale)
    bound = bounds.worst_case(2048, dp, p, interval)
    assert err.max() <= bound
    # not vacuous: same-sign inputs come within a factor of 100 of it (8x for fast accumulation)
    assert err.max() > bound / 100


def test_bounds_follow_the_design_parameters():
    dp = load_model("h100").find_path("e4m3", "e4m3", "fp32").datapath()
    fast = bounds.worst_case(4096, dp, 14)
    promoted = bounds.worst_case(4096, dp, 14, promotion=128)
    assert fast / promoted > 20                       # K / P = 32, less the FP32 terms
    wider = dp.model_copy(update={"fraction_bits": 20, "output_precision": 21})
    assert bounds.worst_case(4096, wider, 21) < fast / 100
    assert bounds.expected(4096, dp, 14) < fast


def test_expected_model_in_its_asymptotic_regime(tmp_path):
    """Fast accumulation of same-sign inputs with K >= 2048: the model is within 2x of the
    simulated mean (it overestimates short chunks; see bounds.expected)."""
    rows = bounds.simulate_relative_errors("h100", ks=(2048, 8192), promotion=None)
    for r in rows:
        assert r["mean"] <= r["expected"] <= 2 * r["mean"], r
        assert r["max"] <= r["worst_case"]
    pytest.importorskip("matplotlib")
    assert bounds.plot(tmp_path / "b.png") and (tmp_path / "b.png").stat().st_size > 1000
