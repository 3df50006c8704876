"""One ``torch._scaled_mm`` call on the modelled tensor core: its FP8 codes and scales as
:class:`tcsim.quant.Quantized` operands, the GEMM through :func:`tcsim.gemm`, its epilogue.

torch's convention: ``_scaled_mm(a, b, scale_a, scale_b)`` computes (a * scale_a) @ (b * scale_b)
for FP8 a (M, K) and b (K, N) (b usually column-major: a (N, K) tensor transposed): the scales
are *dequantisation* multipliers, as tcsim.quant's. The codes and scales go to tcsim.gemm
exactly as the caller passed them (nothing is re-quantised).

Scale layouts (the logical shape of each scale tensor; its strides are not checked):

==================  ==========================  ===========================  ================
torch               scale_a (a: (M, K))          scale_b (b: (K, N))           tcsim Scaling
==================  ==========================  ===========================  ================
TensorWise          one element (0-d, (1,), ..)  one element                   "tensor"
RowWise             (M, 1)                       (1, N)                        "channel"
BlockWise1x128      (M, ceil(K/128))             (ceil(K/128), N)              "group", 128
BlockWise128x128    (ceil(M/128), ceil(K/128))   (ceil(K/128), ceil(N/128))   "block", 128
==================  ==========================  ===========================  ================

(the block-wise shapes are those torch's CUDA ``_scaled_mm`` accepts; its CPU kernel takes
tensor-wise and row-wise only). K that is no multiple of 128 is zero-padded for the block-wise
layouts (a zero code adds nothing). MX (BlockWise1x32, e8m0 scales), NVFP4 (BlockWise1x16) and
FP4 operands are not supported.

Accumulation: ``use_fast_accum=True`` runs the whole K as one tensor-core chain, the scales
applied once (tcsim's ``cublas_fast_accum`` recipe); ``False`` promotes the tensor-core partial
into an FP32 accumulator every ``split_interval`` (128) elements of K (``cublas_split_accum``).
That split is a model, not a documented fact: cuBLAS does not document how it accumulates
without CUBLASLT_MATMUL_DESC_FAST_ACCUM; tcsim models it as promotion every 4 k32 wgmma
instructions (docs/hardware.md#promotion), the scheme of CUTLASS's FP8 mainloop and DeepGEMM.
Both use the cublas recipes' epilogue fma(p, sa*sb, acc) ("2d2d") for every scale layout; the
epilogue order of row- and block-wise kernels (torch runs row-wise scaling on sm90 with a
CUTLASS kernel) is not established. Block-wise scales change along K, so they need the split
accumulation (fast accumulation with them: error).

Epilogue: the FP32 result plus ``bias`` (fp32 / bf16 / fp16, added in fp32, RNE: torch's CPU
kernel does the same, cuBLASLt's bias epilogue adds in its fp32 compute type), then rounded
once to ``out_dtype`` (float32: as is; bfloat16 / float16: RNE). FP8 outputs (including
``out_dtype=None`` for _scaled_mm, which means a's FP8 dtype) are not supported, nor is a
``scale_result`` other than 1 (an output scale: cuBLASLt's D scale, for FP8 outputs only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError, ShapeError
from ..gemm import gemm
from ..quant import Quantized
from ..recipe import Recipe, Scaling
from .device import backend, host32

#: torch FP8 dtypes and tcsim's format names
FP8_DTYPES = {torch.float8_e4m3fn: "e4m3", torch.float8_e5m2: "e5m2"}
#: output dtypes the emulated GEMM produces (rounded once from the FP32 result)
OUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BIAS_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: K extent of the block-wise scale layouts
BLOCK = 128
#: torch.nn.functional.ScalingType values (_scaled_mm_v2's recipe integers) -> layout names
SCALING_TYPES = {0: "TensorWise", 1: "RowWise", 2: "BlockWise1x16", 3: "BlockWise1x32",
                 4: "BlockWise1x128", 5: "BlockWise128x128"}
_GRANULARITY = {"TensorWise": "tensor", "RowWise": "channel", "BlockWise1x128": "group",
                "BlockWise128x128": "block"}


class UnsupportedScaledMM(ConfigError, NotImplementedError):
    """A _scaled_mm argument the emulation does not model (a ConfigError and a
    NotImplementedError: a caller may catch either)."""


@dataclass(frozen=True)
class Accumulation:
    """How the emulated GEMMs run: the modelled unit and the split accumulation's interval."""

    model: object = "h100"                 # tcsim.gemm's model: preset, TOML file, GpuModel, ..
    path: Optional[str] = None             # the model's instruction path (None: FP8 -> fp32)
    split_interval: int = BLOCK            # promotion interval of use_fast_accum=False
    device: Optional[str] = None           # tcsim's backend: None, "cpu", "cuda" (see scaled_mm)


def _ceil(n: int, d: int) -> int:
    return -(-n // d)


def _fmt(t: torch.Tensor, name: str) -> str:
    if not isinstance(t, torch.Tensor):
        raise ConfigError(f"{name}: expected a tensor, got {type(t).__name__}")
    if t.dtype not in FP8_DTYPES:
        raise UnsupportedScaledMM(
            f"{name}: dtype {t.dtype} is not supported by tcsim.torch.emulate (FP8 operands: "
            f"{', '.join(map(str, FP8_DTYPES))})")
    if t.dim() != 2:
        raise ShapeError(f"{name}: must be 2-D, got shape {tuple(t.shape)}")
    return FP8_DTYPES[t.dtype]


def _layout_shapes(role: str, m_or_n: int, k: int) -> dict:
    """The logical scale shape of each layout for an operand with m_or_n rows (a) / columns (b)
    (TensorWise: any one-element tensor, checked apart)."""
    nk, nb = _ceil(k, BLOCK), _ceil(m_or_n, BLOCK)
    if role == "a":
        return {"RowWise": (m_or_n, 1), "BlockWise1x128": (m_or_n, nk),
                "BlockWise128x128": (nb, nk)}
    return {"RowWise": (1, m_or_n), "BlockWise1x128": (nk, m_or_n),
            "BlockWise128x128": (nk, nb)}


def infer_layout(scale: torch.Tensor, role: str, m_or_n: int, k: int) -> str:
    """The layout name of ``scale`` for operand ``role`` ("a": (M, K), "b": (K, N)) from its
    shape, as _scaled_mm infers it. Where two layouts have the same shape they mean the same
    scales (e.g. RowWise and BlockWise1x128 for K <= 128), so the first one is taken."""
    name = f"scale_{role}"
    if not isinstance(scale, torch.Tensor):
        raise ConfigError(f"{name}: expected a tensor, got {type(scale).__name__}")
    if scale.numel() == 1:
        return "TensorWise"
    for layout, shape in _layout_shapes(role, m_or_n, k).items():
        if tuple(scale.shape) == shape:
            return layout
    shapes = ", ".join(f"{lay} {shp}" for lay, shp in _layout_shapes(role, m_or_n, k).items())
    raise UnsupportedScaledMM(
        f"{name}: shape {tuple(scale.shape)} ({scale.dtype}) is no scale layout tcsim.torch."
        f"emulate supports for this operand: TensorWise (one element), {shapes}")


def _check_layout(scale: torch.Tensor, layout: str, role: str, m_or_n: int, k: int) -> None:
    name = f"scale_{role}"
    if layout not in _GRANULARITY:
        raise UnsupportedScaledMM(
            f"{name}: scaling {layout} is not supported by tcsim.torch.emulate (supported: "
            f"{', '.join(_GRANULARITY)})")
    if scale.dtype != torch.float32:
        raise UnsupportedScaledMM(f"{name}: {layout} scales must be float32, got {scale.dtype}")
    want = None if layout == "TensorWise" else _layout_shapes(role, m_or_n, k)[layout]
    if (want is None and scale.numel() != 1) or (want is not None and
                                                 tuple(scale.shape) != want):
        raise ShapeError(f"{name}: {layout} scales must have shape "
                         f"{'one element' if want is None else want}, got "
                         f"{tuple(scale.shape)}")


def _scaling(layout: str) -> Scaling:
    gran = _GRANULARITY[layout]
    return Scaling(granularity=gran, group_size=BLOCK) if gran in ("group", "block") \
        else Scaling(granularity=gran)


def _codes(t: torch.Tensor, pad_to: int, role: str) -> np.ndarray:
    """The FP8 codes of ``t`` as float64 values (exact), in logical (row-major) order, K
    zero-padded to ``pad_to``."""
    v = np.array(host32(t), dtype=np.float64, order="C")
    extra = pad_to - (v.shape[1] if role == "a" else v.shape[0])
    if extra:
        v = np.pad(v, ((0, 0), (0, extra)) if role == "a" else ((0, extra), (0, 0)))
    return v


def quantized_operand(t: torch.Tensor, scale: torch.Tensor, layout: str, role: str
                      ) -> Quantized:
    """The caller's FP8 tensor and scales as a tcsim Quantized operand (role "a" (M, K) or
    "b" (K, N)): the codes as values, the scales (float32, exact in float64) in tcsim's compact
    shape, which for every supported layout is torch's logical shape (tensor-wise: (1, 1))."""
    k = t.shape[1] if role == "a" else t.shape[0]
    scaling = _scaling(layout)
    grouped = scaling.granularity in ("group", "block")
    values = _codes(t, _ceil(k, BLOCK) * BLOCK if grouped else k, role)
    s = host32(scale).astype(np.float64)
    s = np.array(s.reshape(1, 1) if layout == "TensorWise" else s, order="C")
    q = Quantized(values=values, scales=s, fmt=FP8_DTYPES[t.dtype], role=role, scaling=scaling,
                  amax=0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        amax = float(np.max(np.abs(q.dequantize()), initial=0.0))   # of the caller's tensor
    return dataclasses.replace(q, amax=amax)


def recipe_for(fmt_a: str, fmt_b: str, layout_a: str, layout_b: str, use_fast_accum: bool,
               split_interval: int) -> Recipe:
    """The tcsim Recipe of one _scaled_mm call: cublas_fast_accum / cublas_split_accum with the
    operands' formats and scale layouts."""
    blockwise = [n for n, lay in (("scale_a", layout_a), ("scale_b", layout_b))
                 if lay.startswith("BlockWise")]
    if use_fast_accum and blockwise:
        raise UnsupportedScaledMM(
            f"use_fast_accum=True with block-wise scales ({', '.join(blockwise)}): the scales "
            f"change along K, so the partial sums must be promoted (use_fast_accum=False)")
    base = Recipe.cublas_fast_accum if use_fast_accum else Recipe.cublas_split_accum
    extra = {} if use_fast_accum else {"promotion_interval": split_interval}
    return base(a_format=fmt_a, b_format=fmt_b, a_scaling=_scaling(layout_a),
                b_scaling=_scaling(layout_b), **extra)


def _check_output(out_dtype, bias: Optional[torch.Tensor], scale_result, n: int):
    if out_dtype not in OUT_DTYPES:
        what = "None (a's FP8 dtype)" if out_dtype is None else str(out_dtype)
        raise UnsupportedScaledMM(
            f"out_dtype: {what} is not supported by tcsim.torch.emulate (supported: "
            f"{', '.join(map(str, OUT_DTYPES))}; FP8 outputs are not modelled)")
    if scale_result is not None:
        if not (isinstance(scale_result, torch.Tensor) and scale_result.numel() == 1
                and float(scale_result) == 1.0):
            raise UnsupportedScaledMM(
                "scale_result: an output scale (cuBLASLt's D scale, for FP8 outputs) is not "
                "supported by tcsim.torch.emulate; pass None")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.dtype not in BIAS_DTYPES:
            raise UnsupportedScaledMM(
                f"bias: dtype {getattr(bias, 'dtype', type(bias).__name__)} is not supported "
                f"(supported: {', '.join(map(str, BIAS_DTYPES))})")
        if bias.numel() != n:
            raise ShapeError(f"bias: must have N = {n} elements, got shape {tuple(bias.shape)}")


def scaled_mm(a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
              bias: Optional[torch.Tensor] = None, scale_result: Optional[torch.Tensor] = None,
              out_dtype: Optional[torch.dtype] = None, use_fast_accum: bool = False, *,
              accumulation: Accumulation = Accumulation(),
              layouts: Optional[tuple] = None) -> torch.Tensor:
    """``torch._scaled_mm``'s result (the module docstring gives the arithmetic) computed by
    tcsim.gemm on ``accumulation``'s model: an (M, N) tensor of ``out_dtype`` on a's device.

    layouts: the scale layout names of a and b (_scaled_mm_v2 states them); None infers them
    from the scale shapes as _scaled_mm does.
    Where: ``accumulation.device`` names tcsim's backend ("cpu", or "cuda": tcsim.cuda); None
    follows a, "cuda" for a CUDA tensor, else tcsim.gemm's default (tcsim.torch.device.backend).
    The codes and scales go to tcsim.gemm as host arrays (tcsim.quant.Quantized holds host
    values), so a CUDA tensor's FP8 codes are copied to the host and, on "cuda", to the GPU
    chunk by chunk; the epilogue runs on the host and the result goes to a's device. The bits
    do not depend on the backend."""
    fmt_a, fmt_b = _fmt(a, "self (a)"), _fmt(b, "mat2 (b)")
    (m, k), (kb, n) = tuple(a.shape), tuple(b.shape)
    if kb != k:
        raise ShapeError(f"a (M, K) = {(m, k)} and b {(kb, n)} cannot be multiplied: b must be "
                         f"(K, N) with K = {k}")
    if k == 0:
        raise ShapeError("a has K = 0: a GEMM needs K >= 1")
    _check_output(out_dtype, bias, scale_result, n)
    if layouts is None:
        layouts = (infer_layout(scale_a, "a", m, k), infer_layout(scale_b, "b", n, k))
    _check_layout(scale_a, layouts[0], "a", m, k)
    _check_layout(scale_b, layouts[1], "b", n, k)
    recipe = recipe_for(fmt_a, fmt_b, layouts[0], layouts[1], bool(use_fast_accum),
                        accumulation.split_interval)
    qa = quantized_operand(a, scale_a, layouts[0], "a")
    qb = quantized_operand(b, scale_b, layouts[1], "b")
    threads = torch.get_num_threads()
    y = gemm(qa, qb, model=accumulation.model, recipe=recipe, path=accumulation.path,
             progress=False, device=backend(accumulation.device, a))
    if torch.get_num_threads() != threads:
        # numba starting its OpenMP threads resets the thread count torch shares (see
        # tcsim.torch.linear): keep torch's own reductions on the caller's thread count
        torch.set_num_threads(threads)
    out = torch.from_numpy(np.asarray(y, dtype=np.float32))
    if bias is not None:
        out = out + bias.detach().reshape(n).to(device="cpu", dtype=torch.float32)
    return out.to(dtype=out_dtype).to(a.device)      # rounded on the host, then moved
