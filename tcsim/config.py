"""tcsim's configuration classes under one name: a re-export of the modules that define them.

``from tcsim.config import ...`` keeps working for every name it has always offered; new code
imports from the defining module:

* :mod:`tcsim.datapath`: :class:`Datapath` (the hardware's block FMA), :func:`make_datapath`,
  the rounding-name types ``TermRounding``, ``OutputRounding``, ``AccRounding``;
* :mod:`tcsim.gpu_model`: :class:`InstructionPath` (one instruction/format path of a GPU
  model), :class:`GpuModel`, ``INPUT_FORMATS``, ``OUTPUT_FORMATS``;
* :mod:`tcsim.recipe`: :class:`Scaling`, :class:`Recipe`, ``Granularity``, ``Epilogue``,
  ``EPILOGUE_NAMES``, ``GemmOutput``, ``GEMM_OUTPUTS``, ``RECIPE_NAMES``;
* :mod:`tcsim.frozen_config`: :class:`FrozenConfig` (the frozen, validated base of them all)
  and :func:`config_error_message`.

``Path`` is the former name of :class:`InstructionPath`, kept as an alias (the same class, so
``isinstance`` and pickles written under the old name still work); it is deprecated: new code
writes ``InstructionPath`` (the old name clashed with :class:`pathlib.Path`).
"""

from __future__ import annotations

from .datapath import AccRounding, Datapath, OutputRounding, TermRounding, make_datapath
from .frozen_config import FrozenConfig, config_error_message
from .gpu_model import INPUT_FORMATS, OUTPUT_FORMATS, GpuModel, InstructionPath
from .recipe import (
                     EPILOGUE_NAMES,
                     GEMM_OUTPUTS,
                     RECIPE_NAMES,
                     Epilogue,
                     GemmOutput,
                     Granularity,
                     Recipe,
                     Scaling,
)

Path = InstructionPath      # deprecated alias: the former name of InstructionPath

__all__ = ["AccRounding", "Datapath", "EPILOGUE_NAMES", "Epilogue", "FrozenConfig",
           "GEMM_OUTPUTS", "GemmOutput", "GpuModel", "Granularity", "INPUT_FORMATS",
           "InstructionPath", "OUTPUT_FORMATS", "OutputRounding", "Path", "RECIPE_NAMES",
           "Recipe", "Scaling", "TermRounding", "config_error_message", "make_datapath"]
