"""The device API: ``device=`` / TCSIM_DEVICE / CUDA arrays choose the backend (tcsim.device),
and tcsim.mma / tcsim.gemm on the GPU backend give the CPU's bits, whether given host arrays
(copied in and out) or CUDA arrays (kept on the device). Kernels run in numba's CUDA simulator
(tests/conftest.py), so the shapes are small."""

from __future__ import annotations

import numpy as np
import pytest

from tcsim.device import is_cuda_array, resolve_device
from tcsim.errors import DeviceError, FormatError
from tcsim.formats.conversion import round_to_format

cuda_ext = pytest.importorskip("numba.cuda.extending", reason="the GPU backend needs numba-cuda")


class _FakeCudaTensor:
    """Anything exposing __cuda_array_interface__ counts as a CUDA array."""
    __cuda_array_interface__ = {"shape": (1,), "typestr": "<f4", "data": (0, False),
                                "version": 3}


def test_device_resolution(monkeypatch):
    monkeypatch.delenv("TCSIM_DEVICE", raising=False)
    host = np.zeros((2, 2))
    assert resolve_device(None, host) == "cpu"
    assert resolve_device("CUDA", host) == "cuda"
    assert resolve_device(None, host, _FakeCudaTensor()) == "cuda"
    assert is_cuda_array(_FakeCudaTensor()) and not is_cuda_array(host)
    monkeypatch.setenv("TCSIM_DEVICE", "cuda")
    assert resolve_device(None, host) == "cuda"
    assert resolve_device("cpu", host) == "cpu"          # the argument wins over the variable
    monkeypatch.setenv("TCSIM_DEVICE", "tpu")
    with pytest.raises(DeviceError, match="TCSIM_DEVICE"):
        resolve_device(None, host)
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("gpu0", host)
    with pytest.raises(DeviceError, match="copy them to the host"):
        resolve_device("cpu", _FakeCudaTensor())


def test_device_representability_check_names_the_element():
    from numba import cuda

    from tcsim.cuda import validate
    x = np.zeros((3, 4))
    x[1, 2], x[2, 3] = 0.3, 1e9
    with pytest.raises(FormatError, match=r"a\[1, 2\] = 0.3 \(and 1 more\)"):
        validate.check_representable(cuda.to_device(x), "e4m3", "a")
    ok = round_to_format(np.linspace(-400, 400, 12).reshape(3, 4), "e4m3")
    validate.check_representable(cuda.to_device(ok), "e4m3", "a")      # no error


def _fp8(rng, shape, fmt="e4m3"):
    x = rng.standard_normal(shape) * 2.0 ** rng.integers(-4, 5, shape)
    x[rng.random(shape) < 0.1] = 0.0
    return round_to_format(x, fmt)


def test_mma_on_cuda_host_arrays_equals_cpu_bits():
    import tcsim
    rng = np.random.default_rng(3)
    a, b = _fp8(rng, (5, 40)), _fp8(rng, (40, 6), "e5m2")
    c = rng.standard_normal((5, 6)).astype(np.float32)
    cpu = tcsim.mma(a, b, c, model="h100", a_format="e4m3", b_format="e5m2")
    gpu = tcsim.mma(a, b, c, model="h100", a_format="e4m3", b_format="e5m2", device="cuda")
    assert isinstance(gpu, np.ndarray) and gpu.dtype == np.float32
    assert (gpu.view(np.uint32) == cpu.view(np.uint32)).all()


def test_mma_on_cuda_arrays_stays_on_the_device_with_cpu_bits():
    from numba import cuda

    import tcsim
    rng = np.random.default_rng(4)
    a, b = _fp8(rng, (2, 6, 36)), _fp8(rng, (2, 36, 5))
    cpu = tcsim.mma(a, b, model="h100", a_format="e4m3", b_format="e4m3")
    dev = tcsim.mma(cuda.to_device(a.astype(np.float32)), cuda.to_device(b.astype(np.float32)),
                    model="h100", a_format="e4m3", b_format="e4m3")
    assert is_cuda_array(dev)
    assert (dev.copy_to_host().view(np.uint32) == cpu.view(np.uint32)).all()
    with pytest.raises(FormatError, match="give a_format"):
        tcsim.mma(cuda.to_device(a.astype(np.float32)), cuda.to_device(b.astype(np.float32)),
                  model="h100", b_format="e4m3")
    bad = a.astype(np.float32)
    bad[0, 0, 0] = 0.3
    with pytest.raises(FormatError, match=r"a\[0, 0, 0\] = 0.3"):
        tcsim.mma(cuda.to_device(bad), cuda.to_device(b.astype(np.float32)), model="h100",
                  a_format="e4m3", b_format="e4m3")


def test_a_path_the_gpu_does_not_serve_is_named():
    import tcsim
    rng = np.random.default_rng(5)
    a, b = _fp8(rng, (3, 8)), _fp8(rng, (8, 3))
    # the ideal unit aligns exactly: the exact kernel, which the GPU backend does not run
    with pytest.raises(DeviceError, match="exact"):
        tcsim.mma(a, b, model="ideal", a_format="e4m3", b_format="e4m3", device="cuda")


# every named recipe, on a model that runs it (the block-scaled ones need b200's paths)
RECIPE_MODELS = {"mxfp8_native": "b200", "mxfp4": "b200", "nvfp4": "b200"}


@pytest.mark.parametrize("name", __import__("tcsim.recipe", fromlist=["RECIPE_NAMES"])
                         .RECIPE_NAMES)
def test_gemm_every_recipe_on_cuda_equals_cpu_bits(name):
    """Host inputs with device="cuda": quantised, multiplied and promoted on the device."""
    import tcsim
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((3, 128)) * 2.0 ** rng.integers(-6, 6, (3, 128))).astype(np.float32)
    w = (rng.standard_normal((128, 64)) * 0.05).astype(np.float32)
    model = RECIPE_MODELS.get(name, "h100")
    cpu = tcsim.gemm(x, w, model=model, recipe=name, progress=False)
    gpu = tcsim.gemm(x, w, model=model, recipe=name, device="cuda", progress=False)
    assert isinstance(gpu, np.ndarray)
    assert (gpu.view(np.uint32) == cpu.view(np.uint32)).all(), name


def test_gemm_on_cuda_arrays_returns_a_cuda_array_with_cpu_bits():
    from numba import cuda

    import tcsim
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    w = (rng.standard_normal((256, 16)) * 0.05).astype(np.float64)
    cpu, det = tcsim.gemm(x, w, model="h100", progress=False, return_details=True)
    dev = tcsim.gemm(cuda.to_device(x), cuda.to_device(w), model="h100", progress=False)
    assert is_cuda_array(dev)
    assert (dev.copy_to_host().view(np.uint32) == cpu.view(np.uint32)).all()
    y, det_dev = tcsim.gemm(cuda.to_device(x), cuda.to_device(w), model="h100", progress=False,
                            return_details=True)
    assert (det_dev.a.values == det.a.values).all() and (det_dev.b.values == det.b.values).all()
    assert (det_dev.accumulator.view(np.uint32) == det.accumulator.view(np.uint32)).all()
    bad = x.copy()
    bad[1, 7] = np.nan
    with pytest.raises(FormatError, match=r"x\[1, 7\] = nan"):
        tcsim.gemm(cuda.to_device(bad), cuda.to_device(w), model="h100", progress=False)


@pytest.mark.parametrize("acc", ["fp16", "fp32"])
def test_lowered_mma_sync_chain_on_cuda_equals_cpu_bits(acc):
    """h100's FP8 mma.sync: two HMMA steps per k32 instruction plus one rounded add of C, all on
    the device; K = 70 pads the last instruction."""
    import tcsim
    from tcsim.mma import ACC_DTYPES
    rng = np.random.default_rng(9)
    a, b = _fp8(rng, (2, 5, 70)), _fp8(rng, (2, 70, 6), "e5m2")
    c = _fp8(rng, (2, 5, 6), "fp16").astype(ACC_DTYPES[acc])
    c[0, 0, 0] = 60000.0            # near fp16's top: an overflow to Inf in the chain
    kw = dict(model="h100", path="mma.sync", a_format="e4m3", b_format="e5m2", acc=acc)
    cpu = tcsim.mma(a, b, c, **kw)
    gpu = tcsim.mma(a, b, c, device="cuda", **kw)
    bits = np.uint16 if acc == "fp16" else np.uint32
    assert (gpu.view(bits) == cpu.view(bits)).all()
