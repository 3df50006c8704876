"""The one table of overflow policies: names (as in TOML presets and the API) <-> integer codes.

An overflow policy says what a rounded result beyond the largest finite value ``top`` of its
range becomes. The codes travel into the numba kernels (tcsim._kernels) as plain int64 values;
params, formats and every kernel (round_pack, the fused tile, the codec, the quantiser) take
them from here, so there is a single numbering. Numba-free.

* ``IEEE``: the rounding direction decides (IEEE 754): a rounding toward zero (RZ, RTO, RU of a
  negative value, RD of a positive one) gives +-top, every other mode +-Inf.
* ``INF``: always +-Inf.
* ``SATURATE``: always +-top.

Two spellings of these policies exist, and both name the members above:

* a datapath's ``overflow`` (:class:`tcsim.datapath.Datapath`, :data:`DATAPATH_NAMES`): "ieee",
  "inf", "saturate".
* a format conversion's ``overflow`` (:func:`tcsim.formats.encode` / ``round_to_format``,
  :data:`FORMAT_NAMES`): "inf" is the IEEE rule (named for what nearest rounding gives: RZ
  still gives the largest finite value) and "saturate" is ``SATURATE``. What a format does with
  an Inf result is its own: NaN where it has no Inf (e4m3fn, fnuz, e8m0), else the largest
  finite value (e2m1, e2m3, e3m2). The conversion's ``SATURATE`` also clamps +-Inf inputs (the
  "satfinite" conversions); a datapath never rounds an Inf (its special-value rules come first).
"""

from __future__ import annotations

from enum import IntEnum


class Overflow(IntEnum):
    """Overflow-policy codes (round_pack's ``overflow`` argument)."""

    IEEE = 0
    INF = 1
    SATURATE = 2


# Datapath.overflow spellings (tcsim.datapath, TOML presets).
DATAPATH_NAMES = {
    "ieee": Overflow.IEEE,
    "inf": Overflow.INF,
    "saturate": Overflow.SATURATE,
}

# tcsim.formats spellings (encode / round_to_format): "inf" is the IEEE rule, see above.
FORMAT_NAMES = {
    "inf": Overflow.IEEE,
    "saturate": Overflow.SATURATE,
}

# Plain ints for the kernels (numba freezes module-level ints as constants).
OVERFLOW_IEEE = int(Overflow.IEEE)
OVERFLOW_INF = int(Overflow.INF)
OVERFLOW_SATURATE = int(Overflow.SATURATE)
