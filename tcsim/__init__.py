"""tcsim: a bit-exact simulator of GPU matrix-unit (Tensor Core) accumulation.

Public API::

    import tcsim
    h100 = tcsim.load_model("h100")          # models/h100.toml, validated
    d = tcsim.mma(a, b, c, model=h100, a_format="e4m3", b_format="e4m3", acc="fp32")
    y = tcsim.gemm(x, w, model=h100, recipe=tcsim.Recipe.deepseek_v3())   # quantised inside
    y, det = tcsim.gemm(x, w, model=h100, return_details=True)
    tcsim.metrics.gemm_errors(x, w, y, det)   # accumulation error (vs the exact FP8 product)
                                              # and total error (vs x @ w in float64)

See docs/datapath.md for the model of the datapath and ``tcsim --help`` for the command line.

The names below are loaded on first use (PEP 562), so that ``import tcsim`` or a configuration
module (tcsim.datapath, tcsim.gpu_model, tcsim.recipe, tcsim.config) does not load numba and the
kernels: a configuration, a format or the ``tcsim --help`` of the command line costs no kernel
import. ``Path`` is the former name of ``InstructionPath`` (a deprecated alias).
"""

import importlib
import importlib.util
import sys
import types

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS = {
    "bounds": None, "metrics": None,                       # submodules, public as modules
    "Datapath": "datapath", "GpuModel": "gpu_model", "InstructionPath": "gpu_model",
    "Path": "config",                                      # deprecated alias of InstructionPath
    "Recipe": "recipe", "Scaling": "recipe",
    "ConfigError": "errors", "CorpusError": "errors", "FormatError": "errors",
    "InputFileError": "errors", "OutputFileError": "errors",
    "ShapeError": "errors", "TcsimError": "errors", "UnknownModelError": "errors",
    "FloatFormat": "formats.catalog", "get_format": "formats.catalog",
    "decode": "formats.conversion", "encode": "formats.conversion",
    "round_to_format": "formats.conversion",
    "explain": "explain",
    "GemmDetails": "gemm", "gemm": "gemm",
    "mma": "mma",
    "Quantized": "quant", "quantize": "quant",
    "load_model": "presets", "preset_names": "presets",
}

# Functions named like the submodule that defines them: importing tcsim.mma sets the package
# attribute ``mma`` to the module (the import system does so for every submodule), which would
# shadow the function; the package keeps the function (as it always has).
_FUNCTIONS_NAMED_LIKE_MODULES = frozenset({"explain", "gemm", "mma"})

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Load a public name (or any submodule, ``tcsim.reference``) on first use."""
    if name in _EXPORTS:
        module = _EXPORTS[name]
        value = importlib.import_module(f"{__name__}.{module or name}")
        if module is not None:
            value = getattr(value, name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value         # found in the module's namespace from now on
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """tcsim's module type: drops the import system's ``tcsim.mma = <module tcsim.mma>`` (and
    gemm, explain), so that those names stay the functions; the submodules stay in
    ``sys.modules``."""

    def __setattr__(self, name, value):
        if name in _FUNCTIONS_NAMED_LIKE_MODULES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)

    def __reduce__(self):
        # Pickle by reference, as (cloud)pickle does a plain module: the unpickler imports
        # tcsim by name. Without this, pickle falls back to the instance's state and fails
        # ("cannot pickle '_Package' object"), and so does cloudpickle for any function that
        # refers to ``tcsim`` (a Dask ``client.map`` of a notebook function).
        return importlib.import_module, (self.__name__,)


sys.modules[__name__].__class__ = _Package
