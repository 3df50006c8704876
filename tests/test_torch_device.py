"""tcsim.torch's device plumbing (tcsim.torch.device) without a GPU: which tensors go to
tcsim.gemm as CUDA arrays, which as numpy, how results come back, and the ``device`` option of
convert() / the layer's ``gemm_device`` reaching tcsim.gemm (only when set)."""

from __future__ import annotations

import inspect
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tcsim  # noqa: E402
import tcsim.torch as tt  # noqa: E402
from helpers import bits  # noqa: E402
from tcsim.errors import ConfigError  # noqa: E402
from tcsim.quant import pad_k  # noqa: E402
from tcsim.torch import _gemms  # noqa: E402
from tcsim.torch import device as dv


class FakeCudaArray:
    """Stands for a device array (numba, CuPy): only the interface's presence matters here."""

    __cuda_array_interface__ = {"shape": (2, 2), "typestr": "<f4", "data": (0, False),
                                "version": 3}


class FakeCudaTensor:
    """Duck-types what gemm_operand asks of a CUDA tensor, recording the calls."""

    is_cuda = True

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):        # detach, to, contiguous: each returns the tensor
        if name in ("detach", "to", "contiguous", "cpu", "numpy"):
            def call(*args):
                self.calls.append(name)
                return self
            return call
        raise AttributeError(name)


def test_check_device():
    for d in (None, "cpu", "cuda"):
        assert dv.check_device(d) == d
    with pytest.raises(ConfigError, match="gemm_device: expected None, 'cpu' or 'cuda', got 'gpu'"):
        dv.check_device("gpu", "gemm_device")
    assert dv.gemm_kwargs(None) == {}          # tcsim.gemm decides (TCSIM_DEVICE, the arrays)
    assert dv.gemm_kwargs("cuda") == {"device": "cuda"}


def test_cuda_arrays_are_recognised_by_their_interface():
    assert dv.is_cuda_array(FakeCudaArray())
    assert not dv.is_cuda_array(np.zeros((2, 2), np.float32))
    assert not dv.is_cuda_array(torch.zeros(2, 2))          # a CPU tensor's attribute raises
    assert not dv.is_cuda_array(torch.zeros(2, 2, requires_grad=True))


def test_which_tensors_stay_on_the_gpu():
    cpu, gpu = torch.zeros(2, 2), FakeCudaTensor()
    assert [dv.stays_on_gpu(cpu, d) for d in (None, "cpu", "cuda")] == [False] * 3
    assert [dv.stays_on_gpu(gpu, d) for d in (None, "cpu", "cuda")] == [True, False, True]
    # a CUDA tensor goes as itself (detached float32, contiguous): no host copy
    assert dv.gemm_operand(gpu, None) is gpu
    assert gpu.calls == ["detach", "to", "contiguous"]
    # ... unless the GEMMs are sent to the CPU
    assert dv.gemm_operand(FakeCudaTensor(), "cpu").calls == ["detach", "to", "cpu", "numpy"]


def test_backend_of_gemms_fed_host_arrays(monkeypatch):
    # tcsim.torch.emulate's GEMMs: None follows the tensor, else tcsim.gemm's default for host
    # arrays (TCSIM_DEVICE, else the CPU); a named device wins
    cpu, gpu = torch.zeros(2, 2), FakeCudaTensor()
    monkeypatch.delenv("TCSIM_DEVICE", raising=False)
    assert [dv.backend(d, cpu) for d in (None, "cpu", "cuda")] == ["cpu", "cpu", "cuda"]
    assert [dv.backend(d, gpu) for d in (None, "cpu", "cuda")] == ["cuda", "cpu", "cuda"]
    monkeypatch.setenv("TCSIM_DEVICE", "cuda")
    assert [dv.backend(d, cpu) for d in (None, "cpu")] == ["cuda", "cpu"]
    assert gpu.calls == []                  # nothing copied to decide


def test_cpu_tensors_go_the_numpy_way():
    x = torch.randn(5, 7, requires_grad=True)
    for d in (None, "cpu", "cuda"):
        got = dv.gemm_operand(x, d)
        assert type(got) is np.ndarray and got.dtype == np.float32
        assert np.array_equal(bits(got), bits(x))
    got = dv.gemm_operand(x.to(torch.bfloat16), None)       # widened exactly to float32
    assert got.dtype == np.float32 and np.array_equal(bits(got), bits(x.to(torch.bfloat16)
                                                                          .float()))
    # results: a CPU result shares the numpy array (as torch.from_numpy did before)
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = dv.to_tensor(y, like=x)
    assert t.device.type == "cpu" and np.shares_memory(t.numpy(), y)
    assert np.array_equal(bits(dv.to_tensor(t, like=x)), bits(y))


def test_pad_k_on_the_device_equals_numpy_padding():
    a, b = torch.randn(3, 100), torch.randn(100, 5)
    pa, pb = dv.pad_k_cuda(a, b, 128)      # any device: the tensors' own
    assert pa.shape == (3, 128) and pb.shape == (128, 5)
    assert np.array_equal(bits(pa), bits(pad_k(a.numpy(), 128, "a")))
    assert np.array_equal(bits(pb), bits(pad_k(b.numpy(), 128, "b")))
    a2, b2 = torch.randn(3, 256), torch.randn(256, 5)
    assert all(x is y for x, y in zip(dv.pad_k_cuda(a2, b2, 128), (a2, b2)))


def test_device_option_of_layers_and_convert():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    tt.convert(model, tt.TrainingRecipe.deepseek_v3(), exclude=(), device="cuda")
    assert [m.gemm_device for m in tt.layers(model)] == ["cuda", "cuda"]
    assert "gemm_device=cuda" in repr(model[0])
    tt.convert(model, tt.TrainingRecipe.bf16(), exclude=())      # converting again: None
    assert [m.gemm_device for m in tt.layers(model)] == [None, None]
    with pytest.raises(ConfigError, match="device: expected"):
        tt.convert(torch.nn.Linear(4, 4), tt.TrainingRecipe.bf16(), device="gpu")
    with pytest.raises(ConfigError, match="gemm_device"):
        tt.Linear(4, 4, gemm_device="tpu")
    # a layer pickled before gemm_device existed follows the tensors
    lin = tt.Linear(4, 4, gemm_device="cpu")
    state = dict(lin.__dict__)
    del state["_gemm_device"]
    old = tt.Linear.__new__(tt.Linear)
    old.__setstate__(state)
    assert old.gemm_device is None
    assert pickle.loads(pickle.dumps(lin)).gemm_device == "cpu"


def test_gemm_device_reaches_tcsim_gemm_only_when_set(monkeypatch):
    """The layer's gemm_device is passed to tcsim.gemm as ``device`` when set, never otherwise,
    and the CPU bits do not depend on it (a recording stand-in forwards to tcsim.gemm, with
    ``device`` only once tcsim.gemm takes it)."""
    takes_device = "device" in inspect.signature(tcsim.gemm).parameters
    seen = []

    def recording_gemm(a, b, **kw):
        seen.append(kw.get("device", "absent"))
        if not takes_device:
            kw.pop("device", None)
        return tcsim.gemm(a, b, **kw)

    monkeypatch.setattr(_gemms, "gemm", recording_gemm)
    torch.manual_seed(0)
    x, dy = torch.randn(16, 64), torch.randn(16, 32)
    out = {}
    for d in (None, "cpu"):
        lin = tt.Linear(64, 32, bias=False, recipe=tt.TrainingRecipe.deepseek_v3(),
                        gemm_device=d)
        with torch.no_grad():
            lin.weight.copy_(torch.linspace(-1, 1, 64 * 32).reshape(32, 64))
        xg = x.clone().requires_grad_(True)
        y = lin(xg)
        y.backward(dy)
        out[d] = (y.detach(), xg.grad, lin.weight.grad)
    # fprop, dgrad, wgrad per layer
    assert seen == ["absent"] * 3 + ["cpu"] * 3
    for got, want in zip(out["cpu"], out[None]):
        assert np.array_equal(bits(got), bits(want))

