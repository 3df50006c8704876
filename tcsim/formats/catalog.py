"""Floating-point formats described as data: the catalogue.

A :class:`FloatFormat` is a frozen record of a few primary fields (exponent bits, mantissa bits,
bias, how Inf/NaN are encoded, subnormals); everything else (emin, emax, max finite, ...) is
derived. Named instances cover the tensor-core input formats, the accumulator formats and the
OCP MX element and scale formats.

Provenance: IEEE 754-2019 (fp16, fp32); OCP 8-bit Floating Point Specification (OFP8) rev 1.0
(e4m3 = "E4M3" with no Inf and NaN S.1111.111, e5m2 IEEE-like); the "fnuz" variants as in
ml_dtypes / Graphcore (bias 8 / 16, the code 0x80 is the only NaN, no negative zero, no Inf);
bfloat16; NVIDIA TF32 (fp32 with 10 mantissa bits, stored in 32-bit containers); OCP Microscaling
(MX) Formats Specification v1.0 (e8m0 scale, e2m3, e3m2, e2m1: no Inf, no NaN).

Also here: name lookup (:func:`get_format`), the width of a format's code container
(:func:`code_bits`, :func:`code_dtype`), its largest significand, and the names of the rounding
modes and overflow policies a conversion takes (the conversions are tcsim.formats.conversion).
This module needs neither numba nor ml_dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import FormatError
from ..overflow import FORMAT_NAMES

__all__ = ["ALIASES", "FORMATS", "OVERFLOW_POLICIES", "ROUNDING_MODES", "FloatFormat", "NanStyle",
           "bf16", "code_bits", "code_dtype", "e2m1", "e2m3", "e3m2", "e4m3fn", "e4m3fnuz",
           "e5m2", "e5m2fnuz", "e8m0", "fp16", "fp32", "get_format", "max_significand", "tf32"]

NanStyle = Literal["ieee", "fn", "fnuz", "none"]


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format.

    name: canonical short name.
    exponent_bits, mantissa_bits: field widths (mantissa = stored fraction bits).
    bias: exponent bias; a normal value is (-1)^s * 2^(E - bias) * 1.m.
    has_inf: the all-ones exponent with zero mantissa encodes +-Inf (IEEE style).
    nan_style: "ieee" (all-ones exponent, nonzero mantissa), "fn" (only S.1...1.1...1 is NaN, the
        rest of the top binade is finite), "fnuz" (only the code 1000...0 is NaN; no -0),
        "none" (no NaN encoding at all).
    has_subnormals: exponent field 0 encodes subnormals (else it is a normal binade / unused).
    signed: False for unsigned formats (e8m0).
    """

    name: str
    exponent_bits: int
    mantissa_bits: int
    bias: int
    has_inf: bool
    nan_style: NanStyle
    has_subnormals: bool = True
    signed: bool = True

    # ---- derived quantities -------------------------------------------------------------
    @property
    def bits(self) -> int:
        """Storage width in bits of one code."""
        return int(self.signed) + self.exponent_bits + self.mantissa_bits

    @property
    def precision(self) -> int:
        """Significant bits of a normal number (hidden bit included)."""
        return self.mantissa_bits + 1

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal binade (also the exponent of subnormals)."""
        return 1 - self.bias if self.has_subnormals else -self.bias

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite binade."""
        top = (1 << self.exponent_bits) - 1
        if self.nan_style == "ieee" or self.has_inf:
            top -= 1  # the all-ones exponent is reserved for Inf/NaN
        elif self.nan_style == "fn" and self.mantissa_bits == 0:
            top -= 1  # no mantissa: the top binade's only code is the NaN (e8m0: 0xFF)
        return top - self.bias

    @property
    def max_finite(self) -> float:
        """Largest finite value."""
        m = self.mantissa_bits
        frac_max = (1 << m) - 1
        if self.nan_style == "fn" and not self.has_inf:
            frac_max -= 1  # S.1111.111 is NaN, so the top binade ends one step lower
        if self.exponent_bits == 8 and m == 0 and not self.signed:  # e8m0: 0xFF is NaN
            return 2.0 ** (254 - self.bias)
        return (1.0 + frac_max / (1 << m)) * 2.0 ** self.emax if m else 2.0 ** self.emax

    @property
    def min_normal(self) -> float:
        return 2.0 ** self.emin

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value (the subnormal step, or min normal without subnormals)."""
        if not self.has_subnormals or self.mantissa_bits == 0:
            return 2.0 ** self.emin
        return 2.0 ** (self.emin - self.mantissa_bits)

    @property
    def has_nan(self) -> bool:
        return self.nan_style != "none"

    @property
    def has_negative_zero(self) -> bool:
        return self.signed and self.nan_style != "fnuz"


# ---- named instances ------------------------------------------------------------------------
e4m3fn = FloatFormat("e4m3", 4, 3, 7, has_inf=False, nan_style="fn")
e5m2 = FloatFormat("e5m2", 5, 2, 15, has_inf=True, nan_style="ieee")
e4m3fnuz = FloatFormat("e4m3fnuz", 4, 3, 8, has_inf=False, nan_style="fnuz")
e5m2fnuz = FloatFormat("e5m2fnuz", 5, 2, 16, has_inf=False, nan_style="fnuz")
fp16 = FloatFormat("fp16", 5, 10, 15, has_inf=True, nan_style="ieee")
bf16 = FloatFormat("bf16", 8, 7, 127, has_inf=True, nan_style="ieee")
tf32 = FloatFormat("tf32", 8, 10, 127, has_inf=True, nan_style="ieee")
fp32 = FloatFormat("fp32", 8, 23, 127, has_inf=True, nan_style="ieee")
# e8m0: unsigned power of two 2^(E-127), E in 0..254; 0xFF is NaN; no zero, no subnormals.
e8m0 = FloatFormat("e8m0", 8, 0, 127, has_inf=False, nan_style="fn", has_subnormals=False,
                   signed=False)
e2m3 = FloatFormat("e2m3", 2, 3, 1, has_inf=False, nan_style="none")
e3m2 = FloatFormat("e3m2", 3, 2, 3, has_inf=False, nan_style="none")
e2m1 = FloatFormat("e2m1", 2, 1, 1, has_inf=False, nan_style="none")

FORMATS: dict[str, FloatFormat] = {
    f.name: f
    for f in (e4m3fn, e5m2, e4m3fnuz, e5m2fnuz, fp16, bf16, tf32, fp32, e8m0, e2m3, e3m2, e2m1)
}
ALIASES = {
    "e4m3fn": "e4m3", "float8_e4m3fn": "e4m3", "float8_e5m2": "e5m2",
    "float8_e4m3fnuz": "e4m3fnuz", "float8_e5m2fnuz": "e5m2fnuz",
    "float16": "fp16", "half": "fp16", "bfloat16": "bf16", "float32": "fp32",
    "float8_e8m0fnu": "e8m0", "float6_e2m3fn": "e2m3", "float6_e3m2fn": "e3m2",
    "float4_e2m1fn": "e2m1", "fp8_e4m3": "e4m3", "fp8_e5m2": "e5m2",
}


def get_format(name: str | FloatFormat) -> FloatFormat:
    """Look a format up by name (case-insensitive; ml_dtypes names accepted)."""
    if isinstance(name, FloatFormat):
        return name
    key = str(name).lower()
    key = ALIASES.get(key, key)
    try:
        return FORMATS[key]
    except KeyError:
        raise FormatError(
            f"unknown format {name!r}; known formats: {', '.join(sorted(FORMATS))}"
        ) from None


# ---- names a conversion takes ------------------------------------------------------------------
ROUNDING_MODES = ("rne", "rz", "ru", "rd", "rna", "rto", "stochastic")   # tcsim.rounding
OVERFLOW_POLICIES = tuple(FORMAT_NAMES)        # "inf", "saturate" (tcsim.overflow)


# ---- codes ---------------------------------------------------------------------------------------
def code_bits(fmt: str | FloatFormat) -> int:
    """Width of the unsigned integer container of a code: 8, 16 or 32.

    Codes are right-aligned in the container (6- and 4-bit codes in uint8, as ml_dtypes stores
    them), except tf32, whose 19-bit code is left-aligned in 32 bits: a tf32 code is the fp32 bit
    pattern of the value, with the low 13 bits zero (how the hardware stores TF32 operands).
    """
    f = get_format(fmt)
    return 8 if f.bits <= 8 else 16 if f.bits <= 16 else 32


def code_dtype(fmt: str | FloatFormat) -> np.dtype:
    """numpy dtype of ``fmt``'s codes: uint8 (<= 8-bit formats), uint16 (fp16, bf16) or uint32."""
    return np.dtype({8: np.uint8, 16: np.uint16, 32: np.uint32}[code_bits(fmt)])


def max_significand(fmt: str | FloatFormat) -> int:
    """Integer significand q of the largest finite value: max_finite = q * 2^(emax - m)."""
    f = get_format(fmt)
    m = f.mantissa_bits
    if f.nan_style == "fn" and not f.has_inf and m > 0:
        return (2 << m) - 2  # S.1..1.1..1 is NaN: the top binade stops one step short
    return (2 << m) - 1
