"""Public API: mma on the directed probes, presets, configuration validation and bad input."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import tcsim
from tcsim import (
    ConfigError,
    Datapath,
    FormatError,
    ShapeError,
    TcsimError,
    UnknownModelError,
    load_model,
    mma,
)
from tcsim.datapath import make_datapath

P7 = 2.0 ** -7


def dot(a_vals, b_vals, c=0.0, model="h100", fmt="e4m3", acc="fp32", path=None):
    a = np.array([a_vals], dtype=np.float64)
    b = np.array(b_vals, dtype=np.float64).reshape(-1, 1)
    cdt = np.float32 if acc == "fp32" else np.float16
    return float(mma(a, b, np.array([[c]], dtype=cdt), model=model, a_format=fmt, b_format=fmt,
                     acc=acc, path=path)[0, 0])


# docs/hardware.md#open-questions: what the H100 model predicts for each directed probe
def test_probe_13_fraction_bits():
    assert dot([1, P7], [1, P7]) == 1.0
    assert dot([1, P7], [1, P7], model="ideal") == 1 + 2 ** -14


def test_probe_unnormalised_products():
    assert dot([1.5, 2 ** -6, 2 ** -6], [1.5, P7, P7]) == 2.250244140625


def test_probe_block_size_32_vs_16():
    a = [P7] * 16 + [1.0]
    assert dot(a, a) == 1.0                                          # H100: one 32-block
    assert dot(a, a, model="ada") == 1.0009765625                    # Ada: 16-blocks
    a32 = [P7] * 16 + [0.0] * 16 + [1.0]
    assert dot(a32, a32) == 1.0009765625


def test_probe_c_truncated_without_products():
    assert dot([0.0], [0.0], c=1 + 2 ** -20) == 1.0


def test_probe_sign_magnitude_truncation():
    assert dot([1, P7], [1, -P7]) == 1.0


def test_probe_output_rz_and_carry_headroom():
    assert dot([1, 1, 3 * 2 ** -13], [1, 1, 1], fmt="e5m2") == 2.000244140625
    assert dot([1.875] * 32, [1.875] * 32) == 112.5


def test_b200_paths():
    a = [1.0, P7]
    assert dot(a, a, model="b200") == 1 + 2 ** -14                  # tcgen05: 25 bits
    assert dot(a, a, model="b200", path="mma.sync") == 1 + 2 ** -14
    # legacy path: products summed (RZ to 24 bits), then C added with one RNE
    assert dot([1.0], [1.0], c=2 ** -24 + 2 ** -47, model="b200", path="mma.sync") == 1 + 2 ** -23
    with pytest.raises(UnknownModelError, match="no path 'nope'"):
        dot(a, a, model="b200", path="nope")


def test_fp32_fma_is_a_cpu_loop():
    rng = np.random.default_rng(1)
    a = tcsim.round_to_format(rng.standard_normal(200), "bf16")
    b = tcsim.round_to_format(rng.standard_normal(200), "bf16")
    acc = np.float32(0)
    for x, y in zip(a, b):
        # x*y (16 significant bits) is a float32 value; the float64 sum of two float32 values
        # rounded to float32 is the correctly rounded sum (53 >= 2*24 + 2): an exact IEEE FMA
        acc = np.float32(np.float64(acc) + x * y)
    got = dot(a, b, model="fp32-fma", fmt="bf16")
    assert got == float(acc)


def test_ml_dtypes_and_mixed_formats():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 64)).astype(ml_dtypes.float8_e4m3fn)
    b = rng.standard_normal((64, 3)).astype(ml_dtypes.float8_e5m2)
    d = mma(a, b)
    assert d.dtype == np.float32 and d.shape == (5, 3)
    d16 = mma(a, b, np.zeros((5, 3), np.float16), acc="fp16")
    assert d16.dtype == np.float16
    batch = mma(np.stack([a, a]), np.stack([b, b]))
    assert batch.shape == (2, 5, 3)
    np.testing.assert_array_equal(batch[0].view(np.uint32), d.view(np.uint32))


def test_nan_inf_and_canonical_nan():
    d = mma(np.array([[np.inf, 1.0]]), np.array([[0.0], [1.0]]), a_format="e5m2",
            b_format="e5m2")
    assert d.view(np.uint32)[0, 0] == 0x7FFFFFFF
    d = mma(np.array([[np.inf]]), np.array([[-2.0]]), a_format="e5m2", b_format="e5m2")
    assert d[0, 0] == -np.inf


@pytest.mark.parametrize("name", tcsim.preset_names())
def test_every_preset_loads_with_provenance(name):
    model = load_model(name)
    assert model.paths
    for p in model.paths:
        if p.status != "unexplained":
            for field in ("block_size", "fraction_bits", "output_rounding"):
                assert p.provenance.get(field), (name, p.name, field)


def test_bad_input_errors():
    a = np.array([[0.3, 1.0]])
    b = np.ones((2, 2))
    with pytest.raises(FormatError, match=r"a\[0, 0\] = 0.3"):
        mma(a, b, a_format="e4m3", b_format="e4m3")
    with pytest.raises(FormatError, match="a_format is required"):
        mma(np.ones((1, 2)), b, b_format="e4m3")
    with pytest.raises(FormatError, match="unknown format 'e9m9'"):
        mma(np.ones((1, 2)), b, a_format="e9m9", b_format="e4m3")
    with pytest.raises(FormatError, match="not a matrix-unit input format"):
        mma(np.ones((1, 2)), b, a_format="e8m0", b_format="e4m3")
    with pytest.raises(FormatError, match="e4m3"):     # NaN is fine, but Inf is not e4m3
        mma(np.array([[np.inf, 1.0]]), b, a_format="e4m3", b_format="e4m3")
    with pytest.raises(ShapeError, match="do not multiply"):
        mma(np.ones((1, 3)), b, a_format="e4m3", b_format="e4m3")
    with pytest.raises(ShapeError, match="2-D"):
        mma(np.ones(3), b, a_format="e4m3", b_format="e4m3")
    with pytest.raises(FormatError, match="c must be float32"):
        mma(np.ones((1, 2)), b, np.zeros((1, 2)), a_format="e4m3", b_format="e4m3")
    with pytest.raises(ShapeError, match="c has shape"):
        mma(np.ones((1, 2)), b, np.zeros((2, 2), np.float32), a_format="e4m3", b_format="e4m3")
    with pytest.raises(FormatError, match="dtype float8_e5m2 but a_format is 'e4m3'"):
        mma(np.ones((1, 2)).astype(ml_dtypes.float8_e5m2), b, a_format="e4m3", b_format="e4m3")
    with pytest.raises(FormatError, match="float array"):
        mma(np.ones((1, 2), dtype=np.int32), b, a_format="e4m3", b_format="e4m3")
    with pytest.raises(UnknownModelError, match="unknown model 'h900'"):
        mma(np.ones((1, 2)), b, model="h900", a_format="e4m3", b_format="e4m3")
    with pytest.raises(UnknownModelError, match="no datapath for bf16 x bf16 -> fp16"):
        mma(np.ones((1, 2)), b, np.zeros((1, 2), np.float16), model="h100", a_format="bf16",
            b_format="bf16", acc="fp16")
    with pytest.raises(FormatError, match="acc must be"):
        mma(np.ones((1, 2)), b, a_format="e4m3", b_format="e4m3", acc="fp64")
    assert issubclass(FormatError, TcsimError) and issubclass(FormatError, ValueError)


def test_config_validation_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match="product_sum_precision"):
        make_datapath(c_placement="after")
    with pytest.raises(ConfigError, match="block_size"):
        make_datapath(block_size=0, fraction_bits=3)
    with pytest.raises(ConfigError, match="fraction_bits"):
        make_datapath(block_size=4, fraction_bits=-1)
    with pytest.raises(ConfigError, match="block_size: a finite fraction_bits"):
        make_datapath(block_size=None, fraction_bits=13)
    with pytest.raises(ConfigError, match="bogus"):
        make_datapath(bogus=1)
    with pytest.raises(Exception):
        Datapath(block_size=4).block_size = 5          # frozen
    bad = tmp_path / "proposal.toml"
    bad.write_text('extends = "h100"\nname = "p"\n[[paths]]\nname = "wgmma"\ninputs = ["e4m3"]\n'
                   'output = "fp32"\nblock_size = 64\nfraction_bits = 13\noutput_precision = 30\n')
    with pytest.raises(ConfigError, match=r"proposal.toml: paths.0 \(name = 'wgmma'.*output_precision"):
        load_model(str(bad))
    with pytest.raises(UnknownModelError, match="does not exist"):
        load_model(str(tmp_path / "missing.toml"))
    good = tmp_path / "wide.toml"
    good.write_text('extends = "h100"\nname = "h100-20bit"\n[[paths]]\nname = "wgmma"\n'
                    'inputs = ["e4m3", "e5m2"]\noutput = "fp32"\nfraction_bits = 20\n'
                    'output_precision = 21\n')
    m = load_model(str(good))
    assert m.name == "h100-20bit" and m.find_path("e4m3", "e4m3").fraction_bits == 20
    assert dot([1, P7], [1, P7], model=m) == 1 + 2 ** -14


# every name tcsim.config offered before its classes moved to modules of their own
CONFIG_NAMES = {
    "datapath": ("Datapath", "make_datapath", "TermRounding", "OutputRounding", "AccRounding"),
    "gpu_model": ("GpuModel", "INPUT_FORMATS", "OUTPUT_FORMATS"),
    "recipe": ("Scaling", "Recipe", "Granularity", "Epilogue", "EPILOGUE_NAMES", "GemmOutput",
               "GEMM_OUTPUTS", "RECIPE_NAMES"),
    "frozen_config": ("config_error_message",),
}


def test_config_still_offers_its_former_names():
    """``from tcsim.config import X`` gives the object its defining module holds; ``Path`` (the
    former name of InstructionPath) is that class, for tcsim.config and the package alike."""
    import importlib

    import tcsim.config
    for module, names in CONFIG_NAMES.items():
        home = importlib.import_module(f"tcsim.{module}")
        for name in names:
            assert getattr(tcsim.config, name) is getattr(home, name), name
    from tcsim.gpu_model import InstructionPath
    assert tcsim.config.Path is InstructionPath and tcsim.Path is InstructionPath
    assert isinstance(load_model("h100").paths[0], tcsim.config.Path)
    assert set(tcsim.config.__all__) == {n for names in CONFIG_NAMES.values() for n in names} | {
        "Path", "InstructionPath", "FrozenConfig"}


def test_zero_operand_exponent_convention():
    """docs/hardware.md#zero-operands: with MMA-Sim's convention a zero operand has exponent
    -126, so a product 0 * 2^15 takes part in E = -111 and swamps a C of 2^-130 under H100's 13 bits; the
    Khattak-Mikaitis convention (default) drops it and keeps C."""
    from tcsim import reference
    km = load_model("h100").find_path("e5m2", "e5m2", "fp32").datapath()
    sim = km.replace(zero_operand_exponent=-126)
    a, b = np.array([[0.0, 0.0]]), np.array([[2.0 ** 15], [1.0]])
    c = np.array([[2.0 ** -130]], np.float32)
    d_km = mma(a, b, c, model=km, a_format="e5m2", b_format="e5m2")
    d_sim = mma(a, b, c, model=sim, a_format="e5m2", b_format="e5m2")
    assert d_km[0, 0] == np.float32(2.0 ** -130) and d_sim[0, 0] == 0.0
    for dp, d in ((km, d_km), (sim, d_sim)):
        assert reference.mma(a, b, c, dp, "e5m2", "e5m2").view(np.uint32)[0, 0] == \
            d.view(np.uint32)[0, 0]
    with pytest.raises(Exception, match="zero_operand_exponent"):
        km.replace(product_alignment="normalized", zero_operand_exponent=-126)
