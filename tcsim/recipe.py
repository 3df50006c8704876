"""GEMM recipes: the software around the matrix unit (pydantic, frozen, unknown keys rejected).

A :class:`Scaling` says how one GEMM operand is quantised (granularity, scale format, delayed
scaling); a :class:`Recipe` is an FP8 (or FP4) GEMM as a production kernel runs it: the two
operands' formats and scalings, the promotion of tensor-core partials into FP32, the epilogue
order and the output format (two-level accumulation and fine-grained scaling,
``docs/hardware.md#promotion``). :data:`RECIPE_NAMES` lists the named recipes.
"""

from __future__ import annotations

from typing import Literal, Optional, get_args

from pydantic import Field, model_validator

from .errors import ConfigError
from .frozen_config import FrozenConfig

Granularity = Literal["tensor", "channel", "group", "block", "mx", "nvfp4"]
Epilogue = Literal["deepgemm", "1d1d", "2d1d", "2d2d", "mul_add"]
EPILOGUE_NAMES = get_args(Epilogue)
GemmOutput = Literal["fp32", "bf16"]
GEMM_OUTPUTS = get_args(GemmOutput)


class Scaling(FrozenConfig):
    """How one GEMM operand is quantised (see tcsim.quant for the exact arithmetic).

    granularity, for A = x (M, K) / B = w (K, N):
        "tensor": one scale; "channel": one per row of A / per column of B (per output channel);
        "group": 1 x group_size along K per row of A / group_size x 1 per column of B (DeepSeek-V3
        activations: 1 x 128); "block": group_size x group_size blocks (DeepSeek-V3 weights:
        128 x 128); "mx": OCP MX, 32 consecutive K elements share one E8M0 power-of-two scale;
        "nvfp4": NVIDIA NVFP4, 16 consecutive K elements share one ue4m3 (e4m3) scale, times one
        fp32 scale per tensor (tcsim.quant gives the arithmetic); scales inside the MMA only.
    group_size: K extent of a group/block (128 in DeepSeek-V3; 32 for mx).
    scale_dtype: "fp32" (scale = amax / max_finite in fp32), "pow2" (rounded up to a power of
        two), "ue8m0" (a power of two stored as E8M0; mx always uses it).
    amax_history: delayed scaling (Transformer Engine): the scale comes from the max over the
        last ``amax_history`` amax values (the current one included: TE's own rule, previous
        steps only, is tcsim.reciprocal_scaling's "te_delayed"); tensor granularity only.
    margin: delayed scaling margin: the scale is multiplied by 2^margin.
    """

    granularity: Granularity = "tensor"
    group_size: int = Field(default=128, ge=1, le=65536)
    scale_dtype: Literal["fp32", "pow2", "ue8m0", "ue4m3"] = "fp32"
    amax_history: Optional[int] = Field(default=None, ge=1, le=65536)
    margin: int = Field(default=0, ge=0, le=64)

    @model_validator(mode="after")
    def _consistent(self) -> "Scaling":
        if self.granularity == "mx":
            if self.scale_dtype != "ue8m0":
                raise ValueError("scale_dtype: mx scaling uses ue8m0 scales")
            if self.group_size != 32:
                raise ValueError("group_size: mx scaling shares one scale per 32 elements")
        if self.granularity == "nvfp4":
            if self.scale_dtype != "ue4m3" or self.group_size != 16:
                raise ValueError("scale_dtype: nvfp4 scaling uses ue4m3 scales per 16 elements "
                                 "(scale_dtype='ue4m3', group_size=16)")
        elif self.scale_dtype == "ue4m3":
            raise ValueError("scale_dtype: ue4m3 scales belong to nvfp4 scaling")
        if self.amax_history is not None and self.granularity != "tensor":
            raise ValueError("amax_history: delayed scaling is per-tensor only")
        return self

    def k_group(self, k: int) -> int:
        """K extent over which this operand's scale is constant."""
        return self.group_size if self.granularity in ("group", "block", "mx", "nvfp4") else k


class Recipe(FrozenConfig):
    """An FP8 GEMM as a production kernel runs it (docs/hardware.md#promotion).

    a_format, b_format: FP8 formats of x and w.
    a_scaling, b_scaling: quantisation of each operand.
    promotion_interval: every this many K elements the tensor-core partial sum is promoted into an
        FP32 register (scaled there) and the tensor-core accumulator restarts at 0; a multiple of
        the datapath's block size that divides the scale groups along K. None = fast
        accumulation: the whole K stays in the tensor-core accumulator, scales applied once.
    epilogue: how a partial p is scaled and added into the FP32 accumulator acc, in IEEE FP32
        with a true single-rounding FMA: "deepgemm" fma(sa*sb, p, acc); "1d1d" fma(p*sa, sb, acc);
        "2d1d" fma(p*sb, sa, acc); "2d2d" fma(p, sa*sb, acc); "mul_add" acc + (p*sa)*sb, every
        operation rounded.
    output: "fp32", or "bf16" (RNE from the FP32 accumulator).
    scales_in_mma: the MX scales (ue8m0 per 32 K elements, both operands) go into a block-scaled
        MMA instruction (Blackwell kind::mxf8f6f4: a path with block_scale set) instead of being
        applied at promotion; each promoted partial is then added with unit scales. With
        promotion_interval None the whole K stays in the tensor-core accumulator.
    """

    a_format: Literal["e4m3", "e5m2", "e2m1"] = "e4m3"
    b_format: Literal["e4m3", "e5m2", "e2m1"] = "e4m3"
    a_scaling: Scaling = Scaling()
    b_scaling: Scaling = Scaling()
    promotion_interval: Optional[int] = Field(default=128, ge=1)
    epilogue: Epilogue = "deepgemm"
    output: GemmOutput = "fp32"
    scales_in_mma: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        if self.scales_in_mma:
            grans = {self.a_scaling.granularity, self.b_scaling.granularity}
            if len(grans) != 1 or not grans <= {"mx", "nvfp4"}:
                raise ValueError(f"a_scaling: scales_in_mma takes MX (ue8m0 per 32) or NVFP4 "
                                 f"(ue4m3 per 16) scaling on both operands, not "
                                 f"{sorted(grans)}")
            if "nvfp4" in grans and (self.a_format, self.b_format) != ("e2m1", "e2m1"):
                raise ValueError("a_format: NVFP4 scaling takes e2m1 operands")
            if self.promotion_interval is not None and self.promotion_interval % 32:
                raise ValueError("promotion_interval: a multiple of 32 with scales_in_mma")
            return self
        for name, sc in (("a_scaling", self.a_scaling), ("b_scaling", self.b_scaling)):
            if sc.granularity == "nvfp4":
                raise ValueError(f"{name}: NVFP4 scales are applied inside the MMA only "
                                 f"(scales_in_mma=True, e.g. Recipe.nvfp4())")
        if "e2m1" in (self.a_format, self.b_format):
            raise ValueError("a_format: FP4 (e2m1) operands need scales_in_mma (Recipe.nvfp4, "
                             "Recipe.mxfp4)")
        if self.promotion_interval is None:
            for name, sc in (("a_scaling", self.a_scaling), ("b_scaling", self.b_scaling)):
                if sc.granularity in ("group", "block", "mx"):
                    raise ValueError(f"{name}: fast accumulation (promotion_interval None) needs "
                                     f"scales constant along K, not {sc.granularity!r}")
        else:
            for name, sc in (("a_scaling", self.a_scaling), ("b_scaling", self.b_scaling)):
                if sc.granularity in ("group", "block", "mx") and \
                        sc.group_size % self.promotion_interval:
                    raise ValueError(f"promotion_interval: {self.promotion_interval} does not "
                                     f"divide {name}.group_size {sc.group_size} (a partial sum "
                                     f"must not straddle two scales)")
        return self

    # ---- named recipes ------------------------------------------------------------------------
    @classmethod
    def named(cls, name: str, **overrides) -> "Recipe":
        """The named recipe ``name`` (one of :data:`RECIPE_NAMES`, e.g. "deepseek_v3") with
        some fields overridden; ConfigError for any other name."""
        if not isinstance(name, str) or name not in RECIPE_NAMES:
            raise ConfigError(f"unknown recipe {name!r}; named recipes: {', '.join(RECIPE_NAMES)}")
        return getattr(cls, name)(**overrides)

    @classmethod
    def deepseek_v3(cls, **overrides) -> "Recipe":
        """DeepSeek-V3 (arXiv 2412.19437 s3.3): E4M3 everywhere, activations per 1x128 tile,
        weights per 128x128 block, fp32 scales = amax/448, promotion every N_C = 128 elements,
        DeepGEMM's epilogue fma(sa*sb, p, acc). Output fp32 (DeepGEMM writes bf16: pass
        output="bf16")."""
        base = dict(a_scaling=Scaling(granularity="group"), b_scaling=Scaling(granularity="block"),
                    promotion_interval=128, epilogue="deepgemm")
        return cls(**(base | overrides))

    @classmethod
    def cublas_fast_accum(cls, **overrides) -> "Recipe":
        """cuBLASLt with CUBLASLT_MATMUL_DESC_FAST_ACCUM (PyTorch _scaled_mm(use_fast_accum=True)):
        per-tensor scales, the whole K in the tensor-core accumulator."""
        base = dict(a_scaling=Scaling(), b_scaling=Scaling(), promotion_interval=None,
                    epilogue="2d2d")
        return cls(**(base | overrides))

    @classmethod
    def cublas_split_accum(cls, **overrides) -> "Recipe":
        """cuBLASLt without fast accumulation: per-tensor scales, promotion into FP32 every 4 k32
        wgmma = 128 elements (docs/hardware.md#promotion)."""
        base = dict(a_scaling=Scaling(), b_scaling=Scaling(), promotion_interval=128,
                    epilogue="2d2d")
        return cls(**(base | overrides))

    @classmethod
    def te_delayed(cls, history: int = 1024, margin: int = 0, **overrides) -> "Recipe":
        """Transformer Engine delayed scaling (forward GEMM): per-tensor scales from the max of an
        amax history, E4M3 activations and weights, fast accumulation."""
        sc = Scaling(amax_history=history, margin=margin)
        base = dict(a_scaling=sc, b_scaling=sc, promotion_interval=None, epilogue="2d2d")
        return cls(**(base | overrides))

    @classmethod
    def mxfp8(cls, **overrides) -> "Recipe":
        """OCP MXFP8: one E8M0 scale per 32 K-elements of each operand; each 32-element partial
        is scaled and accumulated in FP32 (promotion every 32)."""
        mx = Scaling(granularity="mx", group_size=32, scale_dtype="ue8m0")
        base = dict(a_scaling=mx, b_scaling=mx, promotion_interval=32, epilogue="deepgemm")
        return cls(**(base | overrides))

    @classmethod
    def mxfp8_native(cls, **overrides) -> "Recipe":
        """OCP MXFP8 with the scales inside the MMA (Blackwell tcgen05 kind::mxf8f6f4): the
        whole K accumulates in the tensor core's fp32 accumulator; needs a block-scaled path
        (b200 'mxf8f6f4', or a proposal with block_scale = 'exponent')."""
        mx = Scaling(granularity="mx", group_size=32, scale_dtype="ue8m0")
        base = dict(a_scaling=mx, b_scaling=mx, promotion_interval=None, epilogue="deepgemm",
                    scales_in_mma=True)
        return cls(**(base | overrides))

    @classmethod
    def mxfp4(cls, **overrides) -> "Recipe":
        """OCP MXFP4: e2m1 elements, one ue8m0 scale per 32, scales inside the MMA (Blackwell
        kind::mxf4 / mxf4nvf4, k64), the whole K in the tensor-core accumulator."""
        mx = Scaling(granularity="mx", group_size=32, scale_dtype="ue8m0")
        base = dict(a_format="e2m1", b_format="e2m1", a_scaling=mx, b_scaling=mx,
                    promotion_interval=None, epilogue="deepgemm", scales_in_mma=True)
        return cls(**(base | overrides))

    @classmethod
    def nvfp4(cls, **overrides) -> "Recipe":
        """NVIDIA NVFP4: e2m1 elements, one ue4m3 scale per 16 inside the MMA (kind::mxf4nvf4)
        and one fp32 scale per tensor applied to the accumulator in the epilogue
        (fma(sa * sb, acc, 0) in fp32)."""
        nv = Scaling(granularity="nvfp4", group_size=16, scale_dtype="ue4m3")
        base = dict(a_format="e2m1", b_format="e2m1", a_scaling=nv, b_scaling=nv,
                    promotion_interval=None, epilogue="deepgemm", scales_in_mma=True)
        return cls(**(base | overrides))


# The recipes Recipe.named (and ``tcsim gemm --recipe``, ``tcsim.gemm(recipe="...")``) knows.
RECIPE_NAMES = ("deepseek_v3", "cublas_fast_accum", "cublas_split_accum", "te_delayed", "mxfp8",
                "mxfp8_native", "mxfp4", "nvfp4")
