"""The shape of the code: which module may import which (tests/importgraph.py reads the imports
from the source), what ``import tcsim`` costs, and name lists stated once.

Layers, lowest first. A module may import its own layer and the layers below it, never one
above; the import graph has no circle. Function-level (lazy) imports count: a lazy import still
runs the imported module, so an upward one is a hidden circle. ``if TYPE_CHECKING:`` imports do
not count (annotations only, never run).
"""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
from typing import get_args

import pytest

from importgraph import ROOT, cycles, edges, module_files, private_attributes, private_imports

LAYERS = (
    # plain errors and file readers: no numpy numerics, no pydantic
    ("base", ("tcsim.errors", "tcsim.tomlfile", "tcsim.npzfile", "tcsim.rounding",
              "tcsim.tempfiles", "tcsim.device",
              "tcsim.overflow", "tcsim.kernel_constants")),
    # numba kernels: numpy/numba only (and the layer above: error types, rounding and overflow
    # codes, the constants shared with the parameter compiler and the oracle)
    ("kernels", ("tcsim._kernels", "tcsim._kernels.*")),
    # number formats and their codes (formats.conversion calls the codec kernels, lazily)
    ("formats", ("tcsim.formats", "tcsim.formats.*", "tcsim.scales", "tcsim.workloads")),
    # validated configuration (pydantic): the frozen base, Datapath, InstructionPath / GpuModel,
    # Scaling / Recipe, the name lists, and tcsim.config re-exporting them
    ("config", ("tcsim.frozen_config", "tcsim.datapath", "tcsim.gpu_model", "tcsim.recipe",
                "tcsim.config")),
    # a datapath made concrete: presets, the kernel route and parameters, lowering, the exact
    # oracle
    ("datapath", ("tcsim.route", "tcsim.params", "tcsim.presets", "tcsim.lowering",
                  "tcsim.reference")),
    # the GPU backend (numba-cuda kernels): reads the route and parameters, is called by mma
    ("device", ("tcsim.cuda", "tcsim.cuda.arrays", "tcsim.cuda.blockscale",
                "tcsim.cuda.compile_check", "tcsim.cuda.elementwise", "tcsim.cuda.epilogue",
                "tcsim.cuda.fused", "tcsim.cuda.lowered", "tcsim.cuda.prep", "tcsim.cuda.ptx",
                "tcsim.cuda.quantize", "tcsim.cuda.run", "tcsim.cuda.staged",
                "tcsim.cuda.validate")),
    # one instruction, quantisation (tcsim.quant; torchao / TE casts), the GEMM oracle
    ("mma", ("tcsim.mma", "tcsim.quant", "tcsim.reciprocal_scaling", "tcsim.reference_gemm")),
    # the GEMM and what measures or replays simulations
    ("gemm", ("tcsim.gemm", "tcsim.metrics", "tcsim.vectors", "tcsim.corpus",
              "tcsim.mmasim_replay", "tcsim.recorded_rows")),
    # tools built on the simulator
    ("tools", ("tcsim.explain", "tcsim.bounds", "tcsim.fit", "tcsim.deepseek",
               "tcsim.native_scaling", "tcsim.explore", "tcsim.explore.*", "tcsim.torch",
               "tcsim.torch.*", "tcsim.training_recipes")),
    # the package's public names (loaded lazily), the demo, training runs
    ("applications", ("tcsim", "tcsim.demo", "tcsim.cuda.selfcheck", "tcsim.train", "tcsim.train.config",
                      "tcsim.train.data", "tcsim.train.model", "tcsim.train.runner",
                      "tcsim.train.study")),
    # gpu_validate, device side: numpy, ml_dtypes, CuPy; no tcsim (the GPU machine lacks it)
    ("gpu device", ("gpu_validate", "gpu_validate.records", "gpu_validate.compile",
                    "gpu_validate.bundle", "gpu_validate.device", "gpu_validate.gemm_device")),
    # gpu_validate, host side: imports tcsim
    ("gpu host", ("gpu_validate.suites", "gpu_validate.replay", "gpu_validate.gemm",
                  "gpu_validate.questions", "gpu_validate.simulated")),
    # entry points: the runner (its --simulate dry run takes the host's SimulatedBackend), the
    # synthetic records, the one module tcsim's command line calls
    ("gpu entry", ("gpu_validate.runner", "gpu_validate.make_synthetic",
                   "gpu_validate.commands")),
    ("command line", ("tcsim.cli", "tcsim.cli.__main__", "tcsim.cli.entry", "tcsim.cli.parser",
                      "tcsim.cli.common", "tcsim.cli.corpus", "tcsim.cli.demo",
                      "tcsim.cli.explain", "tcsim.cli.fit", "tcsim.cli.gemm", "tcsim.cli.mma",
                      "tcsim.cli.models", "tcsim.cli.sweep", "tcsim.cli.train",
                      "tcsim.cli.validate", "tcsim.train.__main__")),
)

# gpu_validate modules that the GPU machine imports: no tcsim, directly or lazily (the runner
# reaches tcsim only through gpu_validate.simulated, for --simulate)
DEVICE_SIDE = ("gpu_validate", "gpu_validate.records", "gpu_validate.compile",
               "gpu_validate.bundle", "gpu_validate.device", "gpu_validate.gemm_device",
               "gpu_validate.runner")

def layer_of(module: str) -> int:
    found = [i for i, (_, patterns) in enumerate(LAYERS)
             if any(fnmatch.fnmatchcase(module, p) for p in patterns)]
    assert len(found) == 1, f"{module} is in {len(found)} layers of LAYERS (give it one)"
    return found[0]


def test_every_module_has_one_layer():
    for module in module_files():
        layer_of(module)


def test_the_graph_reader_sees_lazy_imports():
    """The reader is not blind: it finds a known module-level edge and a known lazy one."""
    found = {(e.source, e.target, e.lazy) for e in edges()}
    assert ("tcsim.gpu_model", "tcsim.formats.catalog", False) in found
    assert ("tcsim.formats.conversion", "tcsim._kernels.codec", True) in found
    assert ("tcsim.cli.validate", "gpu_validate.commands", True) in found


def test_no_upward_import():
    upward = {(e.source, e.target) for e in edges() if layer_of(e.target) > layer_of(e.source)}
    lines = sorted(f"{e.source} (line {e.line}{', lazy' if e.lazy else ''}) imports {e.target}: "
                   f"{LAYERS[layer_of(e.source)][0]} -> {LAYERS[layer_of(e.target)][0]}"
                   for e in edges() if (e.source, e.target) in upward)
    assert not lines, "upward imports:\n" + "\n".join(lines)


def test_no_import_circle():
    assert cycles(edges()) == []


def test_no_private_name_imported_across_modules():
    found = {(e.source, e.target, name) for e, name in private_imports()}
    new = sorted(found)
    assert not new, "private names imported from another module (make them public): " + \
        "; ".join(f"{s} takes {n} from {t}" for s, t, n in new)


def test_private_attribute_of_an_imported_module_is_found():
    """``formats._x`` counts as taking ``_x`` from tcsim.formats (the reader is not blind)."""
    tree = ast.parse("from . import formats\nimport tcsim.mma as m\n"
                     "def f():\n    return formats._index_str, m._y, formats.decode\n")
    found = private_attributes("tcsim.quant", False, tree, {"tcsim.formats", "tcsim.mma"})
    assert [(e.target, name) for e, name in found] == [("tcsim.formats", "_index_str"),
                                                       ("tcsim.mma", "_y")]


def test_device_side_imports_no_tcsim():
    bad = [f"{e.source} line {e.line} imports {e.target}" for e in edges()
           if e.source in DEVICE_SIDE and e.target.split(".")[0] == "tcsim"]
    assert not bad


def test_cli_reaches_gpu_validate_through_one_module():
    """Only ``tcsim validate`` reaches gpu_validate, and only through gpu_validate.commands."""
    reached = {(e.source, e.target) for e in edges()
               if e.source.split(".")[:2] == ["tcsim", "cli"]
               and e.target.startswith("gpu_validate")}
    assert reached == {("tcsim.cli.validate", "gpu_validate.commands")}


# ---- what an import loads ----------------------------------------------------------------------

def _loaded_after(statement: str) -> list:
    """Modules numba / tcsim._kernels.* that ``statement`` loads in a fresh interpreter."""
    code = (f"import sys\n{statement}\n"
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'numba' "
            "or m.startswith('tcsim._kernels'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize("module", [
    "tcsim", "tcsim.config", "tcsim.datapath", "tcsim.gpu_model", "tcsim.recipe",
    "tcsim.frozen_config", "tcsim.formats", "tcsim.formats.catalog", "tcsim.formats.conversion",
    "tcsim.formats.operands", "tcsim.errors", "tcsim.presets", "tcsim.cli",
    "tcsim.workloads", "tcsim.params", "tcsim.route", "tcsim.lowering", "tcsim.reference",
    "tcsim.explore",
    "gpu_validate.commands", "gpu_validate.runner", "tcsim.quant", "tcsim.mma", "tcsim.gemm",
    "tcsim.explain", "tcsim.corpus", "tcsim.recorded_rows", "tcsim.fit", "tcsim.deepseek",
    "gpu_validate.replay",
])
def test_import_loads_no_numba(module):
    """Importing a configuration, a format or the command line costs no numba and no kernel;
    the kernels load when something runs them."""
    assert _loaded_after(f"import {module}") == []


def test_public_names_load_on_first_use():
    """``tcsim.mma`` / ``gemm`` / ``explain`` stay the functions whichever way their
    submodules were imported first; every name of ``__all__`` resolves."""
    code = ("import sys, types\n"
            "import tcsim.explain, tcsim.gemm\n"         # submodules before the names
            "from tcsim.mma import run_datapath\n"
            "import tcsim\n"
            "assert all(callable(getattr(tcsim, n)) for n in ('mma', 'gemm', 'explain'))\n"
            "assert not any(isinstance(getattr(tcsim, n), types.ModuleType) "
            "for n in ('mma', 'gemm', 'explain'))\n"
            "assert [n for n in tcsim.__all__ if getattr(tcsim, n, None) is None] == []\n"
            "assert isinstance(tcsim.reference, types.ModuleType)\n"
            "assert tcsim.Recipe is sys.modules['tcsim.recipe'].Recipe\n"
            "assert tcsim.InstructionPath is tcsim.Path is sys.modules['tcsim.config'].Path\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    import tcsim
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        tcsim.no_such_name


# ---- name lists stated once ---------------------------------------------------------------------

def test_epilogue_names_have_one_source():
    from gpu_validate.gemm_device import EPILOGUE_MODES
    from tcsim._kernels.epilogue import EPILOGUE_CODES
    from tcsim.cli import build_parser
    from tcsim.recipe import EPILOGUE_NAMES, Epilogue

    assert EPILOGUE_NAMES == get_args(Epilogue) and len(EPILOGUE_NAMES) == 5
    assert set(EPILOGUE_MODES) == set(EPILOGUE_NAMES)      # the CUDA kernel's modes
    assert set(EPILOGUE_CODES) == set(EPILOGUE_NAMES)      # the numba kernel's codes
    assert _choices(build_parser(), "gemm", "--epilogue") == EPILOGUE_NAMES


def test_cli_lists_come_from_the_library():
    from tcsim.cli import build_parser
    from tcsim.gpu_model import OUTPUT_FORMATS
    from tcsim.recipe import GEMM_OUTPUTS, RECIPE_NAMES, Recipe
    from tcsim.scales import SCALE_FORMATS
    from tcsim.workloads import DISTRIBUTIONS

    parser = build_parser()
    assert _choices(parser, "gemm", "--dist") == DISTRIBUTIONS
    assert _choices(parser, "mma", "--acc") == OUTPUT_FORMATS
    assert _choices(parser, "explain", "--acc") == OUTPUT_FORMATS
    assert _choices(parser, "mma", "--scale-format") == SCALE_FORMATS
    assert _choices(parser, "gemm", "--output") == GEMM_OUTPUTS
    assert get_args(Recipe.model_fields["output"].annotation) == GEMM_OUTPUTS
    assert all(name in _help(parser, "gemm", "--recipe") for name in RECIPE_NAMES)


def test_sweep_grid_takes_every_distribution():
    from tcsim.explore.grid import WorkloadAxes
    from tcsim.workloads import DISTRIBUTIONS

    assert WorkloadAxes(dist=list(DISTRIBUTIONS)).dist == list(DISTRIBUTIONS)


def _action(parser, command: str, option: str):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if option in a.option_strings)


def _choices(parser, command: str, option: str) -> tuple:
    return tuple(_action(parser, command, option).choices)


def _help(parser, command: str, option: str) -> str:
    return _action(parser, command, option).help
