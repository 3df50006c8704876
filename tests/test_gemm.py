"""tcsim.gemm against the exact GEMM oracle (tcsim.reference_gemm), bit for bit, plus properties,
the DeepSeek-V3 qualitative result and bad input."""

from __future__ import annotations

import importlib
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tcsim
from helpers import bits, describe_routes, recorded_routes
from strategies import mode_values
from tcsim import ConfigError, FormatError, Recipe, Scaling, ShapeError, gemm, reference_gemm
from tcsim.quant import quantize
from tcsim.workloads import make_inputs

RECIPES = {
    "deepseek_v3": Recipe.deepseek_v3(),
    "deepseek_v3_bf16": Recipe.deepseek_v3(output="bf16"),
    "cublas_fast_accum": Recipe.cublas_fast_accum(),
    "cublas_split_accum": Recipe.cublas_split_accum(),
    "te_delayed": Recipe.te_delayed(history=4, margin=1),
    "mxfp8": Recipe.mxfp8(),
}
EPILOGUES = mode_values(Recipe, "epilogue")
# granularities and scale formats drawn by test_random_recipes_equal_oracle: the recipe's own
# values, less those that fix their own scale format and group (the named recipes cover them)
GRANULARITIES = mode_values(Scaling, "granularity", {
    "mx": "MX scaling is ue8m0 per 32 elements only (Scaling validator; Recipe.mxfp8)",
    "nvfp4": "NVFP4 scales go inside the MMA only (Recipe validator; Recipe.nvfp4)"})
SCALE_DTYPES = mode_values(Scaling, "scale_dtype", {
    "ue4m3": "ue4m3 scales belong to NVFP4 scaling (Scaling validator)"})


def _oracle(det):
    return reference_gemm.gemm(det.a.values, det.a.k_scales(), det.b.values, det.b.k_scales(),
                               det.recipe, det.datapath)


def _check(x, w, model, recipe):
    with recorded_routes() as routes:
        y, det = gemm(x, w, model=model, recipe=recipe, return_details=True)
    want = _oracle(det)
    bad = np.flatnonzero(bits(y) != bits(want))
    assert not bad.size, (f"{bad.size} outputs differ; first {np.unravel_index(bad[0], y.shape)}:"
                          f" {y.flat[bad[0]]!r} vs {want.flat[bad[0]]!r}\n"
                          f"{describe_routes(routes)}\n{det.datapath!r}\n{recipe!r}")


@pytest.mark.parametrize("name", list(RECIPES))
@pytest.mark.parametrize("model", ["h100", "b200", "ideal"])
def test_named_recipes_equal_oracle(name, model):
    x, w = make_inputs("outliers", 3, 256, 4, seed=11)
    _check(x, w, model, RECIPES[name])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), epilogue=st.sampled_from(EPILOGUES),
       interval=st.sampled_from([None, 32, 64, 128]), model=st.sampled_from(["h100", "ada",
                                                                               "ideal", "b200"]),
       gran=st.sampled_from(GRANULARITIES),
       scale_dtype=st.sampled_from(SCALE_DTYPES), dist=st.sampled_from(
           ["normal", "uniform", "heavy", "outliers"]), k_blocks=st.integers(1, 3),
       output=st.sampled_from(mode_values(Recipe, "output")))
def test_random_recipes_equal_oracle(seed, epilogue, interval, model, gran, scale_dtype, dist,
                                     k_blocks, output):
    if interval is None and gran in ("group", "block"):
        gran = "channel"
    sc = Scaling(granularity=gran, scale_dtype=scale_dtype)
    recipe = Recipe(a_scaling=sc, b_scaling=sc, promotion_interval=interval, epilogue=epilogue,
                    a_format="e4m3", b_format="e5m2" if seed % 2 else "e4m3", output=output)
    x, w = make_inputs(dist, 2, 128 * k_blocks, 3, seed=seed)
    _check(x, w, model, recipe)


def test_promotion_every_block_is_per_block_fp32_accumulation():
    """Promotion every 32 with unit scales == an FP32 loop over 32-element tensor-core blocks."""
    x, w = make_inputs("uniform", 4, 512, 5, seed=2)
    sc = Scaling(scale_dtype="pow2")
    recipe = Recipe(a_scaling=sc, b_scaling=sc, promotion_interval=32, epilogue="deepgemm")
    y, det = gemm(x, w, model="h100", recipe=recipe, return_details=True)
    a, b = det.a.values, det.b.values
    s = np.float32(det.a.scales[0, 0]) * np.float32(det.b.scales[0, 0])
    acc = np.zeros((4, 5), np.float32)
    for k0 in range(0, 512, 32):
        p = tcsim.mma(a[:, k0:k0 + 32], b[k0:k0 + 32], model="h100", a_format="e4m3",
                      b_format="e4m3")
        # s is a power of two here, so s*p is exact and the FMA is one rounded addition
        acc = (acc.astype(np.float64) + np.float64(s) * p).astype(np.float32)
    np.testing.assert_array_equal(bits(y), bits(acc))


def test_ideal_fast_accumulation_is_one_exact_sum_rounded_once():
    x, w = make_inputs("normal", 3, 384, 3, seed=5)
    sc = Scaling(scale_dtype="pow2")
    recipe = Recipe(a_scaling=sc, b_scaling=sc, promotion_interval=None, epilogue="2d2d")
    y, det = gemm(x, w, model="ideal", recipe=recipe, return_details=True)
    scale = Fraction(det.a.scales[0, 0]) * Fraction(det.b.scales[0, 0])
    for i in range(3):
        for j in range(3):
            exact = sum(Fraction(p) * Fraction(q) for p, q in zip(det.a.values[i],
                                                                    det.b.values[:, j]))
            assert y[i, j] == reference_gemm.fp32_round(exact * scale)


def test_deepseek_promotion_cuts_uniform_error_tenfold():
    """DeepSeek-V3 s3.3.2, qualitatively: at K = 4096 with U(0, 1) inputs, promotion every 128
    cuts the error of fast accumulation in the 14-bit H100 accumulator by at least 10x."""
    from tcsim.metrics import relative_frobenius_error
    x, w = make_inputs("uniform", 32, 4096, 32, seed=0)
    err = {}
    for name, recipe in (("fast", Recipe.cublas_fast_accum()),
                         ("promoted", Recipe.cublas_split_accum())):
        y, det = gemm(x, w, model="h100", recipe=recipe, return_details=True)
        err[name] = relative_frobenius_error(y, det.exact_product())
    assert err["fast"] > 0.01                          # percents, as the paper says
    assert err["promoted"] * 10 < err["fast"]


def test_prequantised_operands_and_details():
    x, w = make_inputs("normal", 4, 256, 6, seed=1)
    r = Recipe.deepseek_v3()
    qa = quantize(x, "e4m3", r.a_scaling, "a")
    qb = quantize(w, "e4m3", r.b_scaling, "b")
    y1, det = gemm(x, w, recipe=r, return_details=True)
    y2 = gemm(qa, qb, recipe=r)
    np.testing.assert_array_equal(bits(y1), bits(y2))
    assert det.chunks == 2 and det.a.scales.shape == (4, 2) and det.b.scales.shape == (2, 1)
    assert det.accumulator.dtype == np.float32
    yb = gemm(qa, qb, recipe=Recipe.deepseek_v3(output="bf16"))
    assert yb.dtype.name == "bfloat16"


def test_nan_in_prequantised_codes_propagates():
    x, w = make_inputs("normal", 2, 128, 2, seed=1)
    r = Recipe.cublas_split_accum()
    qa = quantize(x, "e4m3", r.a_scaling, "a")
    qb = quantize(w, "e4m3", r.b_scaling, "b")
    values = qa.values.copy()
    values[0, 5] = np.nan
    from dataclasses import replace
    y = gemm(replace(qa, values=values), qb, recipe=r)
    assert bits(y)[0, 0] == 0x7FFFFFFF and np.isfinite(y[1]).all()


def test_progress_is_shown(capsys):
    x, w = make_inputs("normal", 2, 256, 2)
    gemm(x, w, progress=True)
    assert "2/2 K-chunks" in capsys.readouterr().err


def test_bad_input():
    x, w = make_inputs("normal", 4, 256, 6)
    with pytest.raises(ShapeError, match="inner dimensions"):
        gemm(x, w[:128])
    with pytest.raises(ShapeError, match="K = 0"):
        gemm(x[:, :0], w[:0])
    with pytest.raises(ShapeError, match="pad K to 256"):
        gemm(x[:, :200], w[:200])
    with pytest.raises(ConfigError, match="not a multiple of the datapath's block size 32"):
        gemm(x, w, recipe=Recipe.cublas_split_accum(promotion_interval=48))
    with pytest.raises(ValueError, match="does not divide"):
        Recipe.deepseek_v3(promotion_interval=256)
    with pytest.raises(ValueError, match="fast accumulation"):
        Recipe.deepseek_v3(promotion_interval=None)
    bad = x.copy()
    bad[1, 3] = np.inf
    with pytest.raises(FormatError):
        gemm(bad, w)
    with pytest.raises(tcsim.UnknownModelError):
        gemm(x, w, model="v100")          # no FP8 path
    r = Recipe.deepseek_v3()
    qb = quantize(w, "e4m3", r.b_scaling, "b")
    with pytest.raises(ShapeError, match="role"):
        gemm(qb, qb, recipe=r)


def test_gemm_streams_k_without_mnk_temporaries():
    """Memory stays O(M*K + K*N + M*N): with K = 7168 an O(M*N*K) float64 temporary would take
    3.7 GB; the traced peak stays within a small multiple of the operands."""
    import tracemalloc
    x, w = make_inputs("normal", 256, 7168, 256, seed=3)
    operands = x.nbytes + w.nbytes + 256 * 256 * 4
    tracemalloc.start()
    try:
        gemm(x, w, model="h100", recipe=Recipe.deepseek_v3(), progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * operands, (peak, operands)


def test_stochastic_output_rounding_in_gemm_equals_oracle():
    """An H100-like datapath with stochastic rounding of the accumulator write-back (a design
    proposal) is bit-equal to the oracle. And what it shows: on same-sign inputs the bias of
    Hopper's FP8 accumulation comes from truncating the aligned terms, not from the 14-bit RZ
    write-back: SR (or RNE) at the output leaves it, nearest rounding of the terms removes it."""
    dp = tcsim.load_model("h100").find_path("e4m3", "e4m3", "fp32").datapath()
    sr = dp.model_copy(update={"output_rounding": "sr", "sr_bits": 12, "sr_seed": 7})
    x, w = make_inputs("uniform", 3, 256, 3, seed=4)
    _check(x, w, sr, Recipe.cublas_split_accum(promotion_interval=64))
    x, w = make_inputs("uniform", 16, 4096, 16, seed=1)
    fast = Recipe.cublas_fast_accum()
    bias = {}
    for name, d in (("rz", dp), ("sr", sr), ("term_rne", dp.model_copy(
            update={"term_rounding": "rne"}))):
        y, det = gemm(x, w, model=d, recipe=fast, return_details=True)
        ref = det.exact_product()
        bias[name] = float(np.mean(y - ref) / np.mean(ref))
    assert bias["rz"] < -0.05
    assert abs(bias["sr"] - bias["rz"]) < 0.01 * abs(bias["rz"])
    assert abs(bias["term_rne"]) < abs(bias["rz"]) / 10


PLAN_CASES = {
    "deepseek_v3": ("h100", Recipe.deepseek_v3(), 384),
    "split_accum_partial_last_chunk": ("h100", Recipe.cublas_split_accum(promotion_interval=64),
                                       288),
    "fast_accum": ("ada", Recipe.cublas_fast_accum(), 160),
    "mxfp8_native": ("b200", Recipe.mxfp8_native(), 256),
}


@pytest.mark.parametrize("case", list(PLAN_CASES))
def test_chunk_batching_and_row_tiles_give_the_same_bits(case, monkeypatch):
    """gemm runs several promotion chunks in one batched kernel call and splits the rows into
    tiles when the datapath allows: every split (one chunk and one row per call, odd row tiles,
    all chunks and rows in one call, one chunk with all rows as before batching) gives the same
    bits, and those of the oracle."""
    gemm_module = importlib.import_module("tcsim.gemm")
    model, recipe, k = PLAN_CASES[case]
    x, w = make_inputs("outliers", 13, k, 9, seed=5)
    results = {}
    for budget in (1, 9 * 4, 13 * 9, 1 << 30):       # outputs per kernel call
        monkeypatch.setattr(gemm_module, "BATCH_OUTPUTS", budget)
        results[budget] = bits(gemm(x, w, model=model, recipe=recipe, progress=False))
    # return_details quantises the whole operands first (the oracle tests above use it); without
    # it each chunk is quantised when needed: the same bits
    y, det = gemm(x, w, model=model, recipe=recipe, progress=False, return_details=True)
    results["whole operands"] = bits(y)
    for budget, got in results.items():
        np.testing.assert_array_equal(got, results[13 * 9], err_msg=f"budget {budget}")
    if not recipe.scales_in_mma:      # reference_gemm models the promotion of scaled partials
        np.testing.assert_array_equal(bits(y), bits(_oracle(det)))


def test_stochastic_rounding_is_never_batched(monkeypatch):
    """SR draws its random numbers by batch entry and row: such datapaths run one chunk with all
    rows per call, whatever the budget (the oracle comparison above holds for each budget)."""
    gemm_module = importlib.import_module("tcsim.gemm")
    dp = tcsim.load_model("h100").find_path("e4m3", "e4m3", "fp32").datapath()
    sr = dp.model_copy(update={"output_rounding": "sr", "sr_bits": 12, "sr_seed": 7})
    x, w = make_inputs("uniform", 5, 256, 3, seed=4)
    for budget in (1, 1 << 30):
        monkeypatch.setattr(gemm_module, "BATCH_OUTPUTS", budget)
        _check(x, w, sr, Recipe.cublas_split_accum(promotion_interval=64))


_THREADS_SCRIPT = """
import hashlib, numpy as np, tcsim
from tcsim.workloads import make_inputs
x, w = make_inputs("outliers", 67, 1024, 45, seed=2)
for r in (tcsim.Recipe.deepseek_v3(), tcsim.Recipe.cublas_split_accum()):
    y = tcsim.gemm(x, w, recipe=r, progress=False)
    print(hashlib.sha256(y.view(np.uint32).tobytes()).hexdigest())
"""


def test_same_bits_with_one_and_two_numba_threads():
    """Every kernel gemm runs (quantisation, tensor-core partials, epilogue) computes each
    output whole in one thread: the bits do not depend on NUMBA_NUM_THREADS."""
    import os
    import subprocess
    import sys
    out = {}
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads)
        run = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        out[threads] = run.stdout.split()
    assert len(out["1"]) == 2 and out["1"] == out["2"]
