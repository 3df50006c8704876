"""The numba kernels against the exact oracle (tcsim.reference), bit for bit.

Hypothesis draws datapaths (every configuration field, each mode from Datapath's own values),
formats and blocks that exercise NaN, Inf, signed zeros, subnormal inputs and products, the
whole exponent range, exact cancellation, carries and chains of many blocks with a nonzero C
(tests/strategies.py). Values are drawn as codes and decoded, so every value is exactly
representable. A difference names the kernel route that ran (tcsim.route.route).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Optional

import ml_dtypes
import numpy as np
import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import (
    assert_same_bits_whatever_the_thread_count,
    bits,
    describe_routes,
    recorded_routes,
)
from strategies import decode_codes, plain_problems
from tcsim import load_model, preset_names, reference
from tcsim.datapath import Datapath
from tcsim.formats.catalog import get_format
from tcsim.formats.conversion import round_to_format
from tcsim.mma import mma

SETTINGS = settings(max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _check(problem):
    dp, a_fmt, b_fmt, acc, a, b, c = problem
    with recorded_routes() as routes:
        got = mma(a, b, c, model=dp, a_format=a_fmt, b_format=b_fmt, acc=acc)
    want = reference.mma(a, b, c, dp, a_fmt, b_fmt, acc)
    assert got.dtype == want.dtype
    bad = np.flatnonzero(bits(got) != bits(want))
    if bad.size:
        i, j = np.unravel_index(bad[0], got.shape)
        raise AssertionError(
            f"{bad.size} of {got.size} outputs differ; first at {(i, j)}: kernel "
            f"{got[i, j]!r} ({bits(got)[i, j]:#x}) vs oracle {want[i, j]!r} "
            f"({bits(want)[i, j]:#x})\n{describe_routes(routes)}\ndatapath {dp!r}\n"
            f"a row {a[i].tolist()}\nb col {b[:, j].tolist()}\nc {c[i, j]!r}")


@SETTINGS
@given(plain_problems(exact=False, special=False))
def test_finite_fraction_kernels_equal_oracle(problem):
    _check(problem)


@SETTINGS
@given(plain_problems(exact=True, special=False))
def test_exact_kernel_equals_oracle(problem):
    _check(problem)


@SETTINGS
@given(plain_problems(special=True))
def test_special_values_equal_oracle(problem):
    _check(problem)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.sampled_from(["e4m3", "e5m2", "fp16"]))
def test_float32_product_loops_equal_oracle(seed, fmt):
    """The H100-like datapath on e4m3/e5m2/fp16 runs on float32 operands (route.fits_float32:
    the fused tile for FP8, the staged tile's int32 sums for fp16): bit-equal to the oracle on
    shapes spanning several tiles' rows."""
    rng = np.random.default_rng(seed)
    dp = Datapath(block_size=32, fraction_bits=13, output_precision=14)
    a = round_to_format(rng.standard_normal((9, 100)) * 4.0 ** rng.integers(-3, 3),
                                fmt, overflow="saturate")
    b = round_to_format(rng.standard_normal((100, 5)), fmt, overflow="saturate")
    c = rng.standard_normal((9, 5)).astype(np.float32)
    got = mma(a, b, c, model=dp, a_format=fmt, b_format=fmt)
    want = reference.mma(a, b, c, dp, fmt, fmt)
    np.testing.assert_array_equal(bits(got), bits(want))


def test_thread_count_does_not_change_results():
    """Tiles are computed whole by one thread: 1 thread and all threads give the same bits."""
    rng = np.random.default_rng(7)
    a = round_to_format(rng.standard_normal((70, 300)), "e4m3")
    b = round_to_format(rng.standard_normal((300, 300)), "e4m3")
    c = rng.standard_normal((70, 300)).astype(np.float32)
    assert_same_bits_whatever_the_thread_count(
        lambda: mma(a, b, c, model="h100", a_format="e4m3", b_format="e4m3"))


# ---- every preset path, discovered from models/ ---------------------------------------------
# One case per preset x path x (a_format, b_format, acc) x scale format, read from the shipped
# presets when the tests are collected: a new preset or path is tested without editing this
# file, and test_preset_cases_cover_every_model_file fails if one slips past. Each case draws a
# few problems whose shapes reach the kernels' output-tile edges (rows 8/16/32, columns 512/1024)
# or form a batch, and whose K is mostly not a multiple of the block; the oracle (exact
# Fractions, slow) checks every output of the small shapes and, on the tall and wide ones, the
# outputs at the tile edges, those holding drawn edge values, and one more drawn output.
EDGE_ROWS = (0, 7, 8, 15, 16, 31, 32)
EDGE_COLS = (0, 511, 512, 1023, 1024)
PRESET_SETTINGS = settings(max_examples=3, deadline=None,
                           suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.data_too_large])


@dataclass(frozen=True)
class PresetCase:
    model: str
    path: str
    a_format: str
    b_format: str
    acc: str
    scale_format: Optional[str]

    def __str__(self) -> str:
        scale = f"-{self.scale_format}" if self.scale_format else ""
        return f"{self.model}-{self.path}-{self.a_format}x{self.b_format}-{self.acc}{scale}"

    def datapath(self):
        return load_model(self.model).find_path(self.a_format, self.b_format, self.acc,
                                                path=self.path)


def preset_cases() -> list[PresetCase]:
    cases = []
    for name in preset_names():
        for p in load_model(name).paths:
            for a_fmt, b_fmt in itertools.product(p.inputs, repeat=2):
                for sfmt in p.scale_formats or (None,):
                    cases.append(PresetCase(name, p.name, a_fmt, b_fmt, p.output, sfmt))
    return cases


PRESET_CASES = preset_cases()
# the staged paths (group scales, lanes, the asymmetric join, pairwise trees) have the most
# stages to get wrong: they draw more problems each
STAGED_CASES = [case for case in PRESET_CASES if case.datapath().staged()]
PLAIN_CASES = [case for case in PRESET_CASES if not case.datapath().staged()]


def _edge_values(fmt: str, special: bool) -> list[float]:
    """Values at the edges of ``fmt``: signed zeros, the smallest and largest subnormal, the
    smallest normal, max finite, and (special) NaN and the infinities the format has."""
    f = get_format(fmt)
    mags = [f.min_subnormal, f.min_normal - f.min_subnormal, f.min_normal, f.max_finite, 1.0]
    vals = [0.0] + mags + [-m for m in mags]
    if f.has_negative_zero:
        vals.append(-0.0)
    if special and f.has_nan:
        vals.append(math.nan)
    if special and f.has_inf:
        vals += [math.inf, -math.inf]
    return [v for v in vals if v == 0 or not math.isfinite(v) or abs(v) >= f.min_subnormal]


def _random_values(rng, fmt: str, shape, style: str, e0: int) -> np.ndarray:
    """Values of ``fmt``: uniform over the finite codes ("codes"), or a narrow exponent window
    from 2^e0 down (carries, cancellation), a quarter of them zeros ("narrow")."""
    f = get_format(fmt)
    size = math.prod(shape)
    if style == "codes":
        if fmt == "tf32":    # fp32 patterns with the low 13 bits clear
            codes = rng.integers(0, 1 << 19, size, dtype=np.uint64) << np.uint64(13)
        else:
            codes = rng.integers(0, 1 << f.bits, size, dtype=np.uint64)
        vals = decode_codes(codes, fmt)
    else:
        mant = rng.integers(-(1 << f.precision) + 1, 1 << f.precision, size)
        mant[rng.random(size) < 0.25] = 0
        vals = np.ldexp(mant.astype(np.float64), e0 - f.mantissa_bits - rng.integers(0, 4, size))
        vals = round_to_format(vals, fmt, rounding="rz", overflow="saturate")
    vals = np.where(np.isfinite(vals), vals, 0.0)
    return vals.reshape(shape)


def _no_negative_zero(vals: np.ndarray, fmt: str) -> np.ndarray:
    if get_format(fmt).has_negative_zero:
        return vals
    return np.where(vals == 0, 0.0, vals)    # FNUZ formats: -0 does not exist


def _scales_for(rng, sfmt: str, shape, special: bool) -> np.ndarray:
    """Block scales: ue8m0 mostly near 2^0 (codes 100..154), some anywhere in 2^-127..2^127;
    ue4m3 any e4m3 code (the sign is ignored), zero included; NaN only in special problems."""
    size = math.prod(shape)
    if sfmt == "ue8m0":
        codes = np.where(rng.random(size) < 0.8, rng.integers(100, 155, size),
                         rng.integers(0, 255, size))
        if special:
            codes[rng.random(size) < 0.1] = 255
        vals = codes.astype(np.uint8).view(ml_dtypes.float8_e8m0fnu).astype(np.float64)
    else:
        vals = decode_codes(rng.integers(0, 256, size, dtype=np.uint64), "e4m3")
        if not special:
            vals = np.where(np.isnan(vals), 1.0, vals)
    return vals.reshape(shape)


@st.composite
def preset_problems(draw, case: PresetCase, p):
    """(a, b, c, scale keywords, rows, cols): a problem for ``case`` with a leading batch axis
    (a (B, M, K), b (B, K, N), c (B, M, N), scales likewise), and the outputs to check."""
    shape = draw(st.sampled_from(["small", "small", "tall", "wide", "batch"]))
    nb = 1
    if shape in ("small", "batch"):
        m, n = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        nb = 1 if shape == "small" else draw(st.integers(2, 3))
    elif shape == "tall":     # rows cross the 8- and 16-row output tiles
        m, n = draw(st.integers(9, 40)), draw(st.integers(1, 2))
    else:                     # columns cross the 512-column output tiles
        m, n = draw(st.integers(1, 2)), draw(st.integers(500, 1100))
    block = p.block_size
    if p.block_scale != "none":
        k = block * draw(st.integers(1, 2))
        s = draw(st.sampled_from([s for s in p.scale_blocks if k % s == 0]))
    else:
        unit = block or 8
        k = draw(st.integers(1, min(2 * unit + max(unit // 2, 3), 72)))
    special = draw(st.integers(0, 3)) == 0
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    f_a, f_b = get_format(case.a_format), get_format(case.b_format)
    styles = st.sampled_from(["codes", "narrow", "narrow"])
    a = _random_values(rng, case.a_format, (nb, m, k), draw(styles),
                       draw(st.integers(f_a.emin - f_a.mantissa_bits, f_a.emax)))
    b = _random_values(rng, case.b_format, (nb, k, n), draw(styles),
                       draw(st.integers(f_b.emin - f_b.mantissa_bits, f_b.emax)))
    if k >= 2 and draw(st.integers(0, 3)) == 0:    # the products of two halves cancel exactly
        h = k // 2
        a[..., h:2 * h], b[:, h:2 * h] = -a[..., :h], b[:, :h]
    for x in (a, b):    # all zeros of one sign: exact-zero results and the sign rule of each path
        if draw(st.integers(0, 7)) == 0:
            x[...] = draw(st.sampled_from([0.0, -0.0]))
    c_style = draw(st.sampled_from(["zero", "codes", "narrow"]))
    f_c = get_format(case.acc)
    if c_style == "zero":
        c = np.zeros((nb, m, n)) * draw(st.sampled_from([1.0, -1.0]))
    else:
        c = _random_values(rng, case.acc, (nb, m, n), c_style,
                           draw(st.integers(f_c.emin - f_c.mantissa_bits, f_c.emax)))
    rows = {r for r in EDGE_ROWS if r < m} | {m - 1, draw(st.integers(0, m - 1))}
    cols = {j for j in EDGE_COLS if j < n} | {n - 1, draw(st.integers(0, n - 1))}
    # edge values of each format pinned at drawn places; their outputs are checked too
    for x, fmt, axis in ((a, case.a_format, 1), (b, case.b_format, 2), (c, case.acc, None)):
        pins = draw(st.lists(st.tuples(st.integers(0, x.size - 1),
                                       st.sampled_from(_edge_values(fmt, special))),
                             max_size=3))
        for at, v in pins:
            x.flat[at] = v
            _, i, j = np.unravel_index(at, x.shape)
            if axis != 2:
                rows.add(int(i))
            if axis != 1:
                cols.add(int(j))
    a = _no_negative_zero(a, case.a_format)
    b = _no_negative_zero(b, case.b_format)
    c = c.astype(np.float32 if case.acc == "fp32" else np.float16)
    kw = {}
    if case.scale_format is not None:
        kw = dict(a_scale=_scales_for(rng, case.scale_format, (nb, m, k // s), special),
                  b_scale=_scales_for(rng, case.scale_format, (nb, k // s, n), special),
                  scale_format=case.scale_format)
    return a, b, c, kw, sorted(rows), sorted(cols)


def _oracle_bits(case: PresetCase, dp, a, b, c, kw, rows, cols, batch: int) -> np.ndarray:
    """The oracle's result bits at outputs rows x cols of one 2-D product (number ``batch`` of
    a batch): tcsim.reference.mma on those rows and columns, or output by output where
    stochastic rounding draws from the output's index (batch, row, column)."""
    if "sr" not in (dp.output_rounding, dp.term_rounding):
        sub = {}
        if kw:
            sub = dict(a_scale=kw["a_scale"][rows], b_scale=kw["b_scale"][:, cols],
                       scale_format=kw["scale_format"])
        return bits(reference.mma(a[rows], b[:, cols], c[np.ix_(rows, cols)], dp,
                                   case.a_format, case.b_format, case.acc, **sub))
    out = np.zeros((len(rows), len(cols)), np.uint32 if case.acc == "fp32" else np.uint16)
    for r, i in enumerate(rows):
        for q, j in enumerate(cols):
            scales = {}
            if kw:
                s = a.shape[1] // kw["a_scale"].shape[1]
                scales = dict(a_scales=np.repeat(kw["a_scale"][i], s),
                              b_scales=np.repeat(kw["b_scale"][:, j], s),
                              scale_format=kw["scale_format"])
            want = reference.dot(a[i], b[:, j], float(c[i, j]), dp, case.a_format,
                                 case.b_format, case.acc, index=(batch, i, j), **scales)
            out[r, q] = reference.result_bits(want, case.acc)
    return out


@pytest.mark.parametrize("case", PLAIN_CASES, ids=str)
@PRESET_SETTINGS
@given(data=st.data())
def test_preset_path_kernel_equals_oracle(case, data):
    """tcsim.mma on a shipped preset path == the exact oracle, bit for bit (signed zeros and
    the canonical NaN included), at the tile edges and the drawn edge values."""
    _check_preset_case(case, data)


@pytest.mark.parametrize("case", STAGED_CASES, ids=str)
@settings(PRESET_SETTINGS, max_examples=10)
@given(data=st.data())
def test_staged_preset_path_kernel_equals_oracle(case, data):
    """The same on the staged preset paths, with more problems each."""
    _check_preset_case(case, data)


def _check_preset_case(case: PresetCase, data) -> None:
    p = case.datapath()
    a, b, c, kw, rows, cols = data.draw(preset_problems(case, p))
    nb = a.shape[0]
    with recorded_routes() as routes:
        if nb == 1:     # the 2-D call
            two_d = {k: v[0] if k != "scale_format" else v for k, v in kw.items()}
            got = mma(a[0], b[0], c[0], model=case.model, path=case.path,
                      a_format=case.a_format, b_format=case.b_format, acc=case.acc,
                      **two_d)[None]
        else:
            got = mma(a, b, c, model=case.model, path=case.path, a_format=case.a_format,
                      b_format=case.b_format, acc=case.acc, **kw)
    got = bits(got)
    for t in range(nb):
        one = {k: v[t] if k != "scale_format" else v for k, v in kw.items()}
        try:
            want = _oracle_bits(case, p.datapath(), a[t], b[t], c[t], one, rows, cols, t)
        except NotImplementedError as exc:      # reported, never dropped silently
            pytest.skip(f"the oracle cannot take {case}: {exc}")
        bad = np.argwhere(got[t][np.ix_(rows, cols)] != want)
        if bad.size:
            r, q = bad[0]
            i, j = rows[r], cols[q]
            raise AssertionError(
                f"{case}: {len(bad)} of {want.size} checked outputs of product {t} of {nb} "
                f"differ; first {(i, j)} of {got.shape[1:]}, K = {a.shape[2]}: kernel "
                f"{got[t, i, j]:#x} vs oracle {want[r, q]:#x}\n{describe_routes(routes)}\n"
                f"a row {a[t, i].tolist()}\n"
                f"b col {b[t, :, j].tolist()}\nc {c[t, i, j]!r}\nscales {one}")


def test_preset_cases_cover_every_model_file():
    """The parametrisation reaches every preset file in models/ and every path of each, and
    each case's (path, formats) names exactly the path it was built from."""
    files = {f.stem for f in (REPO / "models").glob("*.toml")}
    assert files, f"no presets found in {REPO / 'models'}"
    assert set(preset_names()) == files
    assert {case.model for case in PRESET_CASES} == files
    # both parametrisations hold cases (an empty one would be collected as a silent skip)
    assert STAGED_CASES and PLAIN_CASES, (len(STAGED_CASES), len(PLAIN_CASES))
    assert sorted(map(str, STAGED_CASES + PLAIN_CASES)) == sorted(map(str, PRESET_CASES))
    assert len(set(map(str, PRESET_CASES))) == len(PRESET_CASES), "duplicate case ids"
    for name in files:
        gpu = load_model(name)
        for p in gpu.paths:
            mine = [cs for cs in PRESET_CASES if cs.model == name and cs.datapath() is p]
            want = len(p.inputs) ** 2 * max(len(p.scale_formats), 1)
            assert len(mine) == want, f"{name} path {p.name} ({'/'.join(p.inputs)} -> " \
                                      f"{p.output}): {len(mine)} cases, expected {want}"
