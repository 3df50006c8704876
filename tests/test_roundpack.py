"""The kernels' one rounding routine (tcsim._kernels.roundpack.round_pack) against exact
Fraction arithmetic, bit for bit: residuals that break ties and cross powers of two, the
subnormal grid, overflow policies, flushing, and every mode of tcsim.rounding (RZ, RNE, RU, RD,
RNA, RTO, SR)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcsim.overflow import OVERFLOW_IEEE, OVERFLOW_SATURATE, Overflow
from tcsim.rounding import Rounding

MODES = tuple(Rounding)


def _exact(v: float, lo: float, p: int, emin: int, emax: int, rnd: int, overflow: int,
           flush: bool, u: int, rbits: int) -> float:
    """v + lo rounded to p significant bits, from the definition (tcsim.reference's)."""
    x = Fraction(v) + Fraction(lo)
    mag = abs(x)
    e = mag.numerator.bit_length() - mag.denominator.bit_length()
    if Fraction(2) ** e > mag:
        e -= 1                                       # floor(log2 mag)
    grid = Fraction(2) ** (max(e, emin) - (p - 1))
    q = mag / grid
    down = math.floor(q)
    inexact = q != down
    neg = v < 0
    toward = rnd == Rounding.RZ or (rnd == Rounding.RU and neg) or (rnd == Rounding.RD and not neg)
    if toward:
        n = down
    elif rnd in (Rounding.RU, Rounding.RD):                 # pointing away from zero
        n = down + inexact
    elif rnd == Rounding.RNE:
        rest = q - down
        n = down + (1 if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and down % 2) else 0)
    elif rnd == Rounding.RNA:
        n = down + (q - down >= Fraction(1, 2))
    elif rnd == Rounding.RTO:
        n = down + (inexact and down % 2 == 0)
    else:
        n = down + (1 if u < math.floor((q - down) * 2 ** rbits) else 0)
    r = n * grid
    top = (2 - Fraction(2) ** (1 - p)) * Fraction(2) ** emax
    if r > top:
        to_top = overflow == Overflow.SATURATE or (overflow == Overflow.IEEE
                                                   and (toward or rnd == Rounding.RTO))
        r = top if to_top else math.inf
    if flush and r != 0 and r < Fraction(2) ** emin:
        r = 0
    return math.copysign(float(r), v)


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
    """round_pack_any: round_pack itself for RZ / RNE / SR, the other modes on its grid."""
    from tcsim._kernels.roundpack import round_pack_any

    got = round_pack_any(*case)
    want = _exact(*case)
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
