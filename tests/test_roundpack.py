"""The kernels' one rounding routine (tcsim._kernels.roundpack.round_pack) against the exact
oracle's (tcsim.reference.round_pack, built on reference.round_to_grid: Fractions and
integers), bit for bit: residuals that break ties and cross powers of two, the subnormal grid,
overflow policies, flushing, and every mode of tcsim.rounding (RZ, RNE, RU, RD, RNA, RTO,
SR)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcsim import reference
from tcsim.overflow import DATAPATH_NAMES, OVERFLOW_IEEE, OVERFLOW_SATURATE, Overflow
from tcsim.rounding import Rounding

MODES = tuple(Rounding)


# tcsim.reference.round_pack takes the datapath's overflow names
OVERFLOW_NAMES = {int(code): name for name, code in DATAPATH_NAMES.items()}


def _oracle(v: float, lo: float, p: int, emin: int, emax: int, rnd: int, overflow: int,
           flush: bool, u: int, rbits: int) -> float:
    """v + lo rounded to p significant bits by the exact oracle: tcsim.reference.round_pack,
    whose every rounding is reference.round_to_grid on Fractions and integers."""
    got = reference.round_pack(Fraction(v) + Fraction(lo), p, emin, emax, Rounding(rnd),
                               overflow=OVERFLOW_NAMES[overflow], flush=flush, sr=(u, rbits))
    return float(got)


@st.composite
def cases(draw):
    p = draw(st.integers(2, 49))
    emin = draw(st.integers(-140, -2))
    emax = draw(st.integers(1, 130))
    mant = draw(st.integers(1, (1 << 53) - 1))
    if draw(st.booleans()):                 # near a power of two or a grid point
        mant = draw(st.sampled_from([1, 3, (1 << 53) - 1])) << draw(st.integers(0, 40))
        mant = min(mant, (1 << 53) - 1)
    e = draw(st.integers(emin - p - 8, emax + 2))
    v = math.ldexp(mant, e - mant.bit_length() + 1) * draw(st.sampled_from([1.0, -1.0]))
    spacing = math.ulp(v)
    lo = draw(st.sampled_from([0.0, 0.0, 0.25, -0.25, 0.5, -0.5, 0.125])) * spacing
    rnd = draw(st.sampled_from(MODES))
    rbits = draw(st.integers(1, 32))
    u = draw(st.integers(0, (1 << rbits) - 1))
    overflow = int(draw(st.sampled_from(list(Overflow))))
    return (v, lo, p, emin, emax, int(rnd), overflow, draw(st.booleans()), u, rbits)


@settings(max_examples=3000, deadline=None)
@given(cases())
def test_round_pack_is_the_exact_rounding(case):
    """round_pack_any (round_pack itself for RZ / RNE / SR, the other modes on its grid) ==
the oracle's round_pack."""
    from tcsim._kernels.roundpack import round_pack_any

    got = round_pack_any(*case)
    want = _oracle(*case)
    assert np.float64(got).view(np.uint64) == np.float64(want).view(np.uint64), (case, got, want)


def test_a_residual_just_below_a_power_of_two_rounds_on_the_lower_binade():
    """v = 2^0 with a negative residual: the exact value lies in [1/2, 1), whose grid is half
    as fine, so truncation to 3 bits gives 1 - 2^-3, not 1 - 2^-2."""
    from tcsim._kernels.roundpack import NO_RANDOM, NO_RANDOM_BITS, round_pack

    got = round_pack(1.0, -2.0 ** -60, 3, -10, 10, int(Rounding.RZ), OVERFLOW_IEEE, False,
                     NO_RANDOM, NO_RANDOM_BITS)
    assert got == 1.0 - 2.0 ** -3


@pytest.mark.parametrize("rnd", list(Rounding))
def test_a_zero_keeps_its_sign(rnd):
    """v = +-0 with no residual (a quantised zero): the zero itself, sign kept."""
    from tcsim._kernels.roundpack import NO_RANDOM, NO_RANDOM_BITS, round_pack_any

    for v in (0.0, -0.0):
        got = round_pack_any(v, 0.0, 4, -6, 8, int(rnd), OVERFLOW_SATURATE, False, NO_RANDOM,
                             NO_RANDOM_BITS)
        assert np.float64(got).view(np.uint64) == np.float64(v).view(np.uint64)


def test_directed_and_odd_modes_on_a_residual_at_a_grid_point():
    """x = 1 (a grid point of 3 bits) with a residual just above / below: RU, RD, RTO, RNA see
    the exact value, not v alone."""
    from tcsim._kernels.roundpack import NO_RANDOM, NO_RANDOM_BITS, round_pack_any

    def rp(v, lo, rnd):
        return round_pack_any(v, lo, 3, -10, 10, int(rnd), OVERFLOW_IEEE, False, NO_RANDOM,
                              NO_RANDOM_BITS)

    tiny = 2.0 ** -60
    assert rp(1.0, tiny, Rounding.RU) == 1.25
    assert rp(1.0, -tiny, Rounding.RU) == 1.0
    assert rp(-1.0, -tiny, Rounding.RD) == -1.25
    assert rp(-1.0, tiny, Rounding.RD) == -1.0
    assert rp(1.0, tiny, Rounding.RTO) == 1.25            # 1 = 4 * 2^-2 even: odd neighbour 5
    assert rp(1.0, -tiny, Rounding.RTO) == 1.0 - 2.0 ** -3   # lower binade: 7 * 2^-3 is odd
    assert rp(1.125, -tiny, Rounding.RNA) == 1.0          # a tie pulled below
    assert rp(1.125, 0.0, Rounding.RNA) == 1.25           # a tie: away from zero
