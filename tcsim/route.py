"""Which kernel serves a datapath: the one place that decides it.

:func:`route` names the kernel family (and its variant) that computes a
:class:`~tcsim.datapath.Datapath` for given input formats, accumulator, depth and inputs, or raises
one ConfigError naming what no kernel models exactly. tcsim.mma.run_datapath (and through it the
GEMM, the lowered chains and every replay) runs what it names; tcsim.params.kernel_params reads
its variant. A second backend answers the same question from the same Route. Numba-free.
"""

from __future__ import annotations

import enum
import math
from typing import NamedTuple

from .datapath import Datapath
from .errors import ConfigError
from .formats.catalog import get_format


class Kernel(enum.Enum):
    """The kernel families."""

    LOWERED = "lowered"         # a chain of other instructions (tcsim.lowering), each routed
    EXACT = "exact"             # exact alignment: tcsim._kernels.blockfma.exact_kernel
    FUSED = "fused"             # the float32 tile: tcsim._kernels.fused
    STAGED_TILE = "staged tile"     # tcsim._kernels.staged, output tiles
    PAIRWISE = "pairwise tree"      # tcsim._kernels.staged, output by output


class Route(NamedTuple):
    """The kernel that serves a datapath, and the variant settings the kernels read."""

    kernel: Kernel
    float32_operands: bool  # operands prepared in float32 (fits_float32), else float64
    tiled: bool             # staged kernel: output tiles (staged_tiled), else output by output
    int32_sums: bool        # staged tile: int32 sums of float32 products (staged_int32_sums)


# The staged kernel sums terms in float64: each term is < 4 * 2^f grid units, so n + 1 of them
# fit exactly in the 53-bit significand while f + 2 + log2(n + 1) <= 53.
FLOAT64_SUM_BITS = 53

# Inputs whose products are exact, normal float32 numbers: |a*b| in [2^-48, 2^32] (FP8, FNUZ FP8,
# FP6, FP4 and fp16: at most 11 x 11 significant bits, exponents within +-24 of 1).
FLOAT32_PRODUCT_FORMATS = ("e4m3", "e5m2", "fp16", "e4m3fnuz", "e5m2fnuz", "e2m3", "e3m2",
                           "e2m1")
FLOAT32_SUM_BITS = 24
INT32_SUM_BITS = 31

# The fused tile holds exponents as int8: input formats whose exponents (subnormals at the
# format's emin) all lie in [-15, 15], and a zero operand's exponent in [-64, 63].
INT8_EXPONENT_FORMATS = ("e4m3", "e5m2", "fp16", "e4m3fnuz", "e5m2fnuz", "e2m3", "e3m2", "e2m1")
# A zero operand's exponent z in the int8 lanes: the product of two zeros, 2 z, and of a zero
# and an input, z + 15, must be int8 (-128 <= 2 z, 2 z <= 127).
FUSED_MIN_ZERO_EXP, FUSED_MAX_ZERO_EXP = -64, 63
FUSED_MAX_FRACTION_BITS = 21


def route(dp: Datapath, a_format: str, b_format: str, acc: str, k: int,
          has_special: bool = False) -> Route:
    """The kernel that computes ``dp`` on ``a_format x b_format -> acc`` operands of depth K
    (has_special: the operands or C hold NaN/Inf, or a block scale is NaN). Raises ConfigError
    when no kernel computes it exactly. A lowered datapath routes to LOWERED; each of its inner
    instructions is routed again."""
    if dp.lowered_k is not None:
        return Route(Kernel.LOWERED, False, False, False)
    n = block_of(dp, k)
    check_sum_bits(dp, n)
    if dp.fraction_bits is None and not dp.staged():
        return Route(Kernel.EXACT, False, False, False)
    tiled, int32_sums = staged_variant(dp, acc, a_format, b_format, n)
    float32_operands = fits_float32(dp, a_format, b_format, k)
    if float32_operands and fused_serves(dp, a_format, b_format, acc, has_special):
        return Route(Kernel.FUSED, True, tiled, int32_sums)
    check_staged_bits(dp, a_format, b_format)
    return Route(Kernel.STAGED_TILE if tiled else Kernel.PAIRWISE, float32_operands, tiled,
                 int32_sums)


def require(kernel_route: Route, served, backend: str, dp: Datapath,
            error: type = ConfigError) -> Route:
    """``kernel_route`` when ``backend`` serves its kernel family (``served``: Kernel members);
    else one ``error`` (ConfigError, or the backend's own type) naming the path and the family
    it needs."""
    if kernel_route.kernel in served:
        return kernel_route
    path = f"path {dp.name!r}" if hasattr(dp, "name") else "this datapath"
    have = ", ".join(k.value for k in Kernel if k in served) or "none"
    raise error(f"{backend} does not serve {path}: it runs on the "
                      f"{kernel_route.kernel.value} kernel ({backend} serves: {have})")


def block_of(dp: Datapath, k: int) -> int:
    """The block size n: dp.block_size, or the whole K (at least 1) when it has none."""
    return dp.block_size if dp.block_size is not None else max(k, 1)


def check_sum_bits(dp: Datapath, n: int) -> None:
    """Raise ConfigError unless n + 1 terms of f fraction bits add exactly in float64."""
    f = -1 if dp.fraction_bits is None else dp.fraction_bits
    if f >= 0 and f + 2 + math.ceil(math.log2(n + 1)) > FLOAT64_SUM_BITS:
        raise ConfigError(
            f"fraction_bits: {f} with block_size {n} needs more than {FLOAT64_SUM_BITS} bits of "
            f"exact sum (f + 2 + log2(n + 1) <= 53); use fraction_bits = None for exact alignment")


def staged_variant(dp: Datapath, acc: str, a_format: str, b_format: str, n: int) -> tuple:
    """(tiled, int32_sums): how the staged kernel would run ``dp`` (both False for exact alignment
    on the exact kernel)."""
    staged = dp.staged() or dp.fraction_bits is not None    # else the exact kernel
    tiled = staged and staged_tiled(dp, acc)
    return bool(tiled), bool(tiled and staged_int32_sums(dp, a_format, b_format, n))


def fits_float32(dp: Datapath, a_format: str, b_format: str, k: int) -> bool:
    """True when the operands may be prepared in float32 for the fused float32 tile
    (which also needs :func:`fused_serves`) with the same bits.

    Needs exact float32 products, n + 1 terms of < 4 * 2^f units summing exactly in 24 bits, and
    a term rounding for which a product scaled below the float32 range (trunc/rint of a value
    < 1 in magnitude) gives the same 0 as the exact value does (not true for floor). The
    normalised alignment reads float64 exponent fields, so it stays in float64.
    """
    if dp.fraction_bits is None or dp.product_alignment != "unnormalized":
        return False
    if dp.block_scale != "none" or dp.staged():
        return False            # scaled products leave the float32 range; staged: float64
    if dp.term_rounding == "floor":
        return False
    if a_format not in FLOAT32_PRODUCT_FORMATS or b_format not in FLOAT32_PRODUCT_FORMATS:
        return False
    n = block_of(dp, k)
    return dp.fraction_bits + 2 + math.ceil(math.log2(n + 1)) <= FLOAT32_SUM_BITS


def fused_serves(dp: Datapath, a_format: str, b_format: str, acc: str,
                 has_special: bool) -> bool:
    """True when the fused float32 tile (tcsim._kernels.fused) computes ``dp`` on operands for
    which :func:`fits_float32` already holds: fused sum with C inside, truncate / rne terms,
    RZ / RNE output, no NaN/Inf, zero results +0 (zero_sign plus or unsigned), zero operands out
    of E or at an exponent int8 lanes hold."""
    z = dp.zero_operand_exponent
    return (not has_special and acc in ("fp32", "fp16") and not dp.staged()
            and dp.fraction_bits is not None
            and dp.fraction_bits <= FUSED_MAX_FRACTION_BITS
            and dp.c_placement == "inside" and dp.product_alignment == "unnormalized"
            and dp.block_scale == "none" and dp.lowered_k is None
            and dp.term_rounding in ("truncate", "rne")
            and dp.output_rounding in ("rz", "rne") and dp.zero_sign != "ieee"
            and a_format in INT8_EXPONENT_FORMATS and b_format in INT8_EXPONENT_FORMATS
            and (z is None or FUSED_MIN_ZERO_EXP <= z <= FUSED_MAX_ZERO_EXP))


def check_staged_bits(dp: Datapath, a_format: str, b_format: str) -> None:
    """Raise ConfigError unless the staged kernel's float64 sums are exact for these formats.

    Group terms: a group sum of G products is a multiple of the product quantum q (the product of
    the two smallest subnormals) below G * max|a| * max|b|, so it is exact while that span fits 53
    bits; a term (group sum times two scale significands < 2, on the grid 2^(X - f)) needs
    f + log2(G * max|a*b|) + 2 + log2(terms + 1) <= 53.
    """
    if dp.block_scale != "group":
        return
    fa, fb = get_format(a_format), get_format(b_format)
    G = dp.group_size
    top = G * fa.max_finite * fb.max_finite
    quantum = 2.0 ** (fa.emin - fa.mantissa_bits + fb.emin - fb.mantissa_bits)
    terms = dp.block_size // G
    span = math.ceil(math.log2(top / quantum))
    need = dp.fraction_bits + math.ceil(math.log2(top)) + 2 + math.ceil(math.log2(terms + 2))
    if span > FLOAT64_SUM_BITS or need > FLOAT64_SUM_BITS:
        raise ConfigError(
            f"block_scale: group sums of {G} {a_format} x {b_format} products with "
            f"{dp.fraction_bits} fraction bits are not modelled exactly (needs {max(span, need)} "
            f"> {FLOAT64_SUM_BITS} bits); group terms take FP4 (e2m1) or e2m3 inputs")


def staged_int32_sums(dp: Datapath, a_format: str, b_format: str, n: int) -> bool:
    """True when the staged kernel may sum truncated products as int32 of float32 values: the
    products are exact, normal float32 numbers (FLOAT32_PRODUCT_FORMATS), a term scaled onto the
    grid, |a*b| * 2^(f-E) < 2^(f+2), is then exact in float32 and its truncation toward zero is
    the float -> int32 conversion, and n + 1 such terms add exactly in int32 while
    f + 2 + log2(n + 1) <= 31."""
    if dp.fraction_bits is None or dp.term_rounding != "truncate" or dp.block_scale != "none":
        return False
    if dp.product_alignment != "unnormalized" or dp.product_sum != "fused":
        return False
    if a_format not in FLOAT32_PRODUCT_FORMATS or b_format not in FLOAT32_PRODUCT_FORMATS:
        return False
    return dp.fraction_bits + 2 + math.ceil(math.log2(n + 1)) <= INT32_SUM_BITS


def staged_tiled(dp: Datapath, acc: str) -> bool:
    """Which route of the staged kernel serves ``dp``: the output tiles (every fused product
    sum, and pairwise trees whose every node is an IEEE binary32 RNE operation), or output by
    output (the other pairwise trees)."""
    if dp.product_sum == "pairwise":
        p = dp.output_precision or get_format(acc).precision
        return (acc == "fp32" and dp.product_sum_precision == 24 and p == 24
                and dp.output_rounding == "rne")
    return True
