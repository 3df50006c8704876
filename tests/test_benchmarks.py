"""Every script in benchmarks/ runs, at its tiny size (--tiny), and ends with its JSON line.

The scripts are found by globbing benchmarks/bench_*.py, so a new benchmark is run too (and
fails here until its expected JSON keys are listed below). No timing is checked: a benchmark's
numbers are for people; this only makes sure the script still works (a stage it wraps that moved,
an argument that changed). Each script runs in a subprocess, as a user runs it; the numba
kernels come from the on-disk cache the rest of the suite fills, so a run takes seconds.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CORPUS

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("bench_*.py"))

# script -> the keys its last line (JSON) must have
EXPECTED_KEYS = {
    "bench_cuda": {"mma_macs_per_s", "mma_ratio_vs_f32", "gemm_macs_per_s", "gemm_ratio_vs_f32",
                   "train_ratio", "bits_equal", "device", "shapes"},
    "bench_fit": {"sets", "total_s", "max_set_s", "slowest"},
    "bench_fused": {"fused_macs_per_s", "staged_macs_per_s", "speedup", "cpu_speedup",
                    "ratio_vs_numpy_f32", "bits_equal", "shape"},
    "bench_gemm": {"macs_per_s", "ratio_vs_numpy_f32", "shape"},
    "bench_lowered": {"m", "n", "runs"},
    "bench_memory": {"stage", "shape", "seconds", "peak_rss_bytes", "rss_before_bytes",
                     "inputs_bytes", "numpy_traced_peak_bytes"},
    "bench_mma": {"macs_per_s", "ratio_vs_numpy_f32", "shape"},
    "bench_train": {"sim_step_s", "f32_step_s", "ratio"},
    "bench_units": {"shape", "paths"},
}
# script -> arguments beyond --tiny
EXTRA_ARGS = {"bench_fit": [str(CORPUS)]}


def _needs_torch(script: Path) -> bool:
    return re.search(r"^\s*(import|from) torch\b", script.read_text(), re.MULTILINE) is not None


def test_the_scripts_are_found():
    assert {s.stem for s in SCRIPTS} >= set(EXPECTED_KEYS), \
        "a benchmark listed in EXPECTED_KEYS is gone: drop it from the list"


# bench_cuda runs its kernels in numba's CUDA simulator here (a minute or two): the slow tier
@pytest.mark.parametrize("script", [pytest.param(s, marks=pytest.mark.slow)
                                    if s.stem == "bench_cuda" else s for s in SCRIPTS],
                         ids=lambda s: s.stem)
def test_benchmark_runs_at_tiny_size(script: Path):
    assert script.stem in EXPECTED_KEYS, \
        f"{script.name}: list the keys of its last JSON line in EXPECTED_KEYS"
    if _needs_torch(script) and importlib.util.find_spec("torch") is None:
        pytest.skip(f"{script.name} needs PyTorch")
    if script.stem == "bench_cuda" and importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("bench_cuda needs numba-cuda (the cuda extra)")
    if script.stem == "bench_fit" and not CORPUS.is_dir():
        pytest.skip(f"hardware corpus not found at {CORPUS} (set TCSIM_CORPUS)")
    run = subprocess.run([sys.executable, str(script), "--tiny", *EXTRA_ARGS.get(script.stem, [])],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"{script.name} --tiny failed:\n{run.stderr[-3000:]}"
    lines = run.stdout.strip().splitlines()
    assert lines, f"{script.name} --tiny printed nothing"
    result = json.loads(lines[-1])
    missing = EXPECTED_KEYS[script.stem] - set(result)
    assert not missing, f"{script.name}: its JSON line lacks {sorted(missing)}"
    # bench_fused compares the fused and staged kernels' results bit for bit before timing
    assert result.get("bits_equal", True) is True, f"{script.name}: results differ in bits"
