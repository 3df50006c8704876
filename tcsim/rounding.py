"""The one table of rounding modes: names (as in TOML presets and the API) <-> integer codes.

The codes travel into the numba kernels (tcsim/_kernels) as plain int64 values; config, params,
formats and every kernel take them from here, so there is a single numbering. Numba-free.

A mode names a rounding of an exact value onto a grid:

* ``RNE``: nearest, ties to the even grid point ("rne").
* ``RZ``: toward zero, i.e. truncation of the sign-magnitude ("rz", "truncate").
* ``RU`` / ``RD``: toward +Inf / -Inf; RD is the two's-complement floor ("ru", "rd", "floor").
* ``RNA``: nearest, ties away from zero ("rna").
* ``RTO``: round to odd: truncate, then force the last bit to 1 when inexact ("rto").
* ``SR``: stochastic: the magnitude rounds up when a random r-bit integer is below the first r
  discarded bits ("sr", "stochastic").
"""

from __future__ import annotations

from enum import IntEnum


class Rounding(IntEnum):
    """Rounding-mode codes (the numbering of tcsim._kernels.codec's RM_* constants)."""

    RNE = 0
    RZ = 1
    RU = 2
    RD = 3
    RNA = 4
    RTO = 5
    SR = 6

    @classmethod
    def from_name(cls, name: str) -> "Rounding":
        """The mode of a rounding name ("rz", "truncate", "floor", "sr", ...); KeyError if
        unknown."""
        return NAMES[name]


# Every spelling used in configs and the API. "truncate" (a term put on the grid) and "rz" (a
# result rounded) are the same rounding toward zero; "floor" is rounding toward -Inf.
NAMES = {
    "rne": Rounding.RNE,
    "rz": Rounding.RZ,
    "truncate": Rounding.RZ,
    "ru": Rounding.RU,
    "rd": Rounding.RD,
    "floor": Rounding.RD,
    "rna": Rounding.RNA,
    "rto": Rounding.RTO,
    "sr": Rounding.SR,
    "stochastic": Rounding.SR,
}

# Plain ints for the kernels (numba freezes module-level ints as constants).
RNE = int(Rounding.RNE)
RZ = int(Rounding.RZ)
RU = int(Rounding.RU)
RD = int(Rounding.RD)
RNA = int(Rounding.RNA)
RTO = int(Rounding.RTO)
SR = int(Rounding.SR)
