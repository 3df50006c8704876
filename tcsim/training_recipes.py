"""Training recipes: how each of a linear layer's three GEMMs runs (no torch needed here).

A linear layer y = x w^T (x: (tokens, in), w: (out, in)) runs three GEMMs per step:

=======  ==================  ============  ===========================  =====================
GEMM     product             K             operand a (role "a")          operand b (role "b")
=======  ==================  ============  ===========================  =====================
fprop    y  = x  @ w^T       in            x   (tokens, in)              w^T (in, out)
dgrad    dx = dy @ w         out           dy  (tokens, out)             w   (out, in)
wgrad    dw = dy^T @ x       tokens        dy^T (out, tokens)            x   (tokens, in)
=======  ==================  ============  ===========================  =====================

Each operand is quantised for *its* GEMM, with scale groups along that GEMM's K (tcsim.quant:
"group" is 1 x g along K for role a and g x 1 along K for role b). So DeepSeek-V3's activation
x, quantised in 1 x 128 tiles along ``in`` for fprop, is re-tiled in 128 x 1 tiles along
``tokens`` for wgrad (the 1x128 -> 128x1 transposition of the paper's Figure 7), and dy is
quantised 1 x 128 along ``out`` for dgrad and 128 x 1 along ``tokens`` for wgrad. Weights use
128 x 128 blocks, which are the same blocks for w^T (fprop) and w (dgrad).

A :class:`GemmSetting` says how one GEMM runs: ``precision`` "fp8" (through tcsim.gemm with a
:class:`tcsim.Recipe` on a modelled datapath), "bf16" (operands rounded to bfloat16 with RNE,
product in float32: the usual high-precision training reference) or "fp32" (plain float32).
A :class:`TrainingRecipe` holds the three settings.
"""

from __future__ import annotations

import functools
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .config import Datapath, Recipe, Scaling, config_error_message
from .errors import ConfigError

GEMMS = ("fprop", "dgrad", "wgrad")
Precision = Literal["fp8", "bf16", "fp32"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GemmSetting(_Frozen):
    """How one GEMM of a linear layer runs.

    precision: "fp8" (simulated), "bf16" or "fp32" (high-precision references, in torch).
    model: preset name ("h100", "b200", "ideal", ...) or TOML model file, for "fp8".
    path: instruction path of the model (None: the model's FP8 -> fp32 path).
    datapath: overrides of that path's Datapath fields, e.g. {"fraction_bits": 16,
        "output_precision": 17} for an accumulator proposal.
    recipe: the tcsim.Recipe of the GEMM (formats, scaling, promotion, epilogue); "fp8" only.
    """

    precision: Precision = "fp8"
    model: str = "h100"
    path: Optional[str] = None
    datapath: dict = Field(default_factory=dict)
    recipe: Optional[Recipe] = None

    @model_validator(mode="after")
    def _consistent(self) -> "GemmSetting":
        if self.precision == "fp8" and self.recipe is None:
            raise ValueError("recipe: an fp8 GEMM needs a tcsim.Recipe")
        if self.precision != "fp8" and self.recipe is not None:
            raise ValueError(f"recipe: a {self.precision} GEMM takes no FP8 recipe")
        unknown = set(self.datapath) - set(Datapath.model_fields)
        if unknown:
            raise ValueError(f"datapath: unknown Datapath field(s) {sorted(unknown)}")
        return self

    def resolved_datapath(self) -> Datapath:
        """The Datapath this GEMM runs on (the model's path with the overrides applied)."""
        if self.precision != "fp8":
            raise ConfigError(f"a {self.precision} GEMM runs in torch, not on a datapath")
        return _resolve(self.model_dump_json(include={"model", "path", "datapath", "recipe"}))

    def label(self) -> str:
        """A short description, e.g. 'fp8 h100 e4m3xe4m3 P128' or 'bf16'."""
        if self.precision != "fp8":
            return self.precision
        r = self.recipe
        extra = "".join(f" {k}={v}" for k, v in sorted(self.datapath.items()))
        acc = "fast" if r.promotion_interval is None else f"P{r.promotion_interval}"
        return f"fp8 {self.model}{extra} {r.a_format}x{r.b_format} {acc}"


@functools.lru_cache(maxsize=256)
def _resolve(key: str) -> Datapath:
    from .mma import resolve_datapath
    s = GemmSetting.model_validate_json(key)
    r = s.recipe
    scale_fmt = None
    if r.scales_in_mma:
        scale_fmt = "ue4m3" if r.a_scaling.granularity == "nvfp4" else "ue8m0"
    dp = resolve_datapath(s.model, r.a_format, r.b_format, "fp32", s.path,
                          scaled=r.scales_in_mma, scale_format=scale_fmt)
    if not s.datapath:
        return dp
    try:
        return dp.replace(**s.datapath)
    except ValidationError as exc:
        raise ConfigError(config_error_message(exc, where="datapath override: ")) from None
    except ConfigError as exc:          # Datapath validation wraps pydantic's errors already
        raise ConfigError(f"datapath override: {exc}") from None


# ---- the named recipes' per-GEMM settings ----------------------------------------------------
_GROUP = Scaling(granularity="group")        # 1 x 128 along K (role a) / 128 x 1 (role b)
_BLOCK = Scaling(granularity="block")        # 128 x 128


def _fp8(recipe: Recipe, model: str = "h100", path: Optional[str] = None,
         datapath: Optional[dict] = None) -> GemmSetting:
    return GemmSetting(precision="fp8", model=model, path=path, datapath=datapath or {},
                       recipe=recipe)


class TrainingRecipe(_Frozen):
    """The three GEMMs of a linear layer (see the module docstring for operands and K).

    name: a label for tables and plots.
    saved_activation: the x that wgrad uses: "input" (the layer's float input, quantised for
        wgrad) or "fp8" (the fprop-quantised x, dequantised and re-quantised along tokens:
        DeepSeek-V3 caches activations in FP8 and re-tiles them in the backward pass, s3.3.3
        and s3.5.2 of the paper). Only meaningful when fprop is fp8.
    """

    name: str = "custom"
    fprop: GemmSetting
    dgrad: GemmSetting
    wgrad: GemmSetting
    saved_activation: Literal["input", "fp8"] = "input"

    @model_validator(mode="after")
    def _consistent(self) -> "TrainingRecipe":
        if self.saved_activation == "fp8" and self.fprop.precision != "fp8":
            raise ValueError("saved_activation: 'fp8' needs an fp8 fprop")
        return self

    def settings(self) -> dict:
        """{"fprop": GemmSetting, "dgrad": ..., "wgrad": ...}."""
        return {g: getattr(self, g) for g in GEMMS}

    def check(self) -> "TrainingRecipe":
        """Resolve every fp8 GEMM's datapath now (ConfigError / UnknownModelError if bad)."""
        for s in self.settings().values():
            if s.precision == "fp8":
                s.resolved_datapath()
        return self

    def replace_gemm(self, gemm: str, **changes) -> "TrainingRecipe":
        """A copy with one GEMM's setting changed (validated)."""
        if gemm not in GEMMS:
            raise ConfigError(f"gemm must be one of {', '.join(GEMMS)}, got {gemm!r}")
        setting = GemmSetting(**(getattr(self, gemm).model_dump() | changes))
        return TrainingRecipe(**(self.model_dump() | {gemm: setting.model_dump()}))

    # ---- named recipes ------------------------------------------------------------------------
    @classmethod
    def bf16(cls) -> "TrainingRecipe":
        """No FP8: bf16 operands, float32 products (the reference of the loss curves)."""
        hp = GemmSetting(precision="bf16")
        return cls(name="bf16", fprop=hp, dgrad=hp, wgrad=hp)

    @classmethod
    def fp32(cls) -> "TrainingRecipe":
        """Plain float32 GEMMs: tcsim.torch.Linear is then torch.nn.Linear."""
        hp = GemmSetting(precision="fp32")
        return cls(name="fp32", fprop=hp, dgrad=hp, wgrad=hp)

    @classmethod
    def deepseek_v3(cls, model: str = "h100", path: Optional[str] = None,
                    datapath: Optional[dict] = None, promotion_interval: int = 128
                    ) -> "TrainingRecipe":
        """DeepSeek-V3 (arXiv 2412.19437 s3.3): all three GEMMs in E4M3 with promotion every
        128; activations and gradients in 1x128 tiles along each GEMM's K (wgrad: 128x1 along
        tokens for both dy and x), weights in 128x128 blocks; x cached in FP8 for wgrad."""
        fprop = Recipe.deepseek_v3(promotion_interval=promotion_interval)
        wgrad = Recipe.deepseek_v3(b_scaling=_GROUP, promotion_interval=promotion_interval)
        return cls(name="deepseek_v3", fprop=_fp8(fprop, model, path, datapath),
                   dgrad=_fp8(fprop, model, path, datapath),
                   wgrad=_fp8(wgrad, model, path, datapath), saved_activation="fp8")

    @classmethod
    def torchao_tensorwise(cls, model: str = "h100", path: Optional[str] = None,
                           datapath: Optional[dict] = None) -> "TrainingRecipe":
        """torchao Float8Linear, tensorwise scaling (its default): E4M3 everywhere, one fp32
        scale per tensor, fast accumulation in fprop only, promotion every 128 in dgrad and
        wgrad (Float8LinearConfig's use_fast_accum per GEMM)."""
        return cls(name="torchao_tensorwise",
                   fprop=_fp8(Recipe.cublas_fast_accum(), model, path, datapath),
                   dgrad=_fp8(Recipe.cublas_split_accum(), model, path, datapath),
                   wgrad=_fp8(Recipe.cublas_split_accum(), model, path, datapath))

    @classmethod
    def te_hybrid_delayed(cls, history: int = 16, model: str = "h100",
                          path: Optional[str] = None, datapath: Optional[dict] = None
                          ) -> "TrainingRecipe":
        """Transformer Engine DelayedScaling(fp8_format=HYBRID): E4M3 x and w, E5M2 gradients,
        per-tensor scales from an amax history of ``history`` steps, fast accumulation in fprop,
        split accumulation (promotion every 128) in dgrad and wgrad (TE's _2X_ACC_* flags)."""
        fwd = Recipe.te_delayed(history=history)
        bwd = Recipe.te_delayed(history=history, a_format="e5m2", promotion_interval=128)
        return cls(name="te_hybrid_delayed", fprop=_fp8(fwd, model, path, datapath),
                   dgrad=_fp8(bwd, model, path, datapath),
                   wgrad=_fp8(bwd, model, path, datapath))

    @classmethod
    def fast_accum(cls, model: str = "h100", path: Optional[str] = None,
                   datapath: Optional[dict] = None, name: Optional[str] = None
                   ) -> "TrainingRecipe":
        """Per-tensor E4M3 scaling with fast accumulation (no promotion) in all three GEMMs:
        the whole K stays in the modelled tensor-core accumulator."""
        s = _fp8(Recipe.cublas_fast_accum(), model, path, datapath)
        return cls(name=name or f"{model}_fast_accum", fprop=s, dgrad=s, wgrad=s)

    @classmethod
    def accumulator_proposal(cls, fraction_bits: int, model: str = "h100",
                             output_precision: Optional[int] = None) -> "TrainingRecipe":
        """fast_accum on ``model``'s FP8 path with ``fraction_bits`` bits kept below the block
        maximum and ``output_precision`` (default fraction_bits + 1, at most 24) significant
        bits in the accumulator: h100 itself is 13 / 14."""
        prec = output_precision if output_precision is not None else min(fraction_bits + 1, 24)
        return cls.fast_accum(model, datapath={"fraction_bits": fraction_bits,
                                               "output_precision": prec},
                              name=f"{model}_f{fraction_bits}_fast_accum")

    @classmethod
    def named(cls, name: str, **kwargs) -> "TrainingRecipe":
        """A named recipe by its name (NAMED lists them)."""
        if name not in NAMED:
            raise ConfigError(f"unknown training recipe {name!r}; named recipes: "
                              f"{', '.join(NAMED)}")
        return getattr(cls, name)(**kwargs)


NAMED = ("bf16", "fp32", "deepseek_v3", "torchao_tensorwise", "te_hybrid_delayed", "fast_accum")
