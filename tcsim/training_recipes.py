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
A :class:`TrainingRecipe` holds the three settings; docs/training.md tabulates the named
recipes GEMM by GEMM with the source each follows.
"""

from __future__ import annotations

import functools
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .datapath import Datapath
from .errors import ConfigError
from .frozen_config import config_error_message
from .recipe import Recipe, Scaling

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
    scale_rule: how the operands' per-tensor scales are computed and applied: "tcsim"
        (tcsim.quant: x divided by RN32(amax / max_finite), the recipe's Scaling as it says),
        "torchao" or "te_delayed" (tcsim.reciprocal_scaling: x multiplied by a quantisation
        scale, torchao's current amax / Transformer Engine's amax history of previous steps
        only). The last two need per-tensor fp32 scaling on both operands, and "te_delayed"
        an ``amax_history`` length in both Scalings ("torchao": none).
    """

    precision: Precision = "fp8"
    model: str = "h100"
    path: Optional[str] = None
    datapath: dict = Field(default_factory=dict)
    recipe: Optional[Recipe] = None
    scale_rule: Literal["tcsim", "torchao", "te_delayed"] = "tcsim"

    @model_validator(mode="after")
    def _consistent(self) -> "GemmSetting":
        if self.precision == "fp8" and self.recipe is None:
            raise ValueError("recipe: an fp8 GEMM needs a tcsim.Recipe")
        if self.precision != "fp8" and self.recipe is not None:
            raise ValueError(f"recipe: a {self.precision} GEMM takes no FP8 recipe")
        unknown = set(self.datapath) - set(Datapath.model_fields)
        if unknown:
            raise ValueError(f"datapath: unknown Datapath field(s) {sorted(unknown)}")
        if self.scale_rule != "tcsim":
            self._check_rule()
        return self

    def _check_rule(self) -> None:
        if self.precision != "fp8":
            raise ValueError(f"scale_rule: {self.scale_rule!r} needs an fp8 GEMM")
        delayed = self.scale_rule == "te_delayed"
        for role in "ab":
            sc = getattr(self.recipe, f"{role}_scaling")
            if sc.granularity != "tensor" or sc.scale_dtype != "fp32":
                raise ValueError(f"scale_rule: {self.scale_rule!r} takes per-tensor fp32 scales, "
                                 f"got {role}_scaling {sc.granularity} {sc.scale_dtype}")
            if delayed != (sc.amax_history is not None):
                raise ValueError(f"scale_rule: {self.scale_rule!r} "
                                 f"{'needs' if delayed else 'takes no'} {role}_scaling.amax_history")
            if not delayed and sc.margin:
                raise ValueError(f"scale_rule: {self.scale_rule!r} takes no margin")

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
        """DeepSeek-V3 (arXiv 2412.19437 s3.3) as DeepGEMM runs it: all three GEMMs in E4M3 with
        promotion every 128; activations and gradients in 1x128 tiles along each GEMM's K
        (wgrad: 128x1 along tokens for both dy and x), weights in 128x128 blocks, fp32 scales
        amax / 448 (s3.3.2). x is cached in FP8 for wgrad and its scales are powers of two in
        both tilings (s3.3.3: "all the scaling factors are round scaled, i.e., integral power
        of 2", so re-tiling 1x128 -> 128x1 adds no error). fprop and dgrad write bf16 (DeepGEMM's
        output), wgrad fp32 (the weight gradient is accumulated in fp32)."""
        x_fprop = Scaling(granularity="group", scale_dtype="pow2")
        fprop = Recipe.deepseek_v3(a_scaling=x_fprop, promotion_interval=promotion_interval,
                                   output="bf16")
        dgrad = Recipe.deepseek_v3(promotion_interval=promotion_interval, output="bf16")
        wgrad = Recipe.deepseek_v3(b_scaling=x_fprop, promotion_interval=promotion_interval)
        return cls(name="deepseek_v3", fprop=_fp8(fprop, model, path, datapath),
                   dgrad=_fp8(dgrad, model, path, datapath),
                   wgrad=_fp8(wgrad, model, path, datapath), saved_activation="fp8")

    @classmethod
    def torchao_tensorwise(cls, model: str = "h100", path: Optional[str] = None,
                           datapath: Optional[dict] = None) -> "TrainingRecipe":
        """torchao 0.18 Float8Linear with its default Float8LinearConfig (tensorwise scaling):
        x and w in E4M3, the gradient dy in E5M2 (torchao's default grad_output dtype), one scale
        per tensor from the current amax with torchao's arithmetic (scale_rule "torchao":
        tcsim.reciprocal_scaling), fast accumulation in fprop only, promotion every 128 in
        dgrad and wgrad (Float8LinearConfig.gemm_config_*.use_fast_accum). Bit for bit the
        same as torchao's own layer under tcsim.torch.emulate (tests/test_torch_recipes.py)."""
        def s(recipe: Recipe) -> GemmSetting:
            return GemmSetting(precision="fp8", model=model, path=path, datapath=datapath or {},
                               recipe=recipe, scale_rule="torchao")
        return cls(name="torchao_tensorwise", fprop=s(Recipe.cublas_fast_accum()),
                   dgrad=s(Recipe.cublas_split_accum(a_format="e5m2")),
                   wgrad=s(Recipe.cublas_split_accum(a_format="e5m2")))

    @classmethod
    def te_hybrid_delayed(cls, history: int = 1024, model: str = "h100",
                          path: Optional[str] = None, datapath: Optional[dict] = None,
                          margin: int = 0) -> "TrainingRecipe":
        """Transformer Engine DelayedScaling(fp8_format=HYBRID) with its defaults
        (amax_history_len 1024, amax_compute_algo "max", margin 0): E4M3 x and w, E5M2
        gradients; each tensor is cast with the scale from the amax history of the *previous*
        steps (scale 1.0 before any), and its current amax is recorded afterwards (scale_rule
        "te_delayed": tcsim.reciprocal_scaling), so a tensor that outgrows its history
        saturates. Fast accumulation in fprop, split accumulation (promotion every 128) in
        dgrad and wgrad (TE's _2X_ACC_FPROP False, _2X_ACC_DGRAD / _2X_ACC_WGRAD True)."""
        fwd = Recipe.te_delayed(history=history, margin=margin)
        bwd = Recipe.te_delayed(history=history, margin=margin, a_format="e5m2",
                                promotion_interval=128)

        def s(recipe: Recipe) -> GemmSetting:
            return GemmSetting(precision="fp8", model=model, path=path, datapath=datapath or {},
                               recipe=recipe, scale_rule="te_delayed")
        return cls(name="te_hybrid_delayed", fprop=s(fwd), dgrad=s(bwd), wgrad=s(bwd))

    @classmethod
    def fast_accum(cls, model: str = "h100", path: Optional[str] = None,
                   datapath: Optional[dict] = None, name: Optional[str] = None,
                   fast_accum_gemms=GEMMS) -> "TrainingRecipe":
        """Per-tensor E4M3 scaling (tcsim.quant's arithmetic) with fast accumulation (no
        promotion: the whole K stays in the modelled tensor-core accumulator) in the GEMMs
        named in ``fast_accum_gemms`` and split accumulation (promotion every 128,
        Recipe.cublas_split_accum) in the others.

        The default, fast accumulation in all three GEMMs, is a study of the accumulator, not a
        framework's recipe: torchao and Transformer Engine use it in fprop only by default
        (``fast_accum_gemms=("fprop",)``), DeepSeek-V3 in none."""
        fast = _gemm_names(fast_accum_gemms, "fast_accum_gemms")
        settings = {g: _fp8(Recipe.cublas_fast_accum() if g in fast
                            else Recipe.cublas_split_accum(), model, path, datapath)
                    for g in GEMMS}
        suffix = "fast_accum" if set(fast) == set(GEMMS) else \
            "fast_accum_" + "_".join(g for g in GEMMS if g in fast) if fast else "split_accum"
        return cls(name=name or f"{model}_{suffix}", **settings)

    @classmethod
    def accumulator_proposal(cls, fraction_bits: int, model: str = "h100",
                             output_precision: Optional[int] = None,
                             fast_accum_gemms=GEMMS) -> "TrainingRecipe":
        """:meth:`fast_accum` on ``model``'s FP8 path with ``fraction_bits`` bits kept below the
        block maximum (h100 itself: 13). The accumulator's output precision (significant bits
        written back, h100: 14) stays the model's unless ``output_precision`` is given:
        fraction_bits alone does not change it. Fast accumulation in all three GEMMs by default
        (an accumulator study; no framework does so by default): ``fast_accum_gemms`` picks
        them, the others promote every 128."""
        dp = {"fraction_bits": fraction_bits}
        label = f"{model}_f{fraction_bits}"
        if output_precision is not None:
            dp["output_precision"] = output_precision
            label += f"_p{output_precision}"
        fast = _gemm_names(fast_accum_gemms, "fast_accum_gemms")
        tail = "fast_accum" if set(fast) == set(GEMMS) else \
            "fast_" + "_".join(g for g in GEMMS if g in fast) if fast else "split_accum"
        return cls.fast_accum(model, datapath=dp, name=f"{label}_{tail}", fast_accum_gemms=fast)

    @classmethod
    def named(cls, name: str, **kwargs) -> "TrainingRecipe":
        """A named recipe by its name (NAMED lists them)."""
        if name not in NAMED:
            raise ConfigError(f"unknown training recipe {name!r}; named recipes: "
                              f"{', '.join(NAMED)}")
        return getattr(cls, name)(**kwargs)


def _gemm_names(gemms, what: str) -> tuple:
    """``gemms`` checked as a collection of distinct GEMM names (a subset of GEMMS)."""
    if isinstance(gemms, str) or not isinstance(gemms, (tuple, list, set, frozenset)):
        raise ConfigError(f"{what}: expected a tuple of GEMM names from {GEMMS}, got {gemms!r}")
    names = tuple(gemms)
    bad = [g for g in names if g not in GEMMS]
    if bad or len(set(names)) != len(names):
        raise ConfigError(f"{what}: GEMM names are {', '.join(GEMMS)} (each at most once), got "
                          f"{names!r}")
    return names


NAMED = ("bf16", "fp32", "deepseek_v3", "torchao_tensorwise", "te_hybrid_delayed", "fast_accum")
