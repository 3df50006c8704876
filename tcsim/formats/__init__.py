"""Floating-point formats: the formats as data, conversions between values and codes, operand
arrays. One job per module:

* :mod:`tcsim.formats.catalog`: :class:`FloatFormat` and the named formats (e4m3, e5m2, the fnuz
  pair, fp16, bf16, tf32, fp32, e8m0, e2m3, e3m2, e2m1), :func:`get_format`, code widths, the
  names of the rounding modes and overflow policies.
* :mod:`tcsim.formats.conversion`: :func:`encode`, :func:`decode`, :func:`round_to_format`,
  :func:`is_representable`, :func:`check_representable` (their semantics are stated there),
  and the arguments of the jitted codec kernels.
* :mod:`tcsim.formats.operands`: ml_dtypes arrays, raw-code arrays, packed FP4
  (:func:`pack_e2m1` / :func:`unpack_e2m1`), the format of an operand, the accumulator's
  dtypes and canonical NaN.

Every public name of the three is also a name of this package, so ``from tcsim.formats import
encode, get_format, pack_e2m1`` works as it always has; tcsim's own modules import from the
module that defines a name. Importing the package loads neither numba nor ml_dtypes.
"""

from .catalog import (
                      ALIASES,
                      FORMATS,
                      OVERFLOW_POLICIES,
                      ROUNDING_MODES,
                      FloatFormat,
                      NanStyle,
                      bf16,
                      code_bits,
                      code_dtype,
                      e2m1,
                      e2m3,
                      e3m2,
                      e4m3fn,
                      e4m3fnuz,
                      e5m2,
                      e5m2fnuz,
                      e8m0,
                      fp16,
                      fp32,
                      get_format,
                      max_significand,
                      tf32,
)
from .conversion import (
                      DEFAULT_RANDOM_BITS,
                      MAX_RANDOM_BITS,
                      check_representable,
                      decode,
                      encode,
                      format_params,
                      index_str,
                      is_representable,
                      overflow_code,
                      round_to_format,
                      rounding_code,
)
from .operands import (
                      ACC_BITS_DTYPES,
                      ACC_DTYPES,
                      CANONICAL_NAN_BITS,
                      dtype_values,
                      ml_dtype,
                      operand_format,
                      pack_e2m1,
                      raw_code_values,
                      unpack_e2m1,
)

# every public name of the three modules (tests/test_formats.py holds this list to theirs)
__all__ = [
    # catalog
    "ALIASES", "FORMATS", "OVERFLOW_POLICIES", "ROUNDING_MODES", "FloatFormat", "NanStyle",
    "bf16", "code_bits", "code_dtype", "e2m1", "e2m3", "e3m2", "e4m3fn", "e4m3fnuz", "e5m2",
    "e5m2fnuz", "e8m0", "fp16", "fp32", "get_format", "max_significand", "tf32",
    # conversion
    "DEFAULT_RANDOM_BITS", "MAX_RANDOM_BITS", "check_representable", "decode", "encode",
    "format_params", "index_str", "is_representable", "overflow_code", "round_to_format",
    "rounding_code",
    # operands
    "ACC_BITS_DTYPES", "ACC_DTYPES", "CANONICAL_NAN_BITS", "dtype_values", "ml_dtype",
    "operand_format", "pack_e2m1", "raw_code_values", "unpack_e2m1",
]
