"""tests/helpers.bits: the unsigned view of each input's own width, never a width change."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from helpers import bits


@pytest.mark.parametrize("value,dtype,want", [
    (np.float16(-1.5), np.uint16, 0xBE00),
    (np.float32(-1.5), np.uint32, 0xBFC00000),
    (np.float64(-1.5), np.uint64, 0xBFF8000000000000),
    (-1.5, np.uint64, 0xBFF8000000000000),                     # a Python float is float64
    (np.array(-1.5, ml_dtypes.bfloat16), np.uint16, 0xBFC0),
    (np.array(-1.5, ml_dtypes.float8_e4m3fn), np.uint8, 0xBC),
    (np.int16(-1), np.uint16, 0xFFFF),
])
def test_scalar_bits(value, dtype, want):
    got = bits(value)
    assert got.dtype == dtype and got.shape == () and int(got) == want


def test_arrays_keep_their_shape_and_width():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]      # not contiguous
    got = bits(x)
    assert got.dtype == np.uint32 and got.shape == (3, 2)
    assert got[1, 1] == np.float32(6).view(np.uint32)
    # 1.0 + 2^-30 rounds to 1.0 in float32: a cast before the view would hide the difference
    wide = np.array([1.0 + 2.0 ** -30])
    assert (bits(wide) != bits(np.array([1.0]))).all()
    assert bits(wide).dtype == np.uint64


@pytest.mark.parametrize("bad", [True, 1j, np.array(["a"]), object()])
def test_no_bit_view_raises(bad):
    with pytest.raises(TypeError, match="bits"):
        bits(bad)


def test_torch_tensors():
    torch = pytest.importorskip("torch")
    t = torch.tensor([[-1.5, 2.0]], dtype=torch.bfloat16, requires_grad=True)
    got = bits(t)
    assert got.dtype == np.uint16 and got.tolist() == [[0xBFC0, 0x4000]]
    assert bits(torch.tensor(-1.5, dtype=torch.float64)) == 0xBFF8000000000000
    assert bits(torch.tensor([-1.5], dtype=torch.float8_e4m3fn)).tolist() == [0xBC]
    f32 = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()    # not contiguous
    assert np.array_equal(bits(f32), f32.numpy().view(np.uint32))
    with pytest.raises(TypeError, match="bits"):
        bits(torch.tensor([True]))


def test_device_arrays_are_copied_to_the_host():
    class FakeDeviceArray:                  # the one method bits uses of a numba device array
        def copy_to_host(self):
            return np.array([-1.5], np.float32)
    assert bits(FakeDeviceArray()).tolist() == [0xBFC00000]


def test_numba_device_arrays():
    pytest.importorskip("numba.cuda.extending", reason="the GPU backend needs numba-cuda")
    import tcsim.cuda
    device = tcsim.cuda.cuda().to_device(np.array([[-1.5, 2.0]], np.float32))
    got = bits(device)
    assert got.dtype == np.uint32 and got.tolist() == [[0xBFC00000, 0x40000000]]
