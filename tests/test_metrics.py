"""tcsim.metrics: robust error metrics on hand-worked arrays, the exact product of quantised
operands against Fractions, and the accumulation vs total error claims of the README."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import tcsim
from tcsim import metrics
from tcsim.gemm import gemm
from tcsim.quant import quantize
from tcsim.recipe import Recipe, Scaling
from tcsim.workloads import make_inputs

README = Path(__file__).resolve().parent.parent / "README.md"


# ---------------------------------------------------------------------------------------------
# The metric functions, on arrays worked by hand
# ---------------------------------------------------------------------------------------------
def test_metrics_on_a_hand_worked_matrix():
    # ref = diag(3, 4): ||ref||_F = 5. err = [[0, .3], [.4, 0]]: ||err||_F = .5, max |err| = .4.
    # Row RMS of ref: 3/sqrt(2) and 4/sqrt(2); the scaled errors are 0, .3 sqrt(2)/3 = .1 sqrt 2,
    # .4 sqrt(2)/4 = .1 sqrt 2, 0, so their 99th percentile (linear, of 0, 0, a, a) is a.
    ref = np.array([[3.0, 0.0], [0.0, 4.0]])
    y = ref + np.array([[0.0, 0.3], [0.4, 0.0]])
    e = metrics.errors(y, ref, elementwise=True)
    assert e["rel_fro"] == pytest.approx(0.1, rel=1e-15)
    assert e["max_scaled"] == pytest.approx(0.1, rel=1e-15)
    assert e["p99_row"] == pytest.approx(0.1 * math.sqrt(2), rel=1e-15)
    assert e["max_rel"] == 0.0          # the raw max skips ref == 0, where all the error is
    assert list(metrics.errors(y, ref)) == list(metrics.METRICS)   # raw max only when asked


def test_one_output_near_zero_dominates_only_the_raw_max():
    # Every output off by 1e-3; one output is 1e-6. Raw max: 1e-3 / 1e-6 = 1000 (100000%).
    # ||err||_F = 2e-3 (4 errors of 1e-3), ||ref||_F = sqrt(3 + 1e-12): 2e-3 / sqrt(3).
    ref = np.array([[1.0, 1.0], [1.0, 1e-6]])
    y = ref + 1e-3
    e = metrics.errors(y, ref, elementwise=True)
    assert e["max_rel"] == pytest.approx(1000.0, rel=1e-9)
    assert e["rel_fro"] == pytest.approx(2e-3 / math.sqrt(3), rel=1e-9)
    assert e["max_scaled"] == pytest.approx(1e-3, rel=1e-9)
    # rows: RMS 1 and sqrt((1 + 1e-12) / 2); the largest scaled error is 1e-3 * sqrt(2)
    assert 1e-3 <= e["p99_row"] <= 1e-3 * math.sqrt(2) + 1e-15


def test_robust_metrics_rank_a_better_result_better():
    """Result b is 10x more accurate than a everywhere except on the near-zero output, where
    both err by the same amount: the raw max calls them equal, the robust metrics do not."""
    ref = np.array([[2.0, -1.0, 1e-7, 3.0]])
    a = ref + np.array([[1e-3, -1e-3, 1e-6, 2e-3]])
    b = ref + np.array([[1e-4, -1e-4, 1e-6, 2e-4]])
    ea, eb = metrics.errors(a, ref, True), metrics.errors(b, ref, True)
    assert ea["max_rel"] == eb["max_rel"]
    for name in metrics.METRICS:
        assert eb[name] < ea[name] / 5, name


def test_zero_and_empty_references():
    z = np.zeros((2, 2))
    assert metrics.errors(z, z) == {"rel_fro": 0.0, "max_scaled": 0.0, "p99_row": 0.0}
    assert metrics.relative_frobenius_error(z + 1, z) == math.inf
    assert math.isnan(metrics.relative_frobenius_error(np.zeros((0, 3)), np.zeros((0, 3))))
    with pytest.raises(ValueError):
        metrics.errors(np.zeros((2, 2)), np.zeros((2, 3)))


def test_fractions_print_with_significant_digits():
    assert metrics.fmt(1.234e-6) == "1.23e-06"       # never 0.000%
    assert metrics.fmt(0.0) == "0.00e+00"


# ---------------------------------------------------------------------------------------------
# The exact product of the quantised operands
# ---------------------------------------------------------------------------------------------
def _fraction_product(qa, qb) -> np.ndarray:
    """sum_k a * sa * b * sb with Fractions, rounded once to float64."""
    av, ea = qa.values, qa.element_scales()
    bv, eb = qb.values, qb.element_scales()          # both (K, N)
    m, k = av.shape
    n = bv.shape[1]
    return np.array([[float(sum(Fraction(av[i, q]) * Fraction(ea[i, q]) * Fraction(bv[q, j])
                                * Fraction(eb[q, j]) for q in range(k)))
                      for j in range(n)] for i in range(m)])


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@pytest.mark.parametrize("recipe", [Recipe.deepseek_v3(), Recipe.cublas_fast_accum(),
                                    Recipe.mxfp8()], ids=["deepseek", "tensor", "mx"])
def test_exact_product_equals_fractions(fmt, recipe):
    """Inputs spanning 2^-17 .. 2^17 (FP8 subnormals and fp32 scales far from 1): the result
    is the correctly rounded float64 of the exact sum, where numpy's float64 product is not."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((6, 256)) * np.exp2(rng.uniform(-17, 17, (6, 256)))).astype(
        np.float32)
    w = (rng.standard_normal((256, 5)) * np.exp2(rng.uniform(-17, 17, (256, 5)))).astype(
        np.float32)
    qa = quantize(x, fmt, recipe.a_scaling, "a")
    qb = quantize(w, fmt, recipe.b_scaling, "b")
    exact = _fraction_product(qa, qb)
    np.testing.assert_array_equal(metrics.exact_product(qa, qb), exact)
    if recipe.a_scaling.scale_dtype == "fp32":      # fp32 scales: 4 + 24 bits per element
        assert not np.array_equal(qa.dequantize() @ qb.dequantize(), exact)   # float64 is not


def test_exact_product_survives_cancellation_that_float64_loses():
    # e5m2: 2^15 * 2^15 + 2^-16 * 2^-16 - 2^15 * 2^15 = 2^-32 exactly; in float64 the first
    # sum rounds 2^30 + 2^-32 to 2^30 (62 bits apart) and the result is 0.
    a = np.array([[2.0 ** 15, 2.0 ** -16, -(2.0 ** 15)]], dtype=np.float32)
    b = np.array([[2.0 ** 15], [2.0 ** -16], [2.0 ** 15]], dtype=np.float32)
    pow2 = Scaling(granularity="tensor", scale_dtype="pow2")
    qa, qb = quantize(a, "e5m2", pow2, "a"), quantize(b, "e5m2", pow2, "b")
    assert qa.values.tolist() == [[2.0 ** 15, 2.0 ** -16, -(2.0 ** 15)]]    # scale 1: exact
    assert (qa.dequantize() @ qb.dequantize())[0, 0] == 0.0
    assert metrics.exact_product(qa, qb)[0, 0] == 2.0 ** -32


def test_ideal_unit_is_the_exact_product_rounded_once():
    """The ideal preset sums the codes exactly and rounds once to fp32; with power-of-two
    per-tensor scales the epilogue's scaling is exact too, so y == fp32(exact product)."""
    x, w = make_inputs("normal", 8, 512, 8, seed=2)
    recipe = Recipe.cublas_fast_accum(a_scaling=Scaling(scale_dtype="pow2"),
                                      b_scaling=Scaling(scale_dtype="pow2"))
    y, det = gemm(x, w, model="ideal", recipe=recipe, return_details=True)
    exact = det.exact_product()
    np.testing.assert_array_equal(y, exact.astype(np.float32))
    assert metrics.errors(y, exact)["rel_fro"] < 2.0 ** -24


# ---------------------------------------------------------------------------------------------
# Accumulation vs total error: one call, and the README's claim
# ---------------------------------------------------------------------------------------------
def test_gemm_errors_is_one_call_after_import_tcsim():
    x, w = make_inputs("normal", 8, 256, 8, seed=0)
    y, det = tcsim.gemm(x, w, model="h100", return_details=True)
    errs = tcsim.metrics.gemm_errors(x, w, y, det)
    assert list(errs) == ["accumulation", "total"]
    assert errs["accumulation"]["rel_fro"] == metrics.relative_frobenius_error(
        y, det.exact_product())
    assert errs["total"]["rel_fro"] == metrics.relative_frobenius_error(
        y, x.astype(np.float64) @ w.astype(np.float64))
    assert errs["accumulation"]["rel_fro"] < errs["total"]["rel_fro"]
    assert set(metrics.flat(errs)) == {f"{p}_{m}" for p in ("acc", "e2e")
                                       for m in metrics.METRICS}


def _readme_claim() -> dict:
    """The numbers the README states for its accumulation vs total error example."""
    text = " ".join(README.read_text().split())
    m = re.search(r"accumulation error is (\S+) with fast accumulation and (\S+) with "
                  r"promotion every 128.*?total error is (\S+) and (\S+) ", text)
    assert m, "README: the accumulation vs total error sentence is missing"
    return dict(zip(("acc_fast", "acc_promoted", "e2e_fast", "e2e_promoted"), m.groups()))


def test_readme_accumulation_vs_total_error_claim():
    """README: on a 64 x 4096 x 64 GEMM of N(0, 1) inputs on h100, fast accumulation and
    promotion every 128 differ clearly in accumulation error and hardly in total error; the
    README's numbers are the ones computed here."""
    x, w = make_inputs("normal", 64, 4096, 64, seed=0)
    got = {}
    for name, recipe in (("fast", Recipe.cublas_fast_accum()),
                         ("promoted", Recipe.cublas_split_accum())):
        y, det = tcsim.gemm(x, w, model="h100", recipe=recipe, return_details=True)
        errs = tcsim.metrics.gemm_errors(x, w, y, det)
        got[f"acc_{name}"] = errs["accumulation"]["rel_fro"]
        got[f"e2e_{name}"] = errs["total"]["rel_fro"]
    assert got["acc_fast"] > 5 * got["acc_promoted"]                  # clearly apart
    assert abs(got["e2e_fast"] - got["e2e_promoted"]) < 0.01 * got["e2e_fast"]   # swamped
    assert _readme_claim() == {k: metrics.fmt(v) for k, v in got.items()}


def test_deepseek_recipe_ranks_better_than_fast_accumulation():
    """The ranking bug of the raw max: on `tcsim gemm`'s default GEMM (64 x 4096 x 64, N(0, 1),
    seed 0) the raw max elementwise total error calls DeepSeek-V3 worse than fast accumulation;
    every robust metric of the accumulation error ranks it 5x better, and none of the total
    error ranks it worse (beyond 0.1%: FP8 quantisation dominates both)."""
    x, w = make_inputs("normal", 64, 4096, 64, seed=0)
    errs = {}
    for name, recipe in (("fast", Recipe.cublas_fast_accum()), ("ds", Recipe.deepseek_v3())):
        y, det = tcsim.gemm(x, w, model="h100", recipe=recipe, return_details=True)
        errs[name] = metrics.flat(metrics.gemm_errors(x, w, y, det, elementwise=True))
    assert errs["ds"]["e2e_max_rel"] > errs["fast"]["e2e_max_rel"]      # the misleading one
    for m in metrics.METRICS:
        assert errs["ds"][f"acc_{m}"] < errs["fast"][f"acc_{m}"] / 5, m
        assert errs["ds"][f"e2e_{m}"] <= errs["fast"][f"e2e_{m}"] * 1.001, m


def test_gemm_errors_of_prequantised_operands_has_no_total():
    x, w = make_inputs("normal", 4, 256, 4, seed=1)
    recipe = Recipe.deepseek_v3()
    qa = quantize(x, "e4m3", recipe.a_scaling, "a")
    qb = quantize(w, "e4m3", recipe.b_scaling, "b")
    y, det = gemm(qa, qb, recipe=recipe, return_details=True)
    for args in ((qa, qb), (None, None)):
        errs = metrics.gemm_errors(*args, y, det)
        assert list(errs) == ["accumulation"] and errs["accumulation"]["rel_fro"] > 0


def test_exact_product_with_nan_codes_propagates_them_and_stays_exact_elsewhere():
    x, w = make_inputs("normal", 3, 256, 2, seed=1)
    recipe = Recipe.cublas_split_accum()
    qa = quantize(x, "e4m3", recipe.a_scaling, "a")
    qb = quantize(w, "e4m3", recipe.b_scaling, "b")
    values = qa.values.copy()
    values[0, 5] = np.nan
    from dataclasses import replace
    bad = replace(qa, values=values)
    ref = metrics.exact_product(bad, qb)
    assert np.isnan(ref[0]).all()
    np.testing.assert_array_equal(ref[1:], metrics.exact_product(qa, qb)[1:])
    y, det = gemm(bad, qb, recipe=recipe, return_details=True)
    assert math.isnan(metrics.gemm_errors(None, None, y, det)["accumulation"]["rel_fro"])


def test_exact_product_of_nvfp4_operands_equals_fractions():
    """NVFP4: e2m1 values, ue4m3 block scales times an fp32 tensor scale (up to 28 bits each,
    so the scale product is not a float64 by itself)."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((4, 64)) * np.exp(rng.uniform(-3, 3, (4, 64)))).astype(np.float32)
    w = (rng.standard_normal((64, 3)) * np.exp(rng.uniform(-3, 3, (64, 3)))).astype(np.float32)
    recipe = Recipe.nvfp4()
    qa = quantize(x, recipe.a_format, recipe.a_scaling, "a")
    qb = quantize(w, recipe.b_format, recipe.b_scaling, "b")
    sa, sb = qa.k_scales(), qb.k_scales()
    products = [np.float64(p) * q for g in range(sa.shape[1]) for p in sa[:, g] for q in sb[g]]
    exact = [Fraction(p) * Fraction(q) for g in range(sa.shape[1]) for p in sa[:, g]
             for q in sb[g]]
    assert any(Fraction(p) != e for p, e in zip(products, exact))   # some need > 53 bits
    np.testing.assert_array_equal(metrics.exact_product(qa, qb), _fraction_product(qa, qb))
