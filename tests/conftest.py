"""Shared test fixtures: where the hardware corpus lives (never copied into the project)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The GPU backend's tests (tests/test_cuda_*.py) run its kernels in numba's CUDA simulator unless
# the environment says otherwise (NUMBA_ENABLE_CUDASIM=0 on a machine with a GPU): numba reads
# this when it is first imported, so it is set here, before any test imports it.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

REPO = Path(__file__).resolve().parent.parent
# The Khattak-Mikaitis hardware outputs: TCSIM_CORPUS is a folder holding the seven GPU folders
# below, or the upstream repository's model_validation/ folder itself, which holds B200 too.
CORPUS = Path(os.environ.get("TCSIM_CORPUS",
                             REPO.parent / "shared" / "corpora" / "khattak-mikaitis-2025"))
SEVEN_GPUS = ("V100", "A100", "A2", "Ada", "L40S", "H100", "H200")      # 40 sets
# The B200 sets (8): TCSIM_CORPUS_B200, else CORPUS when it holds them (the upstream layout),
# else the folder of their own beside the default CORPUS.
CORPUS_B200 = Path(os.environ.get("TCSIM_CORPUS_B200") or (
    CORPUS if (CORPUS / "B200").is_dir()
    else REPO.parent / "shared" / "corpora" / "khattak-mikaitis-2025-b200"))


@pytest.fixture(scope="session")
def corpus_root() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"hardware corpus not found at {CORPUS} (set TCSIM_CORPUS)")
    return CORPUS


@pytest.fixture(scope="session")
def seven_gpu_folders(corpus_root) -> list:
    """The GPU folders of the 40 sets of V100 ... H200 (CORPUS may hold B200 beside them)."""
    return [corpus_root / gpu for gpu in SEVEN_GPUS]


@pytest.fixture(scope="session")
def b200_root() -> Path:
    if not (CORPUS_B200 / "B200").is_dir():
        pytest.skip(f"B200 hardware corpus not found at {CORPUS_B200} (set TCSIM_CORPUS_B200)")
    return CORPUS_B200


MMASIM = Path(os.environ.get("TCSIM_MMASIM", REPO.parent / "shared" / "corpora" / "mmasim-2026"))


@pytest.fixture(scope="session")
def mmasim_root() -> Path:
    if not (MMASIM / "manifest.json").is_file():
        pytest.skip(f"MMA-Sim vectors not found at {MMASIM} (set TCSIM_MMASIM)")
    return MMASIM


@pytest.fixture(autouse=True, scope="module")
def quick_thread_switches(request):
    """The CUDA simulator runs a block as one Python thread per CUDA thread and waits at each
    syncthreads; Python's default 5 ms thread switch interval makes that ~10x slower. Shorter
    switches for the GPU backend's test modules only."""
    if not request.module.__name__.startswith("test_cuda_"):
        yield
        return
    import sys
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(before)
