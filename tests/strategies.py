"""Hypothesis strategies shared by the tests (tests/ is on sys.path under pytest:
``from strategies import plain_problems``).

* :func:`literal_values` / :func:`modes`: the values of a config field, read from its own
  ``Literal`` annotation (tcsim.datapath.Datapath, tcsim.recipe.Recipe / Scaling), so that a new
  mode is drawn without editing a test. A strategy that leaves a mode out names it in an
  exclusion mapping with the reason (a kernel that does not serve it, a validator that refuses
  it); an exclusion that names no value of the field is an error, so none outlives its mode.
* :func:`values`, :func:`decode_codes`: exactly representable values of a number format.
* :func:`plain_datapaths`, :func:`plain_problems`: block-FMA datapaths (every configuration
  field) and problems for them (tests/test_kernel_vs_oracle.py, tests/test_cuda_staged.py).
* :func:`staged_datapaths`, :func:`staged_problems`: the staged building blocks (group terms
  with block scales, lanes, the asymmetric join, pairwise trees, stochastic terms)
  (tests/test_blackwell_cdna_units.py, tests/test_cuda_staged.py).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping

import ml_dtypes
import numpy as np
from hypothesis import strategies as st

from tcsim.datapath import Datapath
from tcsim.formats.catalog import code_dtype, get_format
from tcsim.formats.conversion import decode, round_to_format
from tcsim.route import FLOAT64_SUM_BITS

# the input formats of plain_problems
INPUTS = ("e4m3", "e5m2", "fp16", "bf16", "tf32", "e4m3fnuz", "e5m2fnuz", "e2m3", "e3m2",
          "e2m1")


# ---- a config field's own values -------------------------------------------------------------
def literal_values(model: type, field: str) -> tuple:
    """The values the pydantic field ``model.field`` admits, from its ``Literal`` annotation
    (typing.get_args; an Optional[Literal[...]] gives the Literal's values, without None)."""
    annotation = model.model_fields[field].annotation
    if typing.get_origin(annotation) is typing.Literal:
        literals = [annotation]
    else:                       # Optional[Literal[...]], a Union of Literals
        literals = [a for a in typing.get_args(annotation)
                    if typing.get_origin(a) is typing.Literal]
    if not literals:
        raise TypeError(f"{model.__name__}.{field}: not a Literal field ({annotation!r})")
    return tuple(dict.fromkeys(v for lit in literals for v in typing.get_args(lit)))


def mode_values(model: type, field: str, exclude: Mapping[str, str] | None = None) -> tuple:
    """:func:`literal_values` of the field less ``exclude`` (value -> why it is left out).
    Raises ValueError for an exclusion that is no value of the field, or one without a
    reason."""
    allowed = literal_values(model, field)
    exclude = dict(exclude or {})
    stale = [v for v in exclude if v not in allowed]
    if stale:
        raise ValueError(f"{model.__name__}.{field}: excluded {stale} are not among its "
                         f"values {allowed}")
    unexplained = [v for v, why in exclude.items() if not str(why).strip()]
    if unexplained:
        raise ValueError(f"{model.__name__}.{field}: exclusions {unexplained} give no reason")
    kept = tuple(v for v in allowed if v not in exclude)
    if not kept:
        raise ValueError(f"{model.__name__}.{field}: every value excluded")
    return kept


def modes(model: type, field: str,
          exclude: Mapping[str, str] | None = None) -> st.SearchStrategy:
    """A strategy over :func:`mode_values` of ``model.field``."""
    return st.sampled_from(mode_values(model, field, exclude))


def datapath_modes(field: str, exclude: Mapping[str, str] | None = None) -> st.SearchStrategy:
    """:func:`modes` of a :class:`tcsim.datapath.Datapath` field."""
    return modes(Datapath, field, exclude)


# A pairwise tree rounds every node with RNE and its output with RZ or RNE.
PAIRWISE_OUTPUT_EXCLUDED = {
    "sr": "a pairwise tree has no stochastic output rounding (Datapath validator)"}


# ---- values of a format ----------------------------------------------------------------------
def decode_codes(codes, fmt: str) -> np.ndarray:
    """The float64 values of integer codes of ``fmt``."""
    return decode(np.asarray(codes, dtype=np.uint64).astype(code_dtype(fmt)),
                          fmt)


def _code_for(fmt: str) -> st.SearchStrategy[int]:
    """A code of the format, uniform over all its codes (tf32: fp32 codes, low 13 bits 0)."""
    f = get_format(fmt)
    if fmt == "tf32":   # 32-bit fp32 patterns with the low 13 bits clear
        return st.integers(0, (1 << 19) - 1).map(lambda c: c << 13)
    return st.integers(0, (1 << f.bits) - 1)


@st.composite
def values(draw, fmt: str, count: int, allow_special: bool):
    """``count`` values of ``fmt``: wide spread, narrow spread (carries), zeros, cancellation."""
    f = get_format(fmt)
    style = draw(st.sampled_from(["wide", "narrow", "narrow", "cancel"]))
    if style == "wide":
        codes = draw(st.lists(_code_for(fmt), min_size=count, max_size=count))
        vals = decode_codes(codes, fmt)
    else:
        e0 = draw(st.integers(f.emin - f.mantissa_bits, f.emax))
        mant = draw(st.lists(st.integers(-(1 << f.precision) + 1, (1 << f.precision) - 1),
                             min_size=count, max_size=count))
        shifts = draw(st.lists(st.integers(0, 3), min_size=count, max_size=count))
        vals = np.array([math.ldexp(m, e0 - f.mantissa_bits - s) for m, s in zip(mant, shifts)])
        vals = round_to_format(vals, fmt, rounding="rz", overflow="saturate")
        if style == "cancel" and count >= 2:
            half = count // 2
            vals[half:2 * half] = -vals[:half]
    if not allow_special:
        vals = np.where(np.isfinite(vals), vals, 0.0)
    if not f.has_negative_zero:            # FNUZ formats: -0 does not exist
        vals = np.where(vals == 0, 0.0, vals)
    return vals


# ---- plain block-FMA datapaths ---------------------------------------------------------------
@st.composite
def plain_datapaths(draw, acc: str, exact: bool | None = None):
    """A block-FMA datapath (C inside or after the product sum), every mode field drawn from
    Datapath's own values; ``exact``: exact alignment (fraction_bits None), finite fraction
    bits, or either (None)."""
    fields = {}
    n = draw(st.sampled_from([1, 2, 3, 4, 8, 16, 32]))
    fields["block_size"] = n
    if exact is None:
        exact = draw(st.booleans())
    if exact:
        fields["fraction_bits"] = None
        if draw(st.booleans()):
            fields["block_size"] = None
    else:
        limit = FLOAT64_SUM_BITS - 2 - math.ceil(math.log2(n + 1))
        fields["fraction_bits"] = draw(st.integers(0, min(limit, 40)))
        fields["term_rounding"] = draw(datapath_modes("term_rounding"))
    fields["product_alignment"] = draw(datapath_modes("product_alignment"))
    if fields["product_alignment"] == "unnormalized" and draw(st.integers(0, 3)) == 0:
        fields["zero_operand_exponent"] = draw(st.sampled_from([-126, -14, -6, 0, 20]))
    if draw(st.integers(0, 3)) == 0:
        fields["c_placement"] = "after"
        fields["product_sum_precision"] = draw(st.integers(2, 48))
        fields["product_sum_rounding"] = draw(datapath_modes("product_sum_rounding"))
    cap = get_format(acc).precision
    fields["output_precision"] = draw(st.one_of(st.none(), st.integers(2, cap)))
    fields["output_rounding"] = draw(datapath_modes("output_rounding"))
    if "sr" in (fields["output_rounding"], fields.get("term_rounding")):
        fields["sr_bits"] = draw(st.integers(1, 32))
        fields["sr_seed"] = draw(st.integers(0, 2 ** 63 - 1))
    fields["min_exp_limit"] = draw(st.one_of(st.none(), st.integers(-140, 10)))
    fields["subnormal_inputs"] = draw(datapath_modes("subnormal_inputs"))
    fields["subnormal_outputs"] = draw(datapath_modes("subnormal_outputs"))
    fields["zero_sign"] = draw(datapath_modes("zero_sign"))
    fields["overflow"] = draw(datapath_modes("overflow"))
    return Datapath(**fields)


@st.composite
def plain_problems(draw, exact: bool | None = None, special: bool | None = None):
    """(dp, a_fmt, b_fmt, acc, a, b, c): a plain datapath and an M x K by K x N problem (M, N
    up to 3, K up to 70) of two input formats, C of the accumulator format; NaN/Inf one time
    in five unless ``special`` says."""
    acc = draw(st.sampled_from(["fp32", "fp32", "fp16"]))
    dp = draw(plain_datapaths(acc, exact))
    a_fmt = draw(st.sampled_from(INPUTS))
    b_fmt = draw(st.sampled_from([a_fmt, a_fmt] + list(INPUTS)))
    m, n = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = draw(st.integers(1, 70))
    if special is None:
        special = draw(st.integers(0, 4)) == 0
    a = draw(values(a_fmt, m * k, special)).reshape(m, k)
    b = draw(values(b_fmt, k * n, special)).reshape(k, n)
    acc_fmt = get_format(acc)
    c_style = draw(st.sampled_from(["zero", "codes", "narrow"]))
    if c_style == "zero":
        c = np.zeros(m * n) * draw(st.sampled_from([1.0, -1.0]))
    elif c_style == "codes":
        c = decode_codes(draw(st.lists(st.integers(0, (1 << acc_fmt.bits) - 1),
                                       min_size=m * n, max_size=m * n)), acc)
    else:
        c = draw(values("fp16" if acc == "fp16" else "bf16", m * n, False))
    if not special:
        c = np.where(np.isfinite(c), c, 0.0)
    c = c.reshape(m, n).astype(np.float16 if acc == "fp16" else np.float32)
    return dp, a_fmt, b_fmt, acc, a, b, c


# ---- the staged building blocks --------------------------------------------------------------
@st.composite
def block_scales(draw, fmt: str, count: int):
    """ue8m0: codes around 127 (and sometimes NaN 0xFF); ue4m3: e4m3 codes incl. zero."""
    if fmt == "ue8m0":
        codes = draw(st.lists(st.one_of(st.integers(100, 154), st.integers(0, 254),
                                         st.just(255)), min_size=count, max_size=count))
        vals = np.array(codes, np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(np.float64)
        if draw(st.integers(0, 5)) != 0:
            vals = np.where(np.isnan(vals), 1.0, vals)
        return vals
    codes = draw(st.lists(st.integers(0, 255), min_size=count, max_size=count))
    vals = decode_codes(codes, "e4m3")
    if draw(st.integers(0, 5)) != 0:
        vals = np.where(np.isnan(vals), 1.0, vals)
    return vals


@st.composite
def fp32_c_values(draw, count: int):
    """``count`` fp32 values of C: zeros, small multiples of 1/4, or any fp32 code (NaN made
    zero four times in five)."""
    style = draw(st.sampled_from(["zero", "codes", "small"]))
    if style == "zero":
        return np.zeros(count)
    if style == "small":
        return np.array(draw(st.lists(st.integers(-8, 8), min_size=count, max_size=count)),
                        dtype=np.float64) / 4
    codes = draw(st.lists(st.integers(0, (1 << 32) - 1), min_size=count, max_size=count))
    v = decode_codes(codes, "fp32")
    return np.where(np.isnan(v) & (draw(st.integers(0, 4)) != 0), 0.0, v)


@st.composite
def staged_datapaths(draw):
    """A datapath with a staged building block: the asymmetric join, two lanes, group terms,
    a pairwise tree, lanes with C after the sum, or stochastic terms; the mode fields drawn
    from Datapath's own values."""
    kind = draw(st.sampled_from(["asym", "lanes", "group", "pairwise", "after-lanes",
                                 "sr-terms"]))
    f = {}
    if kind == "pairwise":
        n = draw(st.sampled_from([1, 2, 4, 8]))
        f.update(block_size=n, product_sum="pairwise", c_placement="after",
                 product_sum_precision=draw(st.integers(2, 24)), product_sum_rounding="rne",
                 output_rounding=draw(datapath_modes("output_rounding",
                                                     PAIRWISE_OUTPUT_EXCLUDED)),
                 flush_nodes=draw(st.booleans()))
        return Datapath(**f)
    if kind == "group":
        g = draw(st.sampled_from([1, 2, 4, 8, 16]))
        n = g * draw(st.integers(1, 4))
        f.update(block_size=n, block_scale="group", group_size=g,
                 fraction_bits=draw(st.integers(0, 35)))
    else:
        n = draw(st.sampled_from([2, 4, 8, 16]))
        f.update(block_size=n, fraction_bits=draw(st.integers(0, 40)),
                 term_rounding=draw(datapath_modes("term_rounding")))
        if kind in ("lanes", "after-lanes"):
            f["lanes"] = 2
        if kind == "sr-terms":      # the plain block FMA with stochastic terms, C inside
            f["term_rounding"] = "sr"
    if kind == "after-lanes" or (kind == "group" and draw(st.booleans())):
        f.update(c_placement="after", product_sum_precision=draw(st.integers(2, 48)),
                 product_sum_rounding=draw(datapath_modes("product_sum_rounding")))
    elif kind == "sr-terms":
        pass
    elif kind in ("asym", "lanes"):
        jc = draw(st.integers(0, 30))
        f.update(c_placement="asymmetric", join_c_bits=jc,
                 join_sum_bits=draw(st.integers(jc, 40)),
                 join_c_window=draw(st.one_of(st.none(), st.integers(0, 40))))
    if draw(st.integers(0, 3)) == 0:
        f["zero_operand_exponent"] = draw(st.sampled_from([-126, -6, 0]))
    f["product_overflow"] = draw(datapath_modes("product_overflow"))
    f["output_precision"] = draw(st.one_of(st.none(), st.integers(2, 24)))
    f["output_rounding"] = draw(datapath_modes("output_rounding"))
    if "sr" in (f["output_rounding"], f.get("term_rounding")):
        f["sr_bits"] = draw(st.integers(1, 32))
        f["sr_seed"] = draw(st.integers(0, 2 ** 63 - 1))
    f["min_exp_limit"] = draw(st.one_of(st.none(), st.integers(-140, 5)))
    f["zero_sign"] = draw(datapath_modes("zero_sign"))
    f["overflow"] = draw(datapath_modes("overflow"))
    f["subnormal_outputs"] = draw(datapath_modes("subnormal_outputs"))
    return Datapath(**f)


@st.composite
def staged_problems(draw, max_m: int = 2):
    """(dp, fmt, a, b, c, kw) of a staged datapath: operands of one format (FP4 / FP6 with
    block scales for group terms, else a 16-bit or FP8 format), K whole blocks (or a short last
    block without scales), NaN/Inf one time in five; kw holds a_scale / b_scale / scale_format
    for tcsim.mma."""
    dp = draw(staged_datapaths())
    if dp.block_scale == "group":
        fmt = draw(st.sampled_from(["e2m1", "e2m3"]))
        sfmt = draw(st.sampled_from(["ue8m0", "ue4m3"]))
    else:
        fmt = draw(st.sampled_from(["fp16", "bf16", "e4m3", "e5m2", "e4m3fnuz", "tf32"]))
        sfmt = None
    m, n = draw(st.integers(1, max_m)), draw(st.integers(1, 3))
    k = dp.block_size * draw(st.integers(1, 3))
    if sfmt is None and draw(st.booleans()):
        k = draw(st.integers(1, k))             # a short last block
    special = draw(st.integers(0, 4)) == 0
    a = draw(values(fmt, m * k, special)).reshape(m, k)
    b = draw(values(fmt, k * n, special)).reshape(k, n)
    c = draw(fp32_c_values(m * n)).reshape(m, n)
    kw = {}
    if sfmt is not None:
        blk = dp.block_size
        sa = draw(block_scales(sfmt, m * (k // blk))).reshape(m, k // blk)
        sb = draw(block_scales(sfmt, n * (k // blk))).reshape(k // blk, n)
        kw = dict(a_scale=sa, b_scale=sb, scale_format=sfmt)
    return dp, fmt, a, b, c, kw
