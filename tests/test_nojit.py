"""The kernel source itself, run as plain Python (NUMBA_DISABLE_JIT=1), bit for bit.

Compiled kernels hide their Python source from coverage and from pure-Python semantics. Here a
subprocess with NUMBA_DISABLE_JIT=1 calls tcsim.mma on one tiny problem per kernel route (the
fused float32 tile, the exact kernel, the staged kernel's tiled (float64 and int32 sums) and
output-by-output routes, pairwise trees, group and exponent block scales, lowered instructions,
stochastic rounding, special values, a batch, and one problem crossing the 16-row and
512-column output tiles), tcsim.gemm with each FP32 epilogue, and the format codec in every
rounding mode; its bits must equal the jitted results and the oracles' (tcsim.reference,
tcsim.reference_gemm). The problems are built here and passed to the subprocess as an .npz
file; one subprocess runs them all (a few seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import bits
from tcsim import Recipe, gemm, load_model, mma, reference, reference_gemm
from tcsim.datapath import Datapath
from tcsim.formats.catalog import ROUNDING_MODES, get_format
from tcsim.formats.conversion import encode, round_to_format

# (name, model: preset name or Datapath fields, path, a_format, b_format, acc, (m, k, n),
#  scales: None or (block, scale format), special values pinned)
CASES = [
    ("fused-f32", "h100", "wgmma", "e4m3", "e5m2", "fp32", (3, 70, 5), None, False),
    ("staged-plain-f64", "h100", "wmma", "bf16", "fp16", "fp32", (3, 37, 4), None, False),
    ("staged-plain-fp16-acc", "v100", "wmma", "fp16", "fp16", "fp16", (2, 9, 3), None, False),
    ("special-values", "h100", "wgmma", "e5m2", "e5m2", "fp32", (3, 40, 3), None, True),
    ("exact", "ideal", None, "fp16", "e4m3", "fp32", (2, 20, 3), None, True),
    ("fma-chain", "fp32-fma", None, "bf16", "bf16", "fp32", (2, 7, 3), None, False),
    ("staged-tiled-sum32", "mi300", "mfma", "fp16", "bf16", "fp32", (3, 21, 4), None, False),
    ("staged-tiled-f64", "mi300", "mfma", "tf32", "tf32", "fp32", (2, 9, 3), None, True),
    ("staged-lanes", "mi300", "mfma", "e4m3fnuz", "e5m2fnuz", "fp32", (2, 40, 3), None, False),
    ("staged-by-output", dict(block_size=8, fraction_bits=20, lanes=2, c_placement="after",
                              product_sum_precision=24), None, "fp16", "fp16", "fp32",
     (2, 20, 3), None, False),
    ("pairwise-tiled", "mi100", "mfma", "fp16", "fp16", "fp32", (2, 9, 3), None, True),
    ("pairwise-by-output", dict(block_size=4, product_sum="pairwise", c_placement="after",
                                product_sum_precision=24, product_sum_rounding="rne",
                                output_rounding="rz"), None, "fp16", "fp16", "fp32",
     (2, 9, 3), None, False),
    ("group-scaled-ue8m0", "b200", "mxf4", "e2m1", "e2m1", "fp32", (2, 64, 3),
     (32, "ue8m0"), False),
    ("group-scaled-ue4m3", "b200", "mxf4nvf4", "e2m1", "e2m1", "fp32", (2, 64, 3),
     (16, "ue4m3"), False),
    ("exponent-scaled", "b200", "mxf8f6f4", "e4m3", "e2m1", "fp32", (2, 64, 3),
     (32, "ue8m0"), False),
    ("lowered", "h100", "mma.sync", "e4m3", "e5m2", "fp16", (2, 40, 3), None, False),
    ("sr-output", dict(block_size=8, fraction_bits=40, output_rounding="sr", sr_bits=8,
                       sr_seed=5), None, "bf16", "bf16", "fp32", (2, 20, 3), None, False),
    ("sr-terms", dict(block_size=8, fraction_bits=12, term_rounding="sr", sr_seed=9), None,
     "fp16", "fp16", "fp32", (2, 20, 3), None, False),
    ("staged-normalized-floor-after", dict(
        block_size=8, fraction_bits=16, product_alignment="normalized", term_rounding="floor",
        c_placement="after", product_sum_precision=20, product_sum_rounding="rne",
        output_rounding="rne", zero_sign="ieee", overflow="saturate", subnormal_outputs="flush"),
     None, "fp16", "fp16", "fp32", (2, 19, 3), None, True),
    ("staged-rne-terms-zero-exponent", dict(
        block_size=16, fraction_bits=10, term_rounding="rne", zero_operand_exponent=-6,
        min_exp_limit=-20, output_precision=12, subnormal_inputs="flush"),
     None, "e4m3", "e4m3", "fp32", (2, 35, 3), None, False),
    ("exact-after-sr", dict(block_size=4, c_placement="after", product_sum_precision=24,
                            output_rounding="sr", sr_bits=4, zero_sign="ieee"),
     None, "e5m2", "e5m2", "fp32", (2, 10, 3), None, False),
    ("staged-asym-normalized-sr", dict(
        block_size=8, fraction_bits=20, c_placement="asymmetric", join_c_bits=10,
        join_sum_bits=24, join_c_window=8, product_alignment="normalized",
        output_rounding="sr", sr_seed=3, zero_sign="ieee"),
     None, "bf16", "bf16", "fp32", (2, 19, 3), None, False),
    ("staged-group-after", dict(
        block_size=32, block_scale="group", group_size=16, fraction_bits=25,
        c_placement="after", product_sum_precision=24, product_overflow="inf"),
     None, "e2m1", "e2m1", "fp32", (2, 64, 3), (32, "ue8m0"), False),
    ("pairwise-flush", "mi250", "mfma", "bf16", "bf16", "fp32", (2, 11, 3), None, False),
    ("tile-edges", "h100", "wgmma", "e4m3", "e4m3", "fp32", (17, 5, 513), None, False),
    ("batch", "h100", "wmma", "fp16", "fp16", "fp32", (2, 2, 9, 3), None, False),
]
# tcsim.gemm (quantisation, promotion chunks, the FP32 epilogue), DeepSeek-V3 recipe with each
# epilogue: (epilogue, x shape, w shape)
GEMM_CASES = [(e, (3, 256), (256, 5)) for e in ("deepgemm", "1d1d", "2d1d", "2d2d", "mul_add")]
# the format codec (tcsim.formats.encode): every rounding mode on formats of each kind, values
# across the range with ties, signed zeros and infinities
CODEC_FORMATS = ("e4m3", "e5m2", "e4m3fnuz", "e2m1", "e3m2", "fp16", "bf16", "tf32")
CODEC_MODES = ROUNDING_MODES
# the outputs the oracle checks on the tile-edge case (all outputs elsewhere)
EDGE_ROWS, EDGE_COLS = [0, 15, 16], [0, 511, 512]

# Run in the subprocess: the kernels as plain Python, on the same problems.
CHILD = textwrap.dedent("""
    import json, math, sys, traceback
    import numba, numpy as np
    assert numba.config.DISABLE_JIT, "NUMBA_DISABLE_JIT=1 did not take effect"
    import tcsim
    from tcsim.datapath import Datapath
    folder = sys.argv[1]
    specs, gemm_specs, codec = json.load(open(folder + "/cases.json"))
    data = np.load(folder + "/problems.npz")
    out, errors = {}, {}

    def attempt(name, run):     # out[name]: the result bits of run(); else errors[name]
        try:
            d = run()
            out[name] = d.view(np.dtype(f"u{d.dtype.itemsize}")) if d.dtype.kind == "f" else d
        except Exception as exc:
            at = traceback.extract_tb(exc.__traceback__)[-1]
            errors[name] = (f"{type(exc).__name__}: {exc} at {at.filename}:{at.lineno} "
                            f"({at.line})")

    for name, spec in specs.items():
        kw = {k: data[f"{name}.{k}"] for k in ("a_scale", "b_scale") if f"{name}.{k}" in data}
        if kw:
            kw["scale_format"] = spec["scale_format"]
        model = spec["model"] if isinstance(spec["model"], str) else Datapath(**spec["model"])
        attempt(name, lambda: tcsim.mma(
            data[name + ".a"], data[name + ".b"], data[name + ".c"], model=model,
            path=spec["path"], a_format=spec["a_format"], b_format=spec["b_format"],
            acc=spec["acc"], **kw))
    for name, spec in gemm_specs.items():
        recipe = tcsim.Recipe.named("deepseek_v3", epilogue=spec["epilogue"])
        attempt(name, lambda: tcsim.gemm(data[name + ".x"], data[name + ".w"], model="h100",
                                         recipe=recipe))
    for fmt in codec[0]:
        for i, mode in enumerate(codec[1]):
            attempt(f"codec-{fmt}-{mode}", lambda: tcsim.encode(
                data["codec.x"], fmt, mode, ("inf", "saturate")[i % 2], seed=7))
    # every kernel that ran was the Python source: no module of tcsim holds a compiled one
    compiled = [f"{name}.{k}" for name, mod in list(sys.modules.items())
                if name.split(".")[0] == "tcsim" for k, v in vars(mod).items()
                if isinstance(v, numba.core.dispatcher.Dispatcher)]
    assert not compiled, f"compiled kernels under NUMBA_DISABLE_JIT: {compiled}"
    np.savez(folder + "/out.npz", **out)
    json.dump(errors, open(folder + "/errors.json", "w"))
""")


def _values(rng, fmt: str, shape, special: bool) -> np.ndarray:
    """Values of ``fmt`` spread over a few binades, a fifth of them zeros (some -0); special:
    NaN and the infinities the format has, at a few places."""
    f = get_format(fmt)
    x = rng.standard_normal(shape) * 2.0 ** rng.integers(-4, 4, shape)
    x[rng.random(shape) < 0.2] = 0.0
    x = round_to_format(x, fmt, overflow="saturate")
    if f.has_subnormals and f.mantissa_bits:     # a few subnormals of either sign
        flat = x.reshape(-1)
        at = rng.choice(flat.size, size=min(2, flat.size), replace=False)
        flat[at] = f.min_subnormal * rng.integers(1, 1 << f.mantissa_bits, at.size) \
            * rng.choice([-1.0, 1.0], at.size)
    if f.has_negative_zero:
        x[(x == 0) & (rng.random(shape) < 0.5)] = -0.0
    if special:
        extra = [np.nan] * f.has_nan + [np.inf, -np.inf] * f.has_inf + [f.max_finite]
        flat = x.reshape(-1)
        for at in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            flat[at] = extra[rng.integers(len(extra))]
    return x


def _problem(index: int, case) -> dict:
    name, model, path, a_fmt, b_fmt, acc, shape, scales, special = case
    rng = np.random.default_rng(1000 + index)
    *batch, m, k, n = shape
    p = {"a": _values(rng, a_fmt, (*batch, m, k), special),
         "b": _values(rng, b_fmt, (*batch, k, n), special),
         "c": _values(rng, "bf16", (*batch, m, n), special).astype(
             np.float32 if acc == "fp32" else np.float16)}
    if scales is not None:
        block, sfmt = scales
        if sfmt == "ue8m0":
            def draw(s):
                return 2.0 ** rng.integers(-6, 6, s)
        else:
            def draw(s):
                return np.abs(round_to_format(rng.standard_normal(s) * 8, "e4m3"))
        p["a_scale"], p["b_scale"] = draw((m, k // block)), draw((k // block, n))
    return p


def _gemm_problem(epilogue: str, x_shape, w_shape) -> dict:
    rng = np.random.default_rng(sum(map(ord, epilogue)))
    x = (rng.standard_normal(x_shape) * 2.0 ** rng.integers(-3, 3, x_shape)).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    return {f"gemm-{epilogue}.x": x, f"gemm-{epilogue}.w": w}


def _codec_values() -> np.ndarray:
    """float64 values for the codec: wide and narrow magnitudes, exact ties of a 1- and a
    3-bit mantissa, signed zeros, the infinities (no NaN: some formats have none)."""
    rng = np.random.default_rng(11)
    wide = rng.standard_normal(24) * 2.0 ** rng.integers(-150, 140, 24)
    narrow = rng.standard_normal(24) * 2.0 ** rng.integers(-8, 8, 24)
    ties = np.array([1.25, 1.75, -2.5, 3.5, 1.0625, -1.1875, 2.0 ** -9 * 1.5, 0.75])
    return np.concatenate([wide, narrow, ties, [0.0, -0.0, np.inf, -np.inf, 448.0, 480.0]])


def _datapath(model, path, a_fmt, b_fmt, acc):
    if isinstance(model, dict):
        return Datapath(**model)
    return load_model(model).find_path(a_fmt, b_fmt, acc, path=path).datapath()


def _run_child(folder, mode: str) -> tuple[dict, dict]:
    problems, specs = {}, {}
    for index, case in enumerate(CASES):
        name, model, path, a_fmt, b_fmt, acc, _, scales, _ = case
        problems.update({f"{name}.{k}": v for k, v in _problem(index, case).items()})
        specs[name] = dict(model=model, path=path, a_format=a_fmt, b_format=b_fmt, acc=acc,
                           scale_format=scales and scales[1])
    gemm_specs = {}
    for epilogue, x, w in GEMM_CASES:
        problems.update(_gemm_problem(epilogue, x, w))
        gemm_specs[f"gemm-{epilogue}"] = dict(epilogue=epilogue)
    problems["codec.x"] = _codec_values()
    np.savez(folder / "problems.npz", **problems)
    (folder / "cases.json").write_text(json.dumps([specs, gemm_specs,
                                                   [CODEC_FORMATS, CODEC_MODES]]))
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", NUMBA_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(folder), mode], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(folder / "out.npz") as out:
        nojit_bits = dict(out)
    return nojit_bits, json.loads((folder / "errors.json").read_text())


@pytest.fixture(scope="module")
def nojit_results(tmp_path_factory):
    return _run_child(tmp_path_factory.mktemp("nojit"), "plain")


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[0] for c in CASES])
def test_pure_python_kernels_equal_jitted_and_oracle(nojit_results, index):
    name, model, path, a_fmt, b_fmt, acc, shape, scales, _ = case = CASES[index]
    nojit_bits, errors = nojit_results
    assert name not in errors, f"{name} failed without JIT: {errors[name]}"
    p = _problem(index, case)
    kw = {}
    if scales is not None:
        kw = dict(a_scale=p["a_scale"], b_scale=p["b_scale"], scale_format=scales[1])
    model_arg = Datapath(**model) if isinstance(model, dict) else model
    jitted = bits(mma(p["a"], p["b"], p["c"], model=model_arg, path=path, a_format=a_fmt,
                       b_format=b_fmt, acc=acc, **kw))
    np.testing.assert_array_equal(nojit_bits[name], jitted, err_msg=f"{name}: no-JIT vs jitted")
    dp = _datapath(model, path, a_fmt, b_fmt, acc)
    a, b, c = p["a"], p["b"], p["c"]
    if a.ndim == 3:      # the oracle takes one matrix at a time
        for t in range(a.shape[0]):
            want = bits(reference.mma(a[t], b[t], c[t], dp, a_fmt, b_fmt, acc))
            np.testing.assert_array_equal(jitted[t], want, err_msg=f"{name}[{t}] vs oracle")
        return
    rows, cols = list(range(a.shape[0])), list(range(b.shape[1]))
    if name == "tile-edges":
        rows, cols = EDGE_ROWS, EDGE_COLS
    if scales is not None:
        kw = dict(a_scale=kw["a_scale"][rows], b_scale=kw["b_scale"][:, cols],
                  scale_format=scales[1])
    want = bits(reference.mma(a[rows], b[:, cols], c[np.ix_(rows, cols)], dp, a_fmt, b_fmt,
                               acc, **kw))
    np.testing.assert_array_equal(jitted[np.ix_(rows, cols)], want,
                                  err_msg=f"{name}: jitted vs oracle")


@pytest.mark.parametrize("epilogue", [g[0] for g in GEMM_CASES])
def test_pure_python_gemm_equals_jitted_and_oracle(nojit_results, epilogue):
    """Quantisation, promotion and the FP32 epilogue (fma_f32 in pure Python) run without JIT
    give the jitted tcsim.gemm's bits and the exact GEMM oracle's (tcsim.reference_gemm)."""
    name = f"gemm-{epilogue}"
    nojit_bits, errors = nojit_results
    assert name not in errors, f"{name} failed without JIT: {errors[name]}"
    (_, x_shape, w_shape), = [g for g in GEMM_CASES if g[0] == epilogue]
    p = _gemm_problem(epilogue, x_shape, w_shape)
    recipe = Recipe.named("deepseek_v3", epilogue=epilogue)
    y, det = gemm(p[name + ".x"], p[name + ".w"], model="h100", recipe=recipe,
                  return_details=True)
    np.testing.assert_array_equal(nojit_bits[name], bits(y), err_msg=f"{name}: no-JIT vs jitted")
    want = reference_gemm.gemm(det.a.values, det.a.k_scales(), det.b.values, det.b.k_scales(),
                               det.recipe, det.datapath)
    np.testing.assert_array_equal(bits(y), bits(want), err_msg=f"{name}: jitted vs oracle")


@pytest.mark.parametrize("fmt", CODEC_FORMATS)
def test_pure_python_codec_equals_jitted(nojit_results, fmt):
    """tcsim.formats.encode without JIT gives the jitted codes in every rounding mode (the
    codec is checked against ml_dtypes and exact arithmetic in test_formats)."""
    nojit_bits, errors = nojit_results
    x = _codec_values()
    for i, mode in enumerate(CODEC_MODES):
        name = f"codec-{fmt}-{mode}"
        assert name not in errors, f"{name} failed without JIT: {errors[name]}"
        want = encode(x, fmt, mode, ("inf", "saturate")[i % 2], seed=7)
        np.testing.assert_array_equal(nojit_bits[name], want, err_msg=mode)
