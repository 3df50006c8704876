"""Arrays between the host and the GPU backend: numpy in, numpy out; CUDA arrays in (CuPy,
PyTorch CUDA tensors, numba device arrays), a CUDA array of the same kind out, without a copy
through host memory."""

from __future__ import annotations

import numpy as np

from ..device import is_cuda_array
from . import cuda


def to_device(x, dtype=None):
    """A numba device array holding ``x``: a view of a CUDA array (no copy; ``dtype`` must then
    be its own), or a copy of a host array (converted to ``dtype`` first when given)."""
    nc = cuda()
    if is_cuda_array(x):
        dev = x if type(x).__name__ == "FakeCUDAArray" else nc.as_cuda_array(x)
        if dtype is not None and np.dtype(dev.dtype) != np.dtype(dtype):
            raise TypeError(f"device array of dtype {dev.dtype}, expected {np.dtype(dtype)}")
        return dev
    arr = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    return nc.to_device(np.ascontiguousarray(arr))


def empty(shape, dtype):
    """An uninitialised device array."""
    return cuda().device_array(tuple(int(s) for s in shape), dtype=np.dtype(dtype))


def to_host(x) -> np.ndarray:
    """A host (numpy) copy of a device array (a numpy array is returned as is)."""
    if isinstance(x, np.ndarray):
        return x
    return x.copy_to_host()


def like(result, template):
    """``result`` (a numba device array) in the kind of ``template``: numpy for a host array,
    else a CuPy array / PyTorch tensor on the template's device sharing result's memory, or the
    numba device array itself."""
    if not is_cuda_array(template):
        return to_host(result)
    module = type(template).__module__.split(".")[0]
    if module == "cupy":
        import cupy
        return cupy.asarray(result)
    if module == "torch":
        import torch
        return torch.as_tensor(result, device=template.device)
    return result
