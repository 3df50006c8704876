"""tcsim: a bit-exact simulator of GPU matrix-unit (Tensor Core) accumulation.

Public API::

    import tcsim
    h100 = tcsim.load_model("h100")          # models/h100.toml, validated
    d = tcsim.mma(a, b, c, model=h100, a_format="e4m3", b_format="e4m3", acc="fp32")
    y = tcsim.gemm(x, w, model=h100, recipe=tcsim.Recipe.deepseek_v3())   # quantised inside
    y, det = tcsim.gemm(x, w, model=h100, return_details=True)
    tcsim.metrics.gemm_errors(x, w, y, det)   # accumulation error (vs the exact FP8 product)
                                              # and total error (vs x @ w in float64)

See README.md for the model of the datapath and ``tcsim --help`` for the command line.
"""

from . import bounds, metrics
from .config import Datapath, GpuModel, Path, Recipe, Scaling
from .errors import (ConfigError, CorpusError, FormatError, ShapeError, TcsimError,
                     UnknownModelError)
from .formats import FloatFormat, decode, encode, get_format, round_to_format
from .explain import explain
from .gemm import GemmDetails, gemm
from .mma import mma
from .quant import Quantized, quantize
from .presets import load_model, preset_names

__version__ = "0.1.0"

__all__ = [
    "bounds", "ConfigError", "CorpusError", "Datapath", "FloatFormat", "FormatError", "GemmDetails",
    "GpuModel", "metrics", "Path", "Quantized", "Recipe", "Scaling", "ShapeError", "TcsimError",
    "UnknownModelError", "decode", "encode", "explain", "gemm", "get_format", "load_model", "mma",
    "preset_names", "quantize", "round_to_format",
]
