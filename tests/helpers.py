"""Helpers shared by the tests (tests/ is on sys.path under pytest: ``from helpers import bits``).

* :func:`bits`: the bit patterns of an array, a tensor or a device array, for bit-exact checks;
* :func:`recorded_routes`, :func:`describe_routes`: the kernel routes (tcsim.route.route) that
  tcsim.mma ran, for the messages of kernel-vs-oracle comparisons;
* :func:`assert_same_bits_whatever_the_thread_count`: one computation on all of numba's
  threads and on one thread, the same bits;
* :func:`upstream_corpus_copy`: a small copy of the hardware corpus in the upstream
  repository's layout (tests/test_corpus.py, tests/test_fit.py).

Nothing here imports torch or numba on import: a torch tensor or a numba device array handed in
was made by a test that already imported them, and numba is imported by the one helper that
sets its thread count, when called.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Callable, Iterator

import numpy as np

_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _is_ml_dtype(dtype: np.dtype) -> bool:
    """An ml_dtypes float (bfloat16, float8_*, float4_*, ...): numpy kind 'V', no fields."""
    return dtype.kind == "V" and dtype.fields is None and \
        dtype.type.__module__.split(".")[0] == "ml_dtypes"


def _torch_bits(tensor) -> np.ndarray:
    """The bits of a torch tensor, on the host: a same-width integer view first (numpy has no
    bfloat16 / float8, so ``.numpy()`` of those would fail), then the unsigned numpy view."""
    torch = sys.modules["torch"]
    signed = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    tensor = tensor.detach().cpu()
    if tensor.is_complex() or tensor.dtype == torch.bool \
            or tensor.element_size() not in signed:
        raise TypeError(f"bits: a tensor of {tensor.dtype} has no bit pattern of its own width")
    if tensor.is_floating_point():
        tensor = tensor.view(signed[tensor.element_size()])
    host = tensor.numpy()
    return host.view(_UNSIGNED[host.dtype.itemsize])


def bits(x) -> np.ndarray:
    """The bit patterns of ``x`` as an unsigned-integer array of its own width.

    ``x``: a numpy array or scalar (float16/32/64, an ml_dtypes float such as bfloat16 or
    float8_e4m3fn, or an integer type), a Python number (made a 0-d array, so a ``float`` is
    float64), a torch tensor (detached, brought to the CPU) or a numba device array (copied to
    the host). Returns the same-shape view as uint8 / uint16 / uint32 / uint64 for 1- / 2- / 4- /
    8-byte elements: float16 and bfloat16 -> uint16, float32 -> uint32, float64 -> uint64.

    It never converts between widths (a float64 compared as float32 would hide differences), so
    two results compare equal only when the values have the same dtype and the same bits.
    Raises TypeError for what has no such view (bool, complex, object, strings, records).
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return _torch_bits(x)
    if hasattr(x, "copy_to_host"):          # a numba (or numba-simulator) device array
        x = x.copy_to_host()
    array = np.asarray(x)
    dtype = array.dtype
    if not (dtype.kind in "fiu" or _is_ml_dtype(dtype)) or dtype.itemsize not in _UNSIGNED:
        raise TypeError(f"bits: {dtype} has no bit pattern of its own width "
                        "(want a float, ml_dtypes float or integer array)")
    return array.view(_UNSIGNED[dtype.itemsize])


@contextlib.contextmanager
def recorded_routes() -> Iterator[list]:
    """Record the kernel routes tcsim.mma.run_datapath takes inside the ``with`` block: yields a
    list that fills with each :class:`tcsim.route.Route` as tcsim.route.route returns it (a
    lowered instruction's route first, then its inner instruction's)."""
    mma_module = importlib.import_module("tcsim.mma")     # tcsim.mma is also the function
    real = mma_module.route
    taken: list = []

    def spy(*args, **kwargs):
        taken.append(real(*args, **kwargs))
        return taken[-1]

    mma_module.route = spy
    try:
        yield taken
    finally:
        mma_module.route = real


def describe_routes(routes) -> str:
    """The distinct routes of :func:`recorded_routes`, in order, for an assertion message: the
    kernel, then the Route's other fields, e.g. "kernel route: staged tile (float32_operands=
    False, tiled=True, int32_sums=False)"."""
    seen = list(dict.fromkeys(routes))
    if not seen:
        return "kernel route: none recorded"

    def one(r) -> str:
        variant = ", ".join(f"{name}={value}" for name, value in r._asdict().items()
                            if name != "kernel")
        return f"{r.kernel.value} ({variant})"
    return "kernel route: " + " -> ".join(one(r) for r in seen)


def assert_same_bits_whatever_the_thread_count(run: Callable[[], object]) -> None:
    """``run()`` on all of numba's threads and on one thread gives the same bits (each output
    is computed whole by one thread, so the thread count must not change it)."""
    import numba
    full = bits(run())
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = bits(run())
    finally:
        numba.set_num_threads(before)
    assert full.shape == one.shape and full.dtype == one.dtype
    differ = np.flatnonzero(full != one)
    assert differ.size == 0, (f"{differ.size} of {full.size} outputs differ between "
                              f"{before} threads and 1; first at flat index {differ[0]}")


def upstream_corpus_copy(corpus_root, b200_root, dst, rows=40):
    """A small model_validation/ as the public repository lays it out: GPU folders (B200 among
    the others) beside MATLAB scripts and a CUDA/ folder of kernel sources, plus .git."""
    for root, gpu, fmt in ((corpus_root, "V100", "fp16"), (corpus_root, "H100", "E4M3"),
                           (b200_root, "B200", "E4M3"), (b200_root, "B200", "tf32")):
        (dst / gpu / fmt).mkdir(parents=True)
        for f in (root / gpu / fmt).iterdir():
            lines = f.read_text().splitlines(keepends=True)[:rows]
            (dst / gpu / fmt / f.name).write_text("".join(lines))
    (dst / "CUDA").mkdir()
    (dst / "CUDA" / "mma_fp8_output_fp16.cu").write_text("// kernel source\n")
    (dst / "Validate_TC_models.m").write_text("% MATLAB\n")
    (dst / "readHexFloatFile.m").write_text("% MATLAB\n")
    # files that look like corpus files but are not a set: skipped
    (dst / "CUDA" / "a_notes_x.txt").write_text("zz\n")
    (dst / ".git" / "X" / "fp16").mkdir(parents=True)
    (dst / ".git" / "X" / "fp16" / "a_X_fp16.txt").write_text("zz\n")
    return dst
