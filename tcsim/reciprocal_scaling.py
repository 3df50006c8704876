"""Per-tensor FP8 casts that multiply by a quantisation scale, as torchao and Transformer Engine do.

:mod:`tcsim.quant` divides x by a *dequantisation* scale s = RN32(amax / max_finite). torchao's
Float8Linear and Transformer Engine (TE) hold a *quantisation* scale S instead, cast RN(x * S) to
FP8 and hand the GEMM the reciprocal of S. The two differ in the last bits of the scale and of
the codes, so each framework's recipe uses its own rule (RN32: IEEE binary32 round to nearest
even; ``max_finite``: 448 for e4m3, 57344 for e5m2).

"torchao" (torchao 0.18 ``torchao/float8/float8_utils.py`` ``amax_to_scale``, tensorwise scaling
with ``round_scales_to_power_of_2=False``, torchao's default):
    amax = max |RN32(x)| (exact); S = RN32(max_finite / max(amax, EPS)) with the division in
    float64 (torchao upcasts amax to float64 first), EPS = 1e-12.
"te_delayed" (TE ``DelayedScaling``: ``amax_compute_algo="max"``, the default scale update
``(fp8_max / amax) / 2 ** margin`` in fp32):
    A = the max of the amax history: the amaxes of the previous steps, at most L of them (the
    current step's amax is recorded *after* its cast, by the caller). S = RN32(max_finite / A)
    * 2^-margin for A > 0; S = 1.0 for A = 0, i.e. before any nonzero amax was recorded (TE
    starts from scale 1.0 and keeps its previous scale when the amax is 0; a nonzero amax that
    has left the history is not remembered here).
Both then cast (torchao's ``to_fp8_saturated``; TE's cast kernel converts with saturation):
    q = RN32(RN32(x) * S), clipped to [-max_finite, max_finite], then RNE to the FP8 format;
    the GEMM's dequantisation scale is RN32(1 / S) (torchao ``scale.reciprocal()``, TE's
    ``scale_inv``).
With delayed scaling x can exceed A: those elements saturate to +-max_finite (the point of the
rule: a step where x grows beyond its history loses them).

The result is a :class:`tcsim.quant.Quantized` (one scale per tensor) that :func:`tcsim.gemm`
takes as a pre-quantised operand. No torch is needed here.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import ConfigError, FormatError, ShapeError
from .formats.catalog import get_format
from .formats.conversion import round_to_format
from .quant import FP8_FORMATS, Quantized
from .recipe import Scaling

__all__ = ["RULES", "TORCHAO_EPS", "quantization_scale", "quantize_reciprocal"]

#: the rules this module implements (tcsim.training_recipes.GemmSetting.scale_rule)
RULES = ("torchao", "te_delayed")
#: torchao.float8.float8_utils.EPS: the smallest amax torchao divides by
TORCHAO_EPS = 1e-12


def quantization_scale(rule: str, fmt: str, amax: float, history=None, length: int = 1,
                       margin: int = 0) -> np.float32:
    """The quantisation scale S of ``rule`` (module docstring) as a float32.

    amax: the current tensor's max |x| ("torchao"). history: previous amaxes, oldest first, and
    length: how many of the newest count ("te_delayed"); margin: TE's margin (>= 0).
    """
    maxf = get_format(fmt).max_finite
    if rule == "torchao":
        return np.float32(np.float64(maxf) / max(float(amax), TORCHAO_EPS))
    if rule == "te_delayed":
        h = np.asarray([] if history is None else history, dtype=np.float64)
        if h.ndim != 1:
            raise ShapeError(f"amax history must be 1-D (oldest first), got shape {h.shape}")
        if not (np.isfinite(h) & (h >= 0)).all():
            raise FormatError("amax history: amaxes are finite and >= 0")
        a = float(h[-length:].max()) if length >= 1 and h.size else 0.0
        if a == 0.0:
            return np.float32(1.0)
        s = np.float32(maxf) / np.float32(a)
        return np.float32(s / np.float32(2.0 ** margin))
    raise ConfigError(f"scale rule must be one of {', '.join(RULES)}, got {rule!r}")


def quantize_reciprocal(x, fmt: str, role: str, rule: str, scaling: Optional[Scaling] = None,
                        history=None) -> Quantized:
    """Quantise a finite 2-D operand with one quantisation scale per tensor by ``rule``.

    x: float32/float64, (M, K) for role "a", (K, N) for role "b". fmt: "e4m3" or "e5m2".
    scaling: the recipe's per-tensor Scaling of this operand (kept in the result; for
    "te_delayed" its ``amax_history`` is the history length L and ``margin`` TE's margin).
    history: "te_delayed" only, the previous amaxes (oldest first).
    Returns a Quantized whose scale is RN32(1 / S) and whose ``amax`` is the current amax.
    """
    scaling = Scaling() if scaling is None else scaling
    if scaling.granularity != "tensor":
        raise ConfigError(f"scale rule {rule!r}: per-tensor scaling only, got "
                          f"{scaling.granularity!r}")
    if fmt not in FP8_FORMATS:
        raise FormatError(f"fmt must be one of {', '.join(FP8_FORMATS)}, got {fmt!r}")
    if role not in ("a", "b"):
        raise ShapeError(f"role must be 'a' or 'b', got {role!r}")
    if rule == "te_delayed" and scaling.amax_history is None:
        raise ConfigError("scale rule 'te_delayed' needs scaling.amax_history (its length)")
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64) or a.ndim != 2:
        raise FormatError(f"x must be a 2-D float32/float64 array, got {a.dtype} {a.shape}")
    x32 = a.astype(np.float32)
    if not np.isfinite(x32).all():
        raise FormatError("x holds NaN/Inf (or values beyond float32): they cannot be scaled")
    amax = float(np.abs(x32).max(initial=0.0))
    s = quantization_scale(rule, fmt, amax, history, scaling.amax_history or 1,
                           int(scaling.margin))
    maxf = get_format(fmt).max_finite
    with np.errstate(over="ignore"):
        q = x32 * s                       # RN32; |q| beyond float32 saturates below anyway
    q = np.clip(q.astype(np.float64), -maxf, maxf)
    values = round_to_format(q, fmt, rounding="rne", overflow="saturate")
    inv = np.float32(np.float32(1.0) / s)
    return Quantized(values=np.ascontiguousarray(values), scales=np.full((1, 1), float(inv)),
                     fmt=fmt, role=role, scaling=scaling, amax=amax)
