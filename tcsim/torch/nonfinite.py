"""NaN and Inf in a tcsim.torch.Linear's GEMM operands: raise, or propagate as the hardware does.

tcsim.quant rejects NaN/Inf (a scale cannot be computed from them), while FP8 hardware carries
them through and fp16 training with a GradScaler relies on seeing an Inf gradient. A layer's
``nonfinite`` mode says what happens when an operand of one of its GEMMs holds NaN or +-Inf:

* ``"propagate"`` (default, what a torch.nn.Linear user expects): an FP8 GEMM runs on the
  modelled unit with the non-finite entries carried into FP8 (:func:`quantize_around`): every finite
  entry is quantised exactly as tcsim.quant does with the non-finite entries counted as 0 in
  the amaxes (scales from the finite values), and each non-finite entry becomes the FP8
  format's own special value -- NaN stays NaN, +-Inf becomes +-Inf in e5m2 and NaN in e4m3
  (E4M3FN has no infinity: OCP's non-saturating conversion gives NaN; a saturating one, as
  torch's cast, gives +-448 and would hide it). This is a model of one choice, not of every
  library: a quantiser whose amax includes the NaN/Inf (torch.amax) gets a NaN or zero scale
  and makes the whole scale group NaN, not just the entries. The MX/NVFP4 element
  formats (e2m1, e2m3, e3m2) have no NaN or Inf at all: there the entry is carried as NaN, a
  value such hardware could not receive (no FP4/FP6 code would hold it). tcsim.gemm then runs on
  these pre-quantised operands and its datapath propagates the specials per IEEE 754 (NaN times
  anything, Inf times 0 and Inf - Inf are NaN; Inf times a finite non-zero value is Inf). So an
  output is non-finite where a non-finite entry entered its dot product, with the value the
  modelled datapath gives. The tensor's amax is NaN (Inf) and is not added to a delayed-scaling
  history, and the GEMM adds no GemmStats row. Such a GEMM's operands are quantised on the
  host (a layer on CUDA tensors with ``gemm_device=None`` runs it on the CPU backend, which
  gives the GPU backend's bits). bf16/fp32 GEMMs run in torch, which propagates per IEEE too.
* ``"raise"``: a :class:`tcsim.FormatError` naming the layer, the GEMM, the tensor (x: the
  layer's input, w: its weight, dy: grad_output) and the first bad entry.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError, FormatError
from ..quant import Quantized, quantize

MODES = ("propagate", "raise")

# what each GEMM operand is, for the messages (tensor name -> words)
DESCRIPTIONS = {"x": "x (the layer's input, as (tokens, in_features))", "w": "w (the weight)",
                "dy": "dy (grad_output, the gradient of the layer's output, as (tokens, "
                      "out_features))"}


def check_mode(mode: str) -> str:
    """``mode`` when it is one of MODES; else ConfigError."""
    if mode not in MODES:
        raise ConfigError(f"nonfinite: expected 'propagate' or 'raise', got {mode!r}")
    return mode


def all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of ``t`` is finite (an empty tensor is)."""
    return bool(torch.isfinite(t).all())


def raise_nonfinite(t: torch.Tensor, tensor: str, gemm: str, layer: str,
                    transposed: bool = False) -> None:
    """FormatError naming the first NaN/Inf of ``t`` (operand ``tensor`` of ``gemm``, in the
    tensor's own layout: ``transposed`` when the operand is the tensor's transpose)."""
    bad = torch.nonzero(~torch.isfinite(t))[0].tolist()
    value = float(t[tuple(bad)])
    if transposed:
        bad = bad[::-1]
    where = f"layer {layer!r}" if layer else "an unnamed layer"
    raise FormatError(f"tcsim.torch.Linear ({where}): {DESCRIPTIONS[tensor]} holds a "
                      f"non-finite value in the {gemm} GEMM: {tensor}[{', '.join(map(str, bad))}]"
                      f" = {value} (nonfinite='raise'; nonfinite='propagate' carries NaN/Inf "
                      f"through the GEMM as the hardware does)")


def _special(x: np.ndarray, fmt: str) -> np.ndarray:
    """The value each non-finite entry of ``x`` becomes (as float64): NaN stays NaN; +-Inf
    is +-Inf in e5m2 and NaN in formats without an infinity (e4m3; FP4/FP6: module docstring)."""
    if fmt == "e5m2":
        return x.astype(np.float64)
    return np.full(x.shape, np.nan)


def quantize_around(x: np.ndarray, fmt: str, scaling, role: str,
                    amax_history: Optional[np.ndarray] = None) -> Quantized:
    """``x`` (2-D float32 with NaN/Inf) quantised as the module docstring says: the finite
    entries as tcsim.quant.quantize quantises x with the non-finite ones set to 0, the others
    as the format's NaN/Inf. ``amax`` is NaN when x holds a NaN, else Inf."""
    bad = ~np.isfinite(x)
    q = quantize(np.where(bad, np.float32(0), x), fmt, scaling, role, amax_history=amax_history)
    values = np.array(q.values, dtype=np.float64)
    values[bad] = _special(x[bad], fmt)
    amax = float("nan") if np.isnan(x).any() else float("inf")
    return Quantized(values=values, scales=q.scales, fmt=q.fmt, role=q.role, scaling=q.scaling,
                     amax=amax, global_scale=q.global_scale)
