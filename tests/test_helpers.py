"""The tests' shared helpers: tests/helpers.bits (the unsigned view of each input's own width,
never a width change), the route recorder, the thread-count check, and tests/strategies.py's
reading of a config field's own values."""

from __future__ import annotations

import typing

import ml_dtypes
import numpy as np
import pytest

from helpers import (
    assert_same_bits_whatever_the_thread_count,
    bits,
    describe_routes,
    recorded_routes,
)
from strategies import literal_values, mode_values


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


def test_recorded_routes_name_the_kernel_that_ran():
    """tcsim.mma on the h100 FP8 path runs the fused tile; a lowered path records its chain,
    then its inner instruction's route; the spy is gone after the block."""
    import importlib

    from tcsim import mma
    from tcsim.route import route
    a, b = np.ones((2, 32)), np.ones((32, 3))
    with recorded_routes() as routes:
        mma(a, b, model="h100", a_format="e4m3", b_format="e4m3")
    assert [r.kernel.value for r in routes] == ["fused"]
    assert describe_routes(routes) == "kernel route: fused (" + ", ".join(
        f"{name}={value}" for name, value in routes[0]._asdict().items() if name != "kernel") + ")"
    with recorded_routes() as routes:
        mma(a, b, np.zeros((2, 3), np.float16), model="h100", path="mma.sync",
            a_format="e4m3", b_format="e4m3", acc="fp16")
    assert routes[0].kernel.value == "lowered" and len(routes) >= 2
    assert " -> " in describe_routes(routes)
    assert importlib.import_module("tcsim.mma").route is route
    assert describe_routes([]) == "kernel route: none recorded"


def test_thread_count_check_fails_on_different_bits():
    """The check is not blind: a computation whose result follows numba's thread count fails
    it (on a machine with more than one numba thread), one that does not passes."""
    import numba
    assert_same_bits_whatever_the_thread_count(lambda: np.float32(1.5))
    if numba.get_num_threads() < 2:
        pytest.skip("one numba thread: the two runs cannot differ")
    with pytest.raises(AssertionError, match="differ between"):
        assert_same_bits_whatever_the_thread_count(
            lambda: np.float32(numba.get_num_threads()))


def test_literal_values_read_the_config_and_exclusions_are_checked():
    from tcsim.datapath import Datapath, TermRounding
    from tcsim.recipe import Scaling
    assert literal_values(Datapath, "term_rounding") == typing.get_args(TermRounding)
    assert "ue4m3" in literal_values(Scaling, "scale_dtype")
    assert mode_values(Datapath, "overflow", {"inf": "a reason"}) == ("ieee", "saturate")
    with pytest.raises(ValueError, match="not among its values"):
        mode_values(Datapath, "overflow", {"infinity": "a mode the field does not have"})
    with pytest.raises(ValueError, match="give no reason"):
        mode_values(Datapath, "overflow", {"inf": " "})
    with pytest.raises(TypeError, match="not a Literal field"):
        literal_values(Datapath, "block_size")
