"""The Blackwell and AMD CDNA matrix units: block-scaled MMA (MX / NVFP4 scales), split-K
instruction shapes, the CDNA1-3 building blocks (pairwise trees, lanes, the asymmetric join).

* the Blackwell and CDNA presets load, every path carries its evidence;
* the documented probes of docs/hardware.md (tcsim.vectors.unit_probes) give their documented
  result on each variant they separate;
* the staged kernel equals the exact oracle (tcsim.reference) bit for bit on random datapaths
  built from these building blocks (the shipped preset paths: tests/test_kernel_vs_oracle.py);
* block-scaled GEMMs, FP4 recipes and packed FP4 operands, the AMD FP32 FMA chains and zero
  signs, and bad scale input refused with a clear error.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from helpers import describe_routes, recorded_routes
from strategies import staged_problems
from tcsim import load_model, mma, reference
from tcsim.datapath import Datapath
from tcsim.errors import ConfigError, FormatError, ShapeError, UnknownModelError
from tcsim.vectors import unit_probes

NEW_MODELS = ("b200", "rtx-blackwell", "mi100", "mi250", "mi300")


def _bits(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x.view(np.uint32)


# ---- presets ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NEW_MODELS)
def test_new_presets_load_with_evidence(name):
    gpu = load_model(name)
    assert gpu.paths
    for p in gpu.paths:
        assert p.status in ("model", "explained")
        for field in ("block_size", "fraction_bits", "output_rounding"):
            note = p.provenance[field]
            assert note.strip()
        if p.block_scale != "none":
            assert p.scale_formats and p.scale_blocks


def test_disputed_choices_ship_both_variants():
    b200 = load_model("b200")
    names = {p.name for p in b200.paths}
    assert {"mxf4", "mxf4-25bits", "mxf4-dropzero", "mxf4nvf4", "mxf4nvf4-25bits"} <= names
    mi100 = load_model("mi100")
    assert {p.name for p in mi100.paths} == {"mfma", "mfma-km"}
    # the default MI100 fp16 path is MMA-Sim's pairwise tree (the choice the preset documents)
    assert mi100.find_path("fp16", "fp16").product_sum == "pairwise"
    assert "disputed" in mi100.find_path("fp16", "fp16").provenance["product_sum"]


def test_split_k_shapes_are_instruction_paths():
    for name in ("a100", "ada"):
        gpu = load_model(name)
        for fmt, k in (("fp16", 16), ("bf16", 16), ("tf32", 8)):
            p = gpu.find_path(fmt, fmt, "fp32", path="mma.sync")
            assert p.block_size == k // 2 and "split K" in p.instruction


def test_split_k_equals_two_chained_halves():
    """m16n8k16 on A100 = two k8 dot-adds, the first result the C of the second."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4, 16)).astype(np.float16)
    b = rng.standard_normal((16, 5)).astype(np.float16)
    c = rng.standard_normal((4, 5)).astype(np.float32)
    whole = mma(a, b, c, model="a100", path="mma.sync")
    half = mma(a[:, :8], b[:8], c, model="a100", path="mma.sync")
    chained = mma(a[:, 8:], b[8:], half, model="a100", path="mma.sync")
    assert np.array_equal(_bits(whole), _bits(chained))


# ---- documented probes --------------------------------------------------------------------
PROBE_CASES = [(p, path) for p in unit_probes() for path in p.expect]


@pytest.mark.parametrize("probe,path", PROBE_CASES,
                         ids=[f"{p.name}[{path}]" for p, path in PROBE_CASES])
def test_documented_probe(probe, path):
    got = probe.run(path)
    assert _bits(got) == _bits(probe.expect[path]), (probe.name, path, got)


@pytest.mark.parametrize("probe,path", PROBE_CASES,
                         ids=[f"{p.name}[{path}]" for p, path in PROBE_CASES])
def test_documented_probe_oracle(probe, path):
    """The oracle gives the documented result too (it is written from the specification)."""
    dp = probe.datapath(path)
    kw = {}
    if probe.a_scale is not None:
        blk = probe.a.size // probe.a_scale.size
        kw = dict(a_scales=np.repeat(probe.a_scale, blk), b_scales=np.repeat(probe.b_scale, blk),
                  scale_format=probe.scale_format)
    got = reference.dot(probe.a, probe.b, probe.c, dp, probe.a_format, probe.b_format, **kw)
    assert _bits(got) == _bits(probe.expect[path])


def test_probes_separate_their_variants():
    for p in unit_probes():
        if len(p.expect) > 1:
            assert len({int(_bits(v)) for v in p.expect.values()}) == len(p.expect), p.name


# ---- kernel == oracle on random staged datapaths ------------------------------------------
# (every shipped preset path, these units' included, is checked against the oracle by
# test_kernel_vs_oracle.py's cases discovered from models/; the strategies are
# tests/strategies.py's staged_problems)
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(problem=staged_problems())
def test_staged_datapath_matches_oracle(problem):
    dp, fmt, a, b, c, kw = problem
    try:
        with recorded_routes() as routes:
            got = mma(a, b, c.astype(np.float32), model=dp, a_format=fmt, b_format=fmt, **kw)
    except ConfigError as exc:      # a group-term combination whose sums are not exact
        assert "not modelled exactly" in str(exc)
        return
    want = reference.mma(a, b, c, dp, fmt, fmt, **kw)
    assert np.array_equal(_bits(got), _bits(want)), (describe_routes(routes), dp, got, want)


# ---- bad input ----------------------------------------------------------------------------
def _fp4(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.choice([0.0, 0.5, 1.0, -1.5, 2.0, -3.0, 4.0, 6.0], size=shape)


def test_scaled_path_needs_scales_and_plain_path_refuses_them():
    a, b = _fp4((2, 64)), _fp4((64, 3), 1)
    with pytest.raises(ConfigError, match="give a_scale and b_scale"):
        mma(a, b, model="b200", path="mxf4", a_format="e2m1", b_format="e2m1")
    sa, sb = np.ones((2, 2)), np.ones((2, 3))
    with pytest.raises(ConfigError, match="takes no block scales"):
        mma(a, b, model="b200", path="tcgen05", a_format="e2m1", b_format="e2m1", a_scale=sa,
            b_scale=sb, scale_format="ue8m0")


def test_scales_choose_the_block_scaled_path():
    a, b = _fp4((2, 64)), _fp4((64, 3), 1)
    sa = np.ones((2, 2), dtype=ml_dtypes.float8_e8m0fnu)
    sb = np.ones((2, 3), dtype=ml_dtypes.float8_e8m0fnu)
    d = mma(a, b, model="b200", a_format="e2m1", b_format="e2m1", a_scale=sa, b_scale=sb)
    want = a @ b   # small FP4 sums are exact in every path
    assert np.array_equal(d, want.astype(np.float32))


def test_bad_scale_input_is_refused():
    a, b = _fp4((2, 64)), _fp4((64, 3), 1)
    kw = dict(model="b200", path="mxf4nvf4", a_format="e2m1", b_format="e2m1")
    with pytest.raises(FormatError, match="not exactly representable in e8m0"):
        mma(a, b, a_scale=np.full((2, 2), 3.0), b_scale=np.ones((2, 3)), scale_format="ue8m0",
            **kw)
    with pytest.raises(ShapeError, match="expected"):
        mma(a, b, a_scale=np.ones((2, 2)), b_scale=np.ones((4, 3)), scale_format="ue8m0", **kw)
    with pytest.raises(ShapeError, match="this path takes one per"):
        mma(a, b, a_scale=np.ones((2, 8)), b_scale=np.ones((8, 3)), scale_format="ue8m0", **kw)
    with pytest.raises(FormatError, match="scale_format is required"):
        mma(a, b, a_scale=np.ones((2, 2)), b_scale=np.ones((2, 3)), **kw)
    with pytest.raises(FormatError, match="takes ue8m0"):
        mma(a, b, a_scale=np.ones((2, 4)), b_scale=np.ones((4, 3)), scale_format="ue4m3",
            model="b200", path="mxf4", a_format="e2m1", b_format="e2m1")
    with pytest.raises(ShapeError, match="not a multiple"):
        mma(a[:, :32], b[:32], a_scale=np.ones((2, 1)), b_scale=np.ones((1, 3)),
            scale_format="ue8m0", **kw)
    with pytest.raises(UnknownModelError, match="block-scaled"):
        mma(_fp4((2, 64)).astype(np.float16), _fp4((64, 3)).astype(np.float16), model="b200",
            a_scale=np.ones((2, 2)), b_scale=np.ones((2, 3)), scale_format="ue8m0")


def test_bad_building_block_configs_name_their_field():
    with pytest.raises(ValueError, match="join_sum_bits"):
        Datapath(block_size=8, fraction_bits=24, c_placement="asymmetric")
    with pytest.raises(ValueError, match="lanes"):
        Datapath(block_size=8, fraction_bits=24, lanes=2)
    with pytest.raises(ValueError, match="group_size"):
        Datapath(block_size=64, fraction_bits=35, block_scale="group")
    with pytest.raises(ValueError, match="product_sum"):
        Datapath(block_size=4, fraction_bits=24, product_sum="pairwise")
    with pytest.raises(ValueError, match="block_size"):
        Datapath(block_size=6, product_sum="pairwise", c_placement="after",
                 product_sum_precision=24, product_sum_rounding="rne")
    with pytest.raises(ConfigError, match="not modelled exactly"):
        mma(np.ones((1, 64)), np.ones((64, 1)), model=Datapath(
            block_size=64, fraction_bits=35, block_scale="group", group_size=16),
            a_format="e5m2", b_format="e5m2", a_scale=np.ones((1, 2)), b_scale=np.ones((2, 1)),
            scale_format="ue8m0")


# ---- GEMM with the scales inside the MMA --------------------------------------------------
def test_gemm_scales_in_mma_equals_the_scaled_mma_and_the_oracle():
    """Recipe.mxfp8_native on b200: one scaled MMA chain over the whole K (then + 0 in fp32),
    bit for bit the same as tcsim.mma with the quantiser's ue8m0 scales, and as the oracle."""
    from tcsim import Recipe, gemm
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 96)) * np.exp(rng.uniform(-6, 6, (3, 96)))
    w = rng.standard_normal((96, 4))
    y, det = gemm(x, w, model="b200", recipe=Recipe.mxfp8_native(), return_details=True)
    assert det.datapath.block_scale == "exponent"
    sa, sb = det.a.k_scales(), det.b.k_scales()
    d = mma(det.a.values, det.b.values, model="b200", path="mxf8f6f4", a_format="e4m3",
            b_format="e4m3", a_scale=sa, b_scale=sb, scale_format="ue8m0")
    assert np.array_equal(_bits(y), _bits(d))
    want = reference.mma(det.a.values, det.b.values, np.zeros((3, 4)), det.datapath, "e4m3",
                         "e4m3", a_scale=sa, b_scale=sb)
    assert np.array_equal(_bits(y), _bits(want))


def test_native_scaling_needs_a_block_scaled_path():
    from tcsim import Recipe, gemm
    x, w = np.ones((2, 64)), np.ones((64, 2))
    with pytest.raises(ConfigError, match="needs a block-scaled datapath"):
        gemm(x, w, model=Datapath(block_size=32, fraction_bits=25),
             recipe=Recipe.mxfp8_native())
    with pytest.raises(ValueError, match="takes MX"):
        Recipe(scales_in_mma=True)


def test_native_scaling_comparison_runs():
    from tcsim.native_scaling import compare
    rows = compare(4, 4, [256])
    err = {r["run"]: r["accumulation"] for r in rows}
    # b200's 25-bit accumulator with the scales inside the MMA loses less than h100's
    # 13-bit accumulator given the same native scaling
    assert err["b200 mxf8f6f4 (scales in the MMA)"] < \
        err["proposal: h100 13-bit + scales in the MMA"]


def test_unit_probes_saved_for_hardware_runs(tmp_path):
    from tcsim.vectors import save_unit_probes
    paths = save_unit_probes(tmp_path)
    assert len(paths) == len(unit_probes())
    z = np.load(paths[0])
    p = unit_probes()[0]
    assert np.array_equal(z["a_bits"].view(np.float32), p.a.astype(np.float32))
    assert list(z["expect_paths"]) == list(p.expect)
    assert z["expect_bits"][0] == np.float32(p.expect[list(p.expect)[0]]).view(np.uint32)


# ---- FP4 recipes natively in the MMA -------------------------------------------------------
def test_nvfp4_quantisation_arithmetic():
    """ue4m3 block scales per 16, one fp32 tensor scale, e2m1 elements; dequantisation within
    half an e2m1 spacing (relative 2^-2 for normal values) of x except where it saturates."""
    from tcsim import quantize
    from tcsim.recipe import Scaling
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 64)) * np.exp(rng.uniform(-3, 3, (8, 1)))
    q = quantize(x, "e2m1", Scaling(granularity="nvfp4", group_size=16, scale_dtype="ue4m3"), "a")
    assert q.scales.shape == (8, 4)
    assert np.array_equal(formats_round(q.scales, "e4m3"), q.scales)
    assert np.array_equal(formats_round(q.values, "e2m1"), q.values)
    sg = np.float32(np.abs(x).max()) / np.float32(2688.0)
    assert q.global_scale == float(sg)
    deq = q.dequantize()
    assert np.allclose(q.k_scales(), q.scales * q.global_scale, rtol=0, atol=0)
    err = np.abs(deq - x) / np.repeat(q.k_scales(), 16, axis=1)
    assert err.max() <= 1.0 + 1e-6      # at most half of the largest e2m1 spacing (2) per scale


def formats_round(v, fmt):
    from tcsim.formats.conversion import round_to_format
    return round_to_format(np.asarray(v, np.float64), fmt, rounding="rne", overflow="saturate")


@pytest.mark.parametrize("recipe_name,model", [("nvfp4", "b200"), ("mxfp4", "b200"),
                                               ("nvfp4", "rtx-blackwell")])
def test_fp4_gemm_native_equals_scaled_mma_and_epilogue(recipe_name, model):
    """y = RN32(RN32(sg_a * sg_b) * p), p the block-scaled MMA over the whole K (bit for bit,
    and p equal to the oracle's)."""
    from tcsim import Recipe, gemm
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 128)) * 3
    w = rng.standard_normal((128, 4))
    recipe = getattr(Recipe, recipe_name)()
    y, det = gemm(x, w, model=model, recipe=recipe, return_details=True)
    assert det.datapath.block_scale == "group" and det.datapath.block_size == 64
    sfmt = "ue4m3" if recipe_name == "nvfp4" else "ue8m0"
    sa, sb = det.a.block_scales(), det.b.block_scales()
    p = mma(det.a.values, det.b.values, model=det.datapath, a_format="e2m1", b_format="e2m1",
            a_scale=sa, b_scale=sb, scale_format=sfmt)
    want_p = reference.mma(det.a.values, det.b.values, np.zeros((3, 4)), det.datapath, "e2m1",
                           "e2m1", a_scale=sa, b_scale=sb, scale_format=sfmt)
    assert np.array_equal(_bits(p), _bits(want_p))
    g = np.float32(np.float32(det.a.global_scale) * np.float32(det.b.global_scale))
    assert np.array_equal(_bits(y), _bits(g * p))


def test_fp4_recipes_need_scales_in_the_mma():
    from tcsim import Recipe
    from tcsim.recipe import Scaling
    with pytest.raises(ValueError, match="scales_in_mma"):
        Recipe(a_format="e2m1", b_format="e2m1")
    with pytest.raises(ValueError, match="inside the MMA only"):
        Recipe(a_scaling=Scaling(granularity="nvfp4", group_size=16, scale_dtype="ue4m3"))
    with pytest.raises(ValueError, match="e2m1"):
        Recipe.nvfp4(a_format="e4m3")


def test_packed_fp4_operands():
    """uint8 pairs of e2m1 codes along K (low nibble = even element) give the same D as the
    unpacked values; pack/unpack round-trip against ml_dtypes' float4_e2m1fn codes."""
    from tcsim.formats.operands import pack_e2m1, unpack_e2m1
    a, b = _fp4((3, 64), 2), _fp4((64, 5), 3)
    pa = pack_e2m1(a, axis=-1)
    pb = pack_e2m1(b, axis=0)
    assert pa.shape == (3, 32) and pb.shape == (32, 5)
    codes = a.astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & 0x0F
    assert np.array_equal(pa & 0x0F, codes[:, 0::2]) and np.array_equal(pa >> 4, codes[:, 1::2])
    assert np.array_equal(unpack_e2m1(pb, axis=0), b)
    sa, sb = np.ones((3, 2)), np.ones((2, 5))
    kw = dict(model="b200", path="mxf4", a_format="e2m1", b_format="e2m1", a_scale=sa,
              b_scale=sb, scale_format="ue8m0")
    assert np.array_equal(_bits(mma(pa, pb, **kw)), _bits(mma(a, b, **kw)))
    with pytest.raises(FormatError, match="odd length"):
        pack_e2m1(a[:, :3])


@pytest.mark.parametrize("model", ["mi100", "mi250", "mi300"])
def test_amd_f32_mfma_is_a_sequential_fma_chain(model):
    """f32 MFMA: acc = fma(a_k, b_k, acc) in K order, each one IEEE binary32 RNE rounding; the
    example cancels so that only a chain of single-rounding FMAs keeps the 2^-30."""
    a = np.array([[1.0, 2.0 ** -30, -1.0]])
    b = np.array([[1.0], [1.0], [1.0]])
    d = mma(a, b, np.zeros((1, 1), np.float32), model=model, a_format="fp32", b_format="fp32")
    # fma(1, 1, 0) = 1; fma(2^-30, 1, 1) = 1 (RNE); fma(-1, 1, 1) = 0
    assert _bits(d)[0, 0] == 0
    a = np.array([[1.0 + 2.0 ** -23, 1.0 - 2.0 ** -24]])
    b = np.array([[1.0 - 2.0 ** -24], [-1.0]])
    d = mma(a, b, np.zeros((1, 1), np.float32), model=model, a_format="fp32", b_format="fp32")
    dp = load_model(model).find_path("fp32", "fp32")
    want = reference.mma(a, b, np.zeros((1, 1)), dp, "fp32", "fp32")
    assert np.array_equal(_bits(d), _bits(want))
    # fl(a0*b0) = RN32(1 + 2^-24 - 2^-47) = 1; fma(a1, -1, 1) is then exactly 2^-24 (not the
    # exact 2^-24 - 2^-47 of the un-rounded first product)
    assert float(d[0, 0]) == 2.0 ** -24


def _kernel_and_oracle(model, fmt, a, b, c, path=None):
    """(kernel bits, oracle bits) of one small mma on a preset path (fp32 output)."""
    a, b, c = np.array(a, float), np.array(b, float), np.array(c, float)
    got = mma(a, b, c.astype(np.float32), model=model, path=path, a_format=fmt, b_format=fmt)
    dp = load_model(model).find_path(fmt, fmt, "fp32", path=path)
    return _bits(got), _bits(reference.mma(a, b, c, dp, fmt, fmt))


F32_NAN, F32_INF, F32_NEG_ZERO = 0x7FC00000, 0x7F800000, 0x80000000


def _is_nan32(bits):
    return (bits & 0x7F800000) == 0x7F800000 and (bits & 0x7FFFFF) != 0


@pytest.mark.parametrize("fmt", ["bf16", "tf32"])
def test_cdna3_product_beyond_fp32_is_inf_before_the_sum(fmt):
    """MMA-Sim amd_fused_dot_rd_add (CDNA3): a product >= 2^128 makes the block Inf, NaN with
    both signs, even where the exact sum would be finite (issue 14)."""
    big = [[2.0 ** 64, -(2.0 ** 63)] + [0.0] * 6]       # products 2^128 and -2^127
    col = [[2.0 ** 64]] * 2 + [[1.0]] * 6
    got, want = _kernel_and_oracle("mi300", fmt, big, col, [[0.0]])
    assert got[0, 0] == want[0, 0] == F32_INF            # the exact sum 2^127 is finite
    two = [[2.0 ** 64, -(2.0 ** 64)] + [0.0] * 6]         # +2^128 and -2^128: NaN, not 0
    got, want = _kernel_and_oracle("mi300", fmt, two, col, [[1.0]])
    assert _is_nan32(got[0, 0]) and _is_nan32(want[0, 0])
    # an Inf input comes first: the overflowing product of the other sign does not make NaN
    got, want = _kernel_and_oracle("mi300", fmt, big, col, [[-np.inf]])
    assert got[0, 0] == want[0, 0] == F32_INF | 0x80000000
    # the setting off: the exact sum
    dp = load_model("mi300").find_path(fmt, fmt).replace(product_overflow="exact")
    a, b = np.array(big), np.array(col)
    exact = mma(a, b, np.zeros((1, 1), np.float32), model=dp, a_format=fmt, b_format=fmt)
    assert float(exact[0, 0]) == 2.0 ** 127


def test_cdna3_zero_c_takes_part_in_e_prime_at_minus_126():
    """MMA-Sim amd_fused_dot_rd_add gives a zero C exponent -126 in E' = max(E, e_C): products
    2^-140, 2^-150, 2^-160 are then floored to 31 bits below -126 (2^-160 is lost) and the sum
    2^-140 + 2^-150 is an fp32 tie that RNE takes to 2^-140; with E' = E (a zero C left out)
    2^-160 survives and the sum rounds up to 2^-140 + 2^-149."""
    a = [[2.0 ** -70, 2.0 ** -75, 2.0 ** -80] + [0.0] * 5]
    b = [[2.0 ** -70], [2.0 ** -75], [2.0 ** -80]] + [[0.0]] * 5
    got, want = _kernel_and_oracle("mi300", "bf16", a, b, [[0.0]])
    assert got[0, 0] == want[0, 0] == _bits(2.0 ** -140)
    dp = load_model("mi300").find_path("bf16", "bf16").replace(zero_operand_exponent=None)
    left_out = mma(np.array(a), np.array(b), np.zeros((1, 1), np.float32), model=dp,
                   a_format="bf16", b_format="bf16")
    assert float(left_out[0, 0]) == 2.0 ** -140 + 2.0 ** -149


@pytest.mark.parametrize("model", ["mi100", "mi250"])
def test_cdna12_bf16_tree_nodes_are_ieee_on_inf(model):
    """MMA-Sim pairwise_dot: an Inf input is an Inf leaf, and a product that overflows fp32 is
    -Inf there: the node (+Inf) + (-Inf) is NaN, where a shortcut on the inputs gave +Inf."""
    k = load_model(model).find_path("bf16", "bf16").block_size
    a = [[np.inf, 2.0 ** 100] + [1.0] * (k - 2)]
    b = [[1.0], [-(2.0 ** 100)]] + [[1.0]] * (k - 2)
    got, want = _kernel_and_oracle(model, "bf16", a, b, [[0.0]])
    assert _is_nan32(got[0, 0]) and _is_nan32(want[0, 0])
    # two products whose fp32 node sum overflows meet a C of -Inf: NaN as well
    a = [[2.0 ** 127, 2.0 ** 127] + [0.0] * (k - 2)]
    b = [[1.0], [1.0]] + [[0.0]] * (k - 2)
    got, want = _kernel_and_oracle(model, "bf16", a, b, [[-np.inf]])
    assert _is_nan32(got[0, 0]) and _is_nan32(want[0, 0])


def test_cdna1_tree_leaf_that_underflows_keeps_its_sign():
    """fmaf(a, b, +0) of a nonzero product that underflows is -0 for a negative product (not
    +0): the MMA-Sim vector CDNA1/mfma.f32_4x4x2bf16 (wide) that gives -0 from C = -0."""
    a, b = [[-(2.0 ** -100), -(2.0 ** -100)]], [[2.0 ** -100], [2.0 ** -100]]
    got, want = _kernel_and_oracle("mi100", "bf16", a, b, [[-0.0]])
    assert got[0, 0] == want[0, 0] == F32_NEG_ZERO
    # an exact zero product is +0 (-0 + +0): with C = +0 the sum is +0
    got, want = _kernel_and_oracle("mi100", "bf16", [[-0.0, 1.0]], [[1.0], [0.0]], [[0.0]])
    assert got[0, 0] == want[0, 0] == 0


@pytest.mark.parametrize("model", ["mi100", "mi250", "mi300"])
def test_amd_f32_mfma_zeros_have_the_fmaf_sign(model):
    """f32 MFMA is libm fmaf in MMA-Sim: -0 * 1 + -0 is -0, an underflow keeps its sign, an
    exact cancellation is +0 (zero_sign = 'ieee')."""
    got, want = _kernel_and_oracle(model, "fp32", [[-0.0]], [[1.0]], [[-0.0]])
    assert got[0, 0] == want[0, 0] == F32_NEG_ZERO
    got, want = _kernel_and_oracle(model, "fp32", [[-(2.0 ** -100)]], [[2.0 ** -100]], [[0.0]])
    assert got[0, 0] == want[0, 0] == F32_NEG_ZERO
    got, want = _kernel_and_oracle(model, "fp32", [[1.5]], [[-1.0]], [[1.5]])
    assert got[0, 0] == want[0, 0] == 0


@pytest.mark.parametrize("fmt", ["bf16", "tf32"])
def test_mmasim_nvidia_zero_results_are_unsigned(fmt):
    """MMA-Sim (nv_fused_dot_add) rebuilds its result from a Python integer: a negative sum that
    truncates to zero is +0 (zero_sign 'unsigned'), where a plain RZ keeps the sign (-0)."""
    dp = load_model("rtx-blackwell").find_path(fmt, fmt, "fp32")
    assert dp.zero_sign == "unsigned"
    # one product -2^-150: on the grid 2^-151 (E floored at -126), below fp32's 2^-149
    a = [[-(2.0 ** -75)] + [0.0] * (dp.block_size - 1)]
    b = [[2.0 ** -75]] + [[1.0]] * (dp.block_size - 1)
    got, want = _kernel_and_oracle("rtx-blackwell", fmt, a, b, [[0.0]])
    assert got[0, 0] == want[0, 0] == 0
    signed = dp.replace(zero_sign="plus")
    d = mma(np.array(a), np.array(b), np.zeros((1, 1), np.float32), a_format=fmt, b_format=fmt,
            model=signed)
    assert _bits(d)[0, 0] == F32_NEG_ZERO
    assert _bits(reference.mma(np.array(a), np.array(b), np.zeros((1, 1)), signed, fmt,
                               fmt))[0, 0] == F32_NEG_ZERO


@pytest.mark.parametrize("model,path,fmt,k", [
    ("mi300", None, "fp16", 24), ("mi300", None, "e4m3fnuz", 48), ("mi300", None, "tf32", 12),
    ("mi250", None, "bf16", 10), ("mi100", None, "fp16", 16), ("mi100", "mfma-km", "bf16", 6)])
def test_explain_traces_the_amd_building_blocks(model, path, fmt, k):
    """explain on the staged AMD datapaths: every traced result is checked inside explain
    against tcsim.mma's bits (it raises otherwise); here, random rows with wide exponents, C of
    both signs, and the step notes (lanes, join, tree) present."""
    from tcsim import explain
    from tcsim.formats.conversion import round_to_format
    rng = np.random.default_rng(k)
    for trial in range(5):
        x = rng.standard_normal(k) * np.exp2(rng.integers(-12, 12, k))
        y = rng.standard_normal(k) * np.exp2(rng.integers(-12, 12, k))
        a = round_to_format(x, fmt, overflow="saturate")
        b = round_to_format(y, fmt, overflow="saturate")
        c = float(np.float32(rng.standard_normal() * 2.0 ** rng.integers(-30, 10)))
        ex = explain(a, b, c, model=model, path=path, a_format=fmt)
        assert ex.text()
    notes = " ".join(n for blk in ex.blocks for n in blk.notes)
    dp = ex.datapath
    if dp.c_placement == "asymmetric":
        assert "asymmetric join" in notes
    if dp.lanes == 2:
        assert "even lane" in notes and "odd lane" in notes
    if dp.product_sum == "pairwise":
        assert "tree level 1" in notes


def test_explain_traces_block_scales_and_asks_for_them():
    from tcsim import explain
    dp = Datapath(block_size=32, fraction_bits=25, block_scale="exponent")
    with pytest.raises(ConfigError, match="give a_scale and b_scale"):
        explain(np.ones(32), np.ones(32), 0.0, model=dp, a_format="e4m3")
    ex = explain(np.ones(32), np.ones(32), 0.0, model=dp, a_format="e4m3", a_scale=[2.0 ** -3],
                 b_scale=[2.0 ** 5], scale_format="ue8m0")
    assert ex.result == 32 * 2.0 ** 2 and ex.blocks[0].terms[0].exponent == 2


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_specials_suite_carries_the_zero_operand_probe(fmt):
    """gpu_validate's specials suite (tcsim.vectors.specials) holds an FP8 row that separates
    the two zero-operand conventions on the 13-bit FP8 paths: 0 * max beside C = 2^-132 keeps C
    when zeros take no part in E (the h100 preset) and gives +0 under MMA-Sim's -126."""
    from tcsim.vectors import specials
    vs = specials(fmt, fmt)
    i = vs.names.index("zero operand exponent (MMA-Sim -126) beside C = 2^-132")
    dp = load_model("h100").find_path(fmt, fmt, "fp32", path="wgmma").datapath()
    got = [float(mma(vs.a[i:i + 1], vs.b[i:i + 1].T, np.array([[vs.c[i]]], np.float32),
                     model=d, a_format=fmt, b_format=fmt)[0, 0])
           for d in (dp, dp.replace(zero_operand_exponent=-126))]
    assert got == [2.0 ** -132, 0.0]
