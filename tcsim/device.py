"""Which device runs a simulation: ``device=`` on tcsim.mma / tcsim.gemm, the ``TCSIM_DEVICE``
environment variable, and the arrays themselves (numba-free; the GPU backend is tcsim.cuda).

- ``device="cpu"``: the numba CPU kernels (host arrays only);
- ``device="cuda"``: the numba-cuda kernels (tcsim.cuda). Host (numpy) inputs are copied to the
  GPU and the result comes back as a numpy array, so one script runs both ways (and under
  numba's CUDA simulator); CUDA arrays (CuPy arrays, PyTorch CUDA tensors, numba device
  arrays: anything with ``__cuda_array_interface__``) stay on the GPU and the result is a CUDA
  array of the same kind;
- ``device=None`` (the default): "cuda" when any input is a CUDA array, else ``TCSIM_DEVICE``
  when set, else "cpu".
"""

from __future__ import annotations

import os
from typing import Optional

from .errors import DeviceError

DEVICES = ("cpu", "cuda")
ENV_VAR = "TCSIM_DEVICE"


def is_cuda_array(x) -> bool:
    """True for an array that lives on a CUDA device: it exposes ``__cuda_array_interface__``
    (CuPy, PyTorch CUDA tensors, numba device arrays), or it is a device array of numba's CUDA
    simulator (which stands for one)."""
    if hasattr(x, "__cuda_array_interface__"):
        return True
    return type(x).__name__ == "FakeCUDAArray"


def check_device(device: str, what: str = "device") -> str:
    """``device`` itself when it names a device (case-insensitive), else DeviceError."""
    name = str(device).strip().lower()
    if name not in DEVICES:
        raise DeviceError(f"{what}: unknown device {device!r}; choose one of {DEVICES}")
    return name


def resolve_device(device: Optional[str], *arrays) -> str:
    """The device that runs a call given ``device=`` and its array arguments (None entries are
    skipped): see the module docstring. CUDA arrays with device="cpu" raise DeviceError (copy
    them to the host first: the CPU kernels read host memory)."""
    on_gpu = [x for x in arrays if x is not None and is_cuda_array(x)]
    if device is not None:
        name = check_device(device)
        if name == "cpu" and on_gpu:
            raise DeviceError("device='cpu' given CUDA arrays: copy them to the host first "
                              "(e.g. .get() / .cpu().numpy()), or use device='cuda'")
        return name
    if on_gpu:
        return "cuda"
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return check_device(env, what=ENV_VAR)
    return "cpu"
