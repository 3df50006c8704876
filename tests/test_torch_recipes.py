"""The named training recipes against their sources: torchao's own Float8Linear (bit for bit,
under tcsim.torch.emulate), Transformer Engine's delayed-scaling rule, DeepSeek-V3's power-of-two
activation cache and bf16 outputs, and the per-GEMM choice of fast accumulation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tcsim  # noqa: E402
import tcsim.torch as tt  # noqa: E402
from helpers import bits  # noqa: E402
from tcsim.reciprocal_scaling import quantization_scale, quantize_reciprocal  # noqa: E402
from tcsim.torch.stats import error_stats, ordered_matmul  # noqa: E402


def _step(layer, x, dy):
    xg = x.clone().requires_grad_(True)
    y = layer(xg)
    y.backward(dy)
    return y.detach(), xg.grad, next(layer.parameters()).grad.clone()


# ---- torchao_tensorwise ----------------------------------------------------------------------
def test_torchao_tensorwise_is_torchao_float8_linear_bit_for_bit():
    """tcsim's recipe and torchao's own Float8Linear (default config) with its _scaled_mm calls
    run on the same modelled unit: y, dx and dw have the same bits. K = 160 / 96 / 192 > 128,
    so fast and split accumulation differ; dy in E5M2 and torchao's scale arithmetic matter."""
    pytest.importorskip("torchao")
    from torchao.float8 import convert_to_float8_training
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(160, 96, bias=False))
    sim = tt.Linear(160, 96, bias=False, recipe=tt.TrainingRecipe.torchao_tensorwise())
    with torch.no_grad():
        sim.weight.copy_(ref[0].weight)
    convert_to_float8_training(ref)
    x, dy = torch.randn(192, 160) * 3, torch.randn(192, 96) * 1e-3
    with tt.emulate(model="h100"):
        want = _step(ref, x, dy)
    got = _step(sim, x, dy)
    for g, w, name in zip(got, want, ("y", "dx", "dw")):
        assert np.array_equal(bits(g), bits(w)), name


def test_torchao_scale_is_amax_to_scale():
    """S = RN32(max_fp8 / max(amax, 1e-12)) as torchao computes it, E4M3 and E5M2, including
    an all-zero tensor (the EPS clamp); the GEMM scale is RN32(1 / S)."""
    pytest.importorskip("torchao")
    from torchao.float8.float8_utils import amax_to_scale
    rng = np.random.default_rng(5)
    amaxes = np.concatenate([[0.0, 1e-30, 3.0], rng.lognormal(0, 8, 500)]).astype(np.float32)
    for fmt, dt in (("e4m3", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)):
        want = [amax_to_scale(torch.tensor(a), dt).item() for a in amaxes]
        got = [float(quantization_scale("torchao", fmt, float(a))) for a in amaxes]
        assert np.array_equal(np.float32(got).view(np.uint32), np.float32(want).view(np.uint32))
    q = quantize_reciprocal(np.zeros((4, 8), np.float32), "e4m3", "a", "torchao")
    assert q.scales[0, 0] == np.float32(1) / np.float32(448 / 1e-12) and not q.values.any()


def test_torchao_codes_multiply_where_tcsim_divides():
    """The codes are the saturating cast of RN32(x * S) (built here with ml_dtypes); the scale
    RN32(1 / S) differs from tcsim.quant's RN32(amax / 448) here (in the last bit), so every
    dequantised value does: the arithmetic matters."""
    import ml_dtypes
    x = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32) * 7
    ours = quantize_reciprocal(x, "e4m3", "a", "torchao")
    s = np.float32(np.float64(448) / float(np.abs(x).max()))
    want = np.clip(x * s, -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    assert np.array_equal(ours.values, want)
    assert ours.scales[0, 0] == np.float32(1) / s
    divided = tcsim.quantize(x, "e4m3", tcsim.Scaling(), "a")
    assert ours.scales[0, 0] != divided.scales[0, 0]
    assert (ours.dequantize() != divided.dequantize()).mean() > 0.99


# ---- te_hybrid_delayed -----------------------------------------------------------------------
def test_te_scale_comes_from_the_history_only():
    assert quantization_scale("te_delayed", "e4m3", 5.0, history=[]) == 1.0
    assert quantization_scale("te_delayed", "e4m3", 5.0, history=[2.0, 0.5], length=1) \
        == np.float32(448) / np.float32(0.5)
    assert quantization_scale("te_delayed", "e5m2", 5.0, history=[2.0, 0.5], length=2,
                              margin=1) == np.float32(57344 / 2.0 / 2)
    x = np.full((2, 2), 8.0, np.float32)
    q = quantize_reciprocal(x, "e4m3", "a", "te_delayed", tcsim.Scaling(amax_history=4),
                            history=[1.0])
    assert (q.values == 448).all() and q.amax == 8.0      # saturated, current amax recorded
    with pytest.raises(tcsim.ConfigError, match="amax_history"):
        quantize_reciprocal(x, "e4m3", "a", "te_delayed", tcsim.Scaling())


def test_te_hybrid_defaults_are_te_defaults():
    r = tt.TrainingRecipe.te_hybrid_delayed()
    for g in tt.GEMMS:
        s = getattr(r, g)
        assert s.scale_rule == "te_delayed" and s.recipe.a_scaling.amax_history == 1024
    assert r.fprop.recipe.promotion_interval is None
    assert r.dgrad.recipe.a_format == r.wgrad.recipe.a_format == "e5m2"


def test_te_step_where_x_grows_8x_saturates():
    """Two steps; on the second x is 8x larger: TE's scale (from the first step's amax) puts
    most of x beyond 448, so fprop's error is large (docs/training.md quotes these numbers);
    the old rule (the current amax in the max) saturated nothing and kept the error at 0.037."""
    torch.manual_seed(0)
    sim = tt.Linear(256, 128, bias=False, recipe=tt.TrainingRecipe.te_hybrid_delayed())
    sim.keep_details, sim.stats = True, tt.GemmStats(every=1)
    x0 = torch.randn(256, 256)
    for step, x in enumerate((x0, x0 * 8)):
        sim.stats.begin_step(step)
        _step(sim, x, torch.randn(256, 128))
        sim.weight.grad = None
    qx = sim.details["fprop"].a
    assert qx.scales[0, 0] == np.float32(1) / (np.float32(448) /
                                               np.float32(np.abs(x0.numpy()).max()))
    err = sim.stats.frame().query("gemm == 'fprop'")["e2e_rel_err"].tolist()
    saturated = float(np.mean(np.abs(qx.values) == 448))
    assert 0.55 < saturated < 0.62 and err[0] < 0.04 and err[1] > 0.55


# ---- deepseek_v3 -----------------------------------------------------------------------------
def test_deepseek_retiling_of_the_fp8_cache_adds_no_error():
    """x's FP8 cache (1x128 tiles, power-of-two scales) re-quantised in 128x1 tiles for wgrad
    gives back the cache exactly; with fp32 scales (the recipe before) it did not."""
    torch.manual_seed(1)
    x, dy = torch.randn(256, 256), torch.randn(256, 128)
    new = tt.TrainingRecipe.deepseek_v3()
    fp32 = tcsim.Scaling(granularity="group")
    old = new.replace_gemm("fprop", recipe=new.fprop.recipe.model_copy(update={"a_scaling": fp32})) \
        .replace_gemm("wgrad", recipe=new.wgrad.recipe.model_copy(update={"b_scaling": fp32}))
    for recipe, exact in ((new, True), (old, False)):
        sim = tt.Linear(256, 128, bias=False, recipe=recipe)
        sim.keep_details = True
        _step(sim, x, dy)
        cache = sim.details["fprop"].a.dequantize()
        assert np.array_equal(sim.details["wgrad"].b.dequantize(), cache) == exact


def test_deepseek_fprop_and_dgrad_write_bf16_and_stats_see_it():
    torch.manual_seed(2)
    sim = tt.Linear(256, 128, bias=False, recipe=tt.TrainingRecipe.deepseek_v3())
    stats = tt.GemmStats(every=1)
    sim.stats, sim.keep_details = stats, True
    stats.begin_step(0)
    x, dy = torch.randn(256, 256), torch.randn(256, 128)
    y, dx, dw = _step(sim, x, dy)
    assert not (bits(y) & 0xFFFF).any() and not (bits(dx) & 0xFFFF).any()     # bf16 values
    assert (bits(dw) & 0xFFFF).any()                                            # fp32
    rows = stats.frame().set_index("gemm")
    # the statistics are those of what the kernel writes (bf16), not of its fp32 accumulator
    e2e = ordered_matmul(x.numpy(), sim.weight.detach().numpy().T)
    assert rows.loc["fprop", "e2e_rel_err"] == error_stats(y.numpy(), e2e, "e2e")["e2e_rel_err"]
    det = sim.details["fprop"]
    exact = det.exact_product()
    written = error_stats(y.numpy(), exact, "acc")["acc_rel_err"]
    assert rows.loc["fprop", "acc_rel_err"] == written
    assert written > 4 * error_stats(det.accumulator, exact, "acc")["acc_rel_err"]


# ---- fast accumulation per GEMM --------------------------------------------------------------
def test_fast_accum_gemms_picks_the_gemms():
    r = tt.TrainingRecipe.fast_accum(fast_accum_gemms=("fprop",))
    assert r.fprop.recipe.promotion_interval is None
    assert r.dgrad.recipe.promotion_interval == r.wgrad.recipe.promotion_interval == 128
    assert r.name == "h100_fast_accum_fprop"
    assert tt.TrainingRecipe.fast_accum().name == "h100_fast_accum"
    assert all(getattr(tt.TrainingRecipe.fast_accum(), g).recipe.promotion_interval is None
               for g in tt.GEMMS)
    for bad in (("fprop", "fprop"), ("forward",), "fprop", None):
        with pytest.raises(tcsim.ConfigError, match="fast_accum_gemms"):
            tt.TrainingRecipe.fast_accum(fast_accum_gemms=bad)


def test_accumulator_proposal_keeps_the_output_precision():
    h100 = tt.TrainingRecipe.fast_accum().fprop.resolved_datapath()
    r = tt.TrainingRecipe.accumulator_proposal(16)
    dp = r.fprop.resolved_datapath()
    assert dp.fraction_bits == 16 and dp.output_precision == h100.output_precision
    r17 = tt.TrainingRecipe.accumulator_proposal(16, output_precision=17,
                                                 fast_accum_gemms=("fprop", "wgrad"))
    assert r17.fprop.resolved_datapath().output_precision == 17
    assert r17.dgrad.recipe.promotion_interval == 128
    assert r17.name == "h100_f16_p17_fast_fprop_wgrad"


def test_scale_rule_is_validated():
    with pytest.raises(ValueError, match="per-tensor"):
        tt.GemmSetting(recipe=tcsim.Recipe.deepseek_v3(), scale_rule="torchao")
    with pytest.raises(ValueError, match="amax_history"):
        tt.GemmSetting(recipe=tcsim.Recipe.cublas_fast_accum(), scale_rule="te_delayed")
    with pytest.raises(ValueError, match="amax_history"):
        tt.GemmSetting(recipe=tcsim.Recipe.te_delayed(), scale_rule="torchao")
    with pytest.raises(ValueError, match="fp8"):
        tt.GemmSetting(precision="bf16", scale_rule="torchao")
