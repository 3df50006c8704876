"""The tcsim package pickles by reference, like a plain module, so that functions referring to
``tcsim`` can be shipped to Dask workers (cloudpickle) or through multiprocessing (pickle)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

import tcsim

cloudpickle = pytest.importorskip("cloudpickle")

NOTEBOOK_CELL = '''
def max_e4m3():
    return tcsim.get_format("e4m3").max_finite
'''


def _notebook_function():
    """A function as a notebook defines it: its module is not importable, so cloudpickle
    pickles it by value, with the globals it refers to (the tcsim package)."""
    namespace = {"__name__": "notebook_cell", "tcsim": tcsim}
    exec(NOTEBOOK_CELL, namespace)
    return namespace["max_e4m3"]


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_package_pickles_by_reference(dumps):
    assert pickle.loads(dumps(tcsim)) is tcsim


def test_function_referring_to_tcsim_round_trips_and_runs():
    fn = pickle.loads(cloudpickle.dumps(_notebook_function()))
    assert fn.__globals__["tcsim"] is tcsim
    assert fn() == 448.0


def test_cloudpickled_function_runs_in_a_fresh_interpreter():
    """What a Dask worker does: unpickle (importing tcsim by name) and run."""
    run = subprocess.run([sys.executable, "-c",
                          "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read())())"],
                         input=cloudpickle.dumps(_notebook_function()), capture_output=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert run.stdout.decode().strip() == "448.0"


# ---- configurations pickle by class path; pickles written before the split still load -------

CONFIGS = {
    "model": lambda: tcsim.load_model("h100"),
    "path": lambda: tcsim.load_model("h100").paths[0],
    "datapath": lambda: tcsim.load_model("h100").paths[0].datapath(),
    "recipe": lambda: tcsim.Recipe.deepseek_v3(),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_configurations_round_trip(name):
    config = CONFIGS[name]()
    copy = pickle.loads(pickle.dumps(config))
    assert type(copy) is type(config) and copy == config


# Before the configuration classes had modules of their own, every one of them was pickled as
# tcsim.config.<name>, and InstructionPath as tcsim.config.Path. Protocol 2 writes each class as
# a GLOBAL opcode, b"c<module>\n<name>\n", so an old pickle is a new one with those rewritten.
OLD_NAMES = {b"tcsim.gpu_model\nGpuModel": b"tcsim.config\nGpuModel",
             b"tcsim.gpu_model\nInstructionPath": b"tcsim.config\nPath",
             b"tcsim.datapath\nDatapath": b"tcsim.config\nDatapath",
             b"tcsim.recipe\nRecipe": b"tcsim.config\nRecipe",
             b"tcsim.recipe\nScaling": b"tcsim.config\nScaling"}


@pytest.mark.parametrize("name", CONFIGS)
def test_pickles_of_the_former_class_paths_load(name):
    config = CONFIGS[name]()
    data = pickle.dumps(config, protocol=2)
    old = data
    for new_name, old_name in OLD_NAMES.items():
        old = old.replace(b"c" + new_name + b"\n", b"c" + old_name + b"\n")
    assert old != data and b"tcsim.config" in old        # the rewrite found the classes
    copy = pickle.loads(old)
    assert type(copy) is type(config) and copy == config
