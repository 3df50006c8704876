"""Where a tcsim.torch layer's simulated GEMMs run, and its tensors to and from tcsim.gemm.

``device`` (a layer's ``gemm_device``, convert()'s ``device``) is tcsim.gemm's: None follows the
tensors (tcsim.gemm then reads TCSIM_DEVICE, else runs on the GPU for CUDA arrays and on the CPU
for numpy), "cpu" or "cuda" names the backend. A CUDA tensor goes to tcsim.gemm as itself (a
CUDA array: it exposes ``__cuda_array_interface__``), with no host copy, unless the device is
"cpu"; a CPU tensor goes as a numpy array, as before. Results come back as tensors on the
input's device: ``torch.as_tensor`` on a CUDA array wraps it without a copy.

:func:`backend` names the backend outright, for callers that hand tcsim.gemm host arrays only
(tcsim.torch.emulate's pre-quantised FP8 operands): there None follows the tensor, as it does
for the layers.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..device import resolve_device
from ..errors import ConfigError

DEVICES = ("cpu", "cuda")


def check_device(device: Optional[str], what: str = "device") -> Optional[str]:
    """``device`` when it is None, "cpu" or "cuda"; else ConfigError naming ``what``."""
    if device is not None and device not in DEVICES:
        raise ConfigError(f"{what}: expected None, 'cpu' or 'cuda', got {device!r}")
    return device


def gemm_kwargs(device: Optional[str]) -> dict:
    """tcsim.gemm's keyword for ``device``: none at all for None (tcsim.gemm decides)."""
    return {} if device is None else {"device": device}


def is_cuda_array(obj) -> bool:
    """Whether ``obj`` is a CUDA array: it exposes ``__cuda_array_interface__`` (a CPU torch
    tensor's attribute raises, so hasattr is False for it)."""
    return hasattr(obj, "__cuda_array_interface__")


def stays_on_gpu(t: torch.Tensor, device: Optional[str]) -> bool:
    """Whether ``t`` goes to tcsim.gemm as a CUDA array: it is a CUDA tensor and the GEMMs are
    not sent to the CPU."""
    return t.is_cuda and device != "cpu"


def backend(device: Optional[str], t: torch.Tensor) -> str:
    """The backend, "cpu" or "cuda", that simulates a GEMM of tensor ``t`` whose operands reach
    tcsim.gemm as host arrays: ``device`` when named; for None "cuda" when ``t`` is a CUDA
    tensor, else tcsim.gemm's own choice for host arrays (tcsim.device.resolve_device:
    TCSIM_DEVICE, else "cpu")."""
    if device is None and t.is_cuda:
        return "cuda"
    return resolve_device(device)


def host32(t: torch.Tensor) -> np.ndarray:
    """``t`` as a float32 numpy array (copied to the host when it is on a GPU)."""
    return t.detach().to(torch.float32).cpu().numpy()


def gemm_operand(t: torch.Tensor, device: Optional[str]):
    """``t`` as tcsim.gemm takes it: a contiguous float32 CUDA tensor (detached: a tensor that
    requires grad refuses to export its CUDA array interface) when it stays on the GPU, else a
    float32 numpy array."""
    if stays_on_gpu(t, device):
        return t.detach().to(torch.float32).contiguous()
    return host32(t)


def pad_k_cuda(a: torch.Tensor, b: torch.Tensor, multiple: int):
    """Zero-pad K (a's axis 1, b's axis 0) to a multiple on the tensors' device, as
    tcsim.torch._gemms.pad_operands does for numpy operands (zeros add nothing to the
    products and change no amax)."""
    extra = -a.shape[1] % multiple
    if not extra:
        return a, b
    # F.pad's widths run from the last axis: (left, right) of axis -1, then of axis -2
    return (torch.nn.functional.pad(a, (0, extra)),
            torch.nn.functional.pad(b, (0, 0, 0, extra)))


def to_tensor(y, like: torch.Tensor) -> torch.Tensor:
    """A GEMM result (numpy, or a CUDA array) as a float32 tensor on ``like``'s device: a CUDA
    array is wrapped in place, a numpy array shared on the CPU (torch.from_numpy) or copied to
    the GPU."""
    if isinstance(y, torch.Tensor) or is_cuda_array(y):
        return torch.as_tensor(y, device=like.device).to(torch.float32)
    y = torch.from_numpy(np.asarray(y, dtype=np.float32))
    return y if like.device.type == "cpu" else y.to(like.device)
