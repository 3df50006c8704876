"""The oracle's stage trace and tcsim.explain, its formatter: the traced bits equal the kernel's.

Each check here compares bit patterns (uint32 / uint16 views, signed zeros and the canonical NaN
included) of three independent computations: tcsim.explain's traced result (the oracle's stages,
tcsim.reference.trace_dot), tcsim.mma (the numba kernels) and tcsim.reference.mma.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcsim import reference, round_to_format
from tcsim.datapath import Datapath
from tcsim.explain import explain
from tcsim.gemm import gemm
from tcsim.mma import mma
from tcsim.presets import load_model, preset_names
from tcsim.quant import Quantized
from tcsim.recipe import Recipe, Scaling

BITS = {"fp32": (np.float32, np.uint32), "fp16": (np.float16, np.uint16)}


def kernel_bits(a, b, c, dp, fmt, acc, **scales) -> int:
    dtype, view = BITS[acc]
    d = mma(np.asarray(a, np.float64)[None], np.asarray(b, np.float64)[:, None],
            np.array([[c]], dtype), model=dp, a_format=fmt, b_format=fmt, acc=acc, **scales)
    return int(d.view(view)[0, 0])


def oracle_bits(a, b, c, dp, fmt, acc, **scales) -> int:
    d = reference.mma(np.asarray(a, np.float64)[None], np.asarray(b, np.float64)[:, None],
                      np.array([[c]]), dp, fmt, fmt, acc, **scales)
    return int(d.view(BITS[acc][1])[0, 0])


def traced_bits(ex) -> int:
    return reference.result_bits(ex.result, ex.acc)


# --- the three cases that made the old explain raise AssertionError (issue 13) ----------------
def test_fp16_overflow_is_traced_as_inf():
    """60000 * 2 + 60000 * 2 = 240000 overflows fp16: the trace says so and gives +Inf (0x7c00)."""
    dp = load_model("h100").find_path("fp16", "fp16", "fp16", None)
    ex = explain([60000, 60000], [2, 2], model="h100", a_format="fp16", acc="fp16")
    assert traced_bits(ex) == kernel_bits([60000, 60000], [2, 2], 0.0, dp, "fp16", "fp16") \
        == 0x7C00
    assert ex.blocks[0].trace.record("round").outputs["result"].is_inf
    assert "overflows fp16" in ex.text()


def test_flushed_subnormal_inputs_are_traced():
    """subnormal_inputs = "flush": 2^-7 (e4m3 subnormal) becomes 0 before the products."""
    dp = load_model("h100").find_path("e4m3", "e4m3", "fp32", None).replace(
        subnormal_inputs="flush")
    a, b = [2.0 ** -7, 1.0, -0.5], [1.0, 2.0 ** -9, 0.25]
    ex = explain(a, b, 0.0, model=dp, a_format="e4m3")
    assert traced_bits(ex) == kernel_bits(a, b, 0.0, dp, "e4m3", "fp32") == \
        oracle_bits(a, b, 0.0, dp, "e4m3", "fp32")
    assert ex.result == -0.125                   # only -0.5 * 0.25 is left
    assert ex.blocks[0].trace.record("flush").decided["flushed"] == ["a0", "b1"]


def test_zero_operand_exponent_sets_E():
    """zero_operand_exponent = 20: the zero product has exponent 40 > 0, so E = 40 and the grid
    2^38 swamps 1 * 1."""
    dp = Datapath(block_size=2, fraction_bits=2, zero_operand_exponent=20)
    ex = explain([1.0, 0.0], [1.0, 0.0], 0.0, model=dp, a_format="e4m3")
    assert traced_bits(ex) == kernel_bits([1.0, 0.0], [1.0, 0.0], 0.0, dp, "e4m3", "fp32") == 0
    assert ex.blocks[0].E == 40 and ex.blocks[0].terms[0].swamped


# --- what explain used to refuse --------------------------------------------------------------
def test_block_scaled_instruction_is_traced():
    """b200 kind::mxf8f6f4: each product's exponent gains Xa + Xb of its block's scales."""
    rng = np.random.default_rng(4)
    a = round_to_format(rng.standard_normal(64), "e4m3")
    b = round_to_format(rng.standard_normal(64), "e4m3")
    sa, sb = np.array([2.0 ** -3, 2.0 ** 4]), np.array([1.0, 2.0 ** -20])
    ex = explain(a, b, 0.5, model="b200", a_format="e4m3", a_scale=sa, b_scale=sb,
                 scale_format="ue8m0")
    dp = load_model("b200").find_path("e4m3", "e4m3", "fp32", "mxf8f6f4")
    assert traced_bits(ex) == kernel_bits(a, b, 0.5, dp, "e4m3", "fp32", a_scale=sa[None],
                                          b_scale=sb[:, None], scale_format="ue8m0")
    assert ex.exact == sum((Fraction(x) * Fraction(y) * Fraction(s) for x, y, s in
                            zip(a, b, np.repeat(sa * sb, 32))), Fraction(1, 2))


def test_stochastic_terms_and_output_are_traced():
    dp = Datapath(block_size=16, fraction_bits=8, term_rounding="sr", output_rounding="sr",
                  output_precision=12, sr_bits=8, sr_seed=7)
    rng = np.random.default_rng(5)
    a = round_to_format(rng.standard_normal(40) * 2.0 ** rng.integers(-8, 4, 40), "e4m3")
    b = round_to_format(rng.standard_normal(40), "e4m3")
    ex = explain(a, b, 1.0, model=dp, a_format="e4m3")
    assert traced_bits(ex) == kernel_bits(a, b, 1.0, dp, "e4m3", "fp32") == \
        oracle_bits(a, b, 1.0, dp, "e4m3", "fp32")
    assert "stochastic rounding" in ex.text()


def test_promoted_gemm_of_a_lowered_instruction_equals_tcsim_gemm():
    """h100 mma.sync FP8 (lowered onto FP16 HMMA) promoted every 64 K into FP32 with DeepGEMM's
    epilogue: explain's accumulator has tcsim.gemm's bits."""
    rng = np.random.default_rng(6)
    a = round_to_format(rng.random(192) * 4, "e4m3")
    b = round_to_format(rng.random(192) - 0.5, "e4m3")
    sa, sb = [0.5, 3.0, 2.0 ** -7], [1.5, 0.25, 8.0]
    ex = explain(a, b, 0.0, model="h100", path="mma.sync", promotion_interval=64,
                 a_scales=sa, b_scales=sb)
    assert "tcsim.gemm" in ex.checked and len(ex.promotions) == 3
    assert ex.datapath.lowered_k == 32 and any(blk.after for blk in ex.blocks)
    scaling = Scaling(granularity="group", group_size=64)
    qa = Quantized(a[None].copy(), np.array([sa]), "e4m3", "a", scaling, 1.0)
    qb = Quantized(b[:, None].copy(), np.array(sb)[:, None], "e4m3", "b", scaling, 1.0)
    want = gemm(qa, qb, model=ex.datapath, recipe=Recipe(a_scaling=scaling, b_scaling=scaling,
                                                          promotion_interval=64))
    assert reference.result_bits(ex.result) == int(want.view(np.uint32)[0, 0])


# --- every preset path: trace == kernel == oracle -------------------------------------------
def _paths():
    out = []
    for name in preset_names():
        for p in load_model(name).paths:
            out.extend((name, p, fmt) for fmt in p.inputs)
    return out


PATHS = _paths()


@st.composite
def problems(draw):
    name, p, fmt = draw(st.sampled_from(PATHS))
    n = p.block_size or 8
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    scales = {}
    if p.block_scale != "none":
        blk = max(p.scale_blocks)
        k = blk * draw(st.integers(1, 2))
        k += -k % n
        sfmt = p.scale_formats[0]
        pick = (lambda m: 2.0 ** rng.integers(-4, 5, m)) if sfmt == "ue8m0" else \
            (lambda m: round_to_format(rng.random(m) * 8, "e4m3"))
        scales = dict(a_scale=pick(k // blk), b_scale=pick(k // blk), scale_format=sfmt)
    else:
        k = draw(st.integers(1, 2 * n + 3))

    def values():
        x = rng.standard_normal(k) * 2.0 ** rng.integers(-12, 12, k)
        x[rng.random(k) < 0.2] = 0.0
        return round_to_format(x, fmt, overflow="saturate")
    c = float(round_to_format(np.array([rng.standard_normal() * 2.0 ** rng.integers(-20, 8)]),
                              p.output)[0])
    return name, p, fmt, values(), values(), c, scales


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_trace_bits_equal_kernel_and_oracle(problem):
    name, p, fmt, a, b, c, scales = problem
    ex = explain(a, b, c, model=name, a_format=fmt, acc=p.output, path=p.name, **scales)
    mma_scales = {}
    if scales:
        mma_scales = dict(a_scale=np.asarray(scales["a_scale"])[None],
                          b_scale=np.asarray(scales["b_scale"])[:, None],
                          scale_format=scales["scale_format"])
    want = kernel_bits(a, b, c, p, fmt, p.output, **mma_scales)
    assert traced_bits(ex) == want == oracle_bits(a, b, c, p, fmt, p.output, **mma_scales)


def test_promoted_block_scaled_gemm_is_traced():
    """b200 kind::mxf8f6f4 promoted every 64 K: each partial carries its blocks' scales, and its
    bits equal tcsim.mma's on the same chunk and scales."""
    rng = np.random.default_rng(7)
    a = round_to_format(rng.standard_normal(128), "e4m3")
    b = round_to_format(rng.standard_normal(128), "e4m3")
    sa, sb = 2.0 ** rng.integers(-3, 3, 4), 2.0 ** rng.integers(-3, 3, 4)
    ex = explain(a, b, 0.0, model="b200", a_format="e4m3", a_scale=sa, b_scale=sb,
                 scale_format="ue8m0", promotion_interval=64, a_scales=[2.0, 0.5],
                 b_scales=[1.0, 3.0])
    dp = ex.datapath
    assert dp.block_scale == "exponent" and len(ex.promotions) == 2
    for pr, s in zip(ex.promotions, (slice(0, 2), slice(2, 4))):
        want = kernel_bits(a[pr.k0:pr.k1], b[pr.k0:pr.k1], 0.0, dp, "e4m3", "fp32",
                           a_scale=sa[None, s], b_scale=sb[s, None], scale_format="ue8m0")
        assert reference.result_bits(pr.partial) == want
    assert ex.promotions[1].acc_after == ex.result


def test_stage_records_of_a_block():
    """h100 FP8: products 2, 2 (exponent 1) and 2^-12 (exponent -12 = E - 13, kept on the grid
    2^-12); their sum 4 + 2^-12 needs 15 bits, so the 14-bit RZ output discards 2^-12."""
    tr = reference.trace_dot([1.0, 1.0, 2.0 ** -6], [2.0, 2.0, 2.0 ** -6], 0.0,
                             load_model("h100").find_path("e4m3", "e4m3", "fp32", None),
                             "e4m3", "e4m3")
    (blk,) = tr.blocks
    assert [r.stage for r in blk.records] == ["terms", "align", "round"]
    align, rnd = blk.record("align"), blk.record("round")
    assert align.decided["E"] == 1 and align.decided["quantum"] == Fraction(1, 2 ** 12)
    assert align.outputs["sum"] == 4 + Fraction(1, 2 ** 12)
    assert float(rnd.outputs["result"]) == 4.0 and rnd.decided["discarded"] == Fraction(1, 2 ** 12)
    assert tr.exact == 4 + Fraction(1, 2 ** 12) and float(tr.result) == 4.0
    assert [r.stage for r in tr.records] == ["decode"]


def test_c_rounded_into_fp16_is_a_traced_stage():
    """An fp32 C on an fp16 path is first rounded to fp16 with RNE: 1 + 2^-11 is a tie -> 1."""
    dp = load_model("h100").find_path("fp16", "fp16", "fp16", None)
    tr = reference.trace_dot([0.0], [0.0], 1.0 + 2.0 ** -11, dp, "fp16", "fp16", "fp16")
    dec = tr.records[0]
    assert dec.stage == "decode" and float(dec.outputs["c"]) == 1.0
    assert float(dec.inputs["c"]) == 1.0 + 2.0 ** -11 and float(tr.blocks[0].c_in) == 1.0


def test_stage_records_of_an_amd_block():
    """mi300 FP8 (CDNA3): even and odd lanes, the lane merge, the asymmetric join with C."""
    dp = load_model("mi300").find_path("e5m2fnuz", "e5m2fnuz", "fp32", None)
    tr = reference.trace_dot([1.0, 2.0 ** -16], [1.0, -2.0 ** -16], 2.0 ** -40, dp,
                             "e5m2fnuz", "e5m2fnuz")
    stages = [r.stage for r in tr.blocks[0].records]
    assert stages == ["terms", "align", "align", "lanes", "join", "round"]
    assert float(tr.result) == 1.0 - 2.0 ** -24      # the odd lane's -2^-32 floors to -2^-24


# --- the trace against recorded hardware -----------------------------------------------------
def _replay_rows(*roots, per_output: int = 6) -> int:
    """``per_output`` rows of every recorded output under the roots through the oracle's stage
    trace (trace_dot), compared with the recorded bits; returns the number of rows."""
    from tcsim import corpus
    checked = 0
    for folder in corpus.find_sets(*roots):
        cs = corpus.read_set(folder)
        for out, recorded in cs.d_bits.items():
            name = corpus.RECORDED_PATHS.get((cs.preset, cs.fmt, out))
            try:
                path = load_model(cs.preset).find_path(cs.fmt, cs.fmt, out, name)
            except Exception:           # a set no preset serves (reported by test_corpus)
                continue
            c = cs.c_used(out, path.c_precision_rounding)
            for r in np.linspace(0, cs.a.shape[0] - 1, per_output).astype(int):
                tr = reference.trace_dot(cs.a[r].tolist(), cs.b[r].tolist(), float(c[r]),
                                         path.datapath(), cs.fmt, cs.fmt, out)
                if tr.result.is_nan:        # NaN payloads differ by how they were stored
                    assert np.isnan(np.uint32(recorded[r]).view(np.float32)), (folder, out, r)
                else:                       # fp16 results are stored as fp32 bits
                    assert reference.result_bits(float(tr.result)) == int(recorded[r]), \
                        (folder, out, r)
                checked += 1
    return checked


def test_traced_oracle_reproduces_recorded_hardware_rows(seven_gpu_folders):
    """The oracle's stage trace gives the recorded bits of real GPUs: 6 rows of every output
    of every set of the Khattak-Mikaitis corpus (40 outputs)."""
    assert _replay_rows(*seven_gpu_folders) == 6 * 40


def test_traced_oracle_reproduces_recorded_b200_rows(b200_root):
    assert _replay_rows(b200_root / "B200") == 6 * 8
