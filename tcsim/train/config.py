"""Training-run configuration: a TOML file validated by pydantic (no torch needed here).

```toml
name = "fp8-training"
[model]                    # a character-level GPT
n_layer = 2
d_model = 128
n_head = 4
seq_len = 128
[data]
corpus_bytes = 1_000_000   # of the standard library's own .py files (no download)
val_fraction = 0.1
[train]
steps = 300
batch_size = 8             # sequences per step: batch_size * seq_len tokens (1024 here)
lr = 1.5e-3
warmup = 20                # linear warm-up steps, then cosine decay to lr / 10
weight_decay = 0.1
seed = 0                   # the same initial weights and batches for every run
seeds = 1                  # train every run with seeds seed, seed + 1, ... (paired by seed)
eval_every = 25            # validation loss every this many steps (and at the end)
eval_batches = 4
checkpoint_every = 25
stats_every = 50           # per-GEMM error statistics every this many steps (0: none)
threads = 1                # torch threads per run (the same bits need the same count)
device = "cpu"             # where the simulated GEMMs run: "cpu" or "cuda" (default: TCSIM_DEVICE,
                           # else the CPU); "cuda" also trains on torch's GPU when torch has one
[grid]                     # every recipe on every model, side by side
recipes = ["bf16", "deepseek_v3", "torchao_tensorwise"]
models = ["h100"]
[[runs]]                   # and/or single runs
recipe = "accumulator_proposal"
fraction_bits = 16
[study]                    # each run's final validation loss against this run's, seed by seed
reference = "bf16"         # (tcsim.train.study: mean gap, 95% CI, worse in k of n seeds)
```
Recipes: the names of tcsim.torch.TrainingRecipe (bf16, fp32, deepseek_v3, torchao_tensorwise,
te_hybrid_delayed, fast_accum) and "accumulator_proposal" (TrainingRecipe.accumulator_proposal:
fast accumulation in all three GEMMs with ``fraction_bits`` kept below the block maximum; the
output precision stays the model's (h100: 14 bits) unless ``output_precision`` gives it, as
a study of the accumulator width usually does: ``output_precision = fraction_bits + 1``).
``only = "wgrad"`` runs one GEMM as the recipe says and the other two in bf16 (which GEMM is
sensitive); ``datapath = {...}`` overrides datapath fields.

A run's label (its name in tables and plots) is ``name`` when given, else built from the recipe,
model and overrides (e.g. "f3 h100 p4 wgrad-only"); with ``train.seeds`` > 1 each run is trained
once per seed and the tables have a ``seed`` column.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError, TcsimError
from ..frozen_config import config_error_message
from ..tomlfile import read_toml

RECIPES = ("bf16", "fp32", "deepseek_v3", "torchao_tensorwise", "te_hybrid_delayed",
           "fast_accum", "accumulator_proposal")
RecipeName = Literal["bf16", "fp32", "deepseek_v3", "torchao_tensorwise", "te_hybrid_delayed",
                     "fast_accum", "accumulator_proposal"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelConfig(_Strict):
    n_layer: int = Field(default=2, ge=1, le=48)
    d_model: int = Field(default=128, ge=8, le=8192)
    n_head: int = Field(default=4, ge=1, le=128)
    seq_len: int = Field(default=128, ge=2, le=8192)
    mlp_ratio: int = Field(default=4, ge=1, le=16)

    @model_validator(mode="after")
    def _heads(self) -> "ModelConfig":
        if self.d_model % self.n_head:
            raise ValueError(f"n_head: {self.n_head} does not divide d_model {self.d_model}")
        return self


class DataConfig(_Strict):
    corpus_bytes: int = Field(default=1_000_000, ge=10_000)
    val_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)


class TrainConfig(_Strict):
    steps: int = Field(default=300, ge=1)
    batch_size: int = Field(default=8, ge=1)
    lr: float = Field(default=1.5e-3, gt=0.0)
    warmup: int = Field(default=20, ge=0)
    weight_decay: float = Field(default=0.1, ge=0.0)
    seed: int = Field(default=0, ge=0)
    eval_every: int = Field(default=25, ge=1)
    eval_batches: int = Field(default=4, ge=1)
    checkpoint_every: int = Field(default=25, ge=1)
    stats_every: int = Field(default=50, ge=0)
    seeds: int = Field(default=1, ge=1, le=64)
    threads: int = Field(default=1, ge=1, le=256)
    device: Optional[Literal["cpu", "cuda"]] = None


class RunSpec(_Strict):
    """One training run: a recipe on a model (see the module docstring)."""

    recipe: RecipeName
    model: str = "h100"
    path: Optional[str] = None
    fraction_bits: Optional[int] = Field(default=None, ge=0, le=48)
    output_precision: Optional[int] = Field(default=None, ge=2, le=48)
    datapath: dict = Field(default_factory=dict)
    only: Optional[Literal["fprop", "dgrad", "wgrad"]] = None
    name: Optional[str] = None

    @model_validator(mode="after")
    def _consistent(self) -> "RunSpec":
        if (self.recipe == "accumulator_proposal") != (self.fraction_bits is not None):
            raise ValueError("fraction_bits: required by recipe 'accumulator_proposal' and only "
                             "meaningful there")
        if self.output_precision is not None and self.recipe != "accumulator_proposal":
            raise ValueError("output_precision: only meaningful with recipe "
                             "'accumulator_proposal' (elsewhere: datapath = "
                             "{output_precision = ...})")
        if self.recipe in ("bf16", "fp32") and (self.datapath or self.only or self.path):
            raise ValueError(f"recipe: {self.recipe} runs no FP8 GEMM (no datapath, path or "
                             f"only)")
        return self

    def label(self) -> str:
        """The run's name in tables and plots."""
        if self.name:
            return self.name
        if self.recipe in ("bf16", "fp32"):
            return self.recipe
        parts = [self.recipe if self.recipe != "accumulator_proposal"
                 else f"f{self.fraction_bits}", self.model]
        if self.output_precision is not None:
            parts.append(f"p{self.output_precision}")
        parts += [f"{k}={v}" for k, v in sorted(self.datapath.items())]
        if self.path:
            parts.append(self.path)
        if self.only:
            parts.append(f"{self.only}-only")
        return " ".join(parts)

    def training_recipe(self):
        """The tcsim.torch.TrainingRecipe of this run (imports torch-free recipes only)."""
        from ..training_recipes import TrainingRecipe
        kw = dict(model=self.model, path=self.path, datapath=dict(self.datapath) or None)
        if self.recipe in ("bf16", "fp32"):
            recipe = TrainingRecipe.named(self.recipe)
        elif self.recipe == "accumulator_proposal":
            dp = {"fraction_bits": self.fraction_bits}
            if self.output_precision is not None:
                dp["output_precision"] = self.output_precision
            recipe = TrainingRecipe.fast_accum(self.model, self.path, dp | self.datapath)
        else:
            recipe = getattr(TrainingRecipe, self.recipe)(**kw)
        if self.only:
            hp = {"precision": "bf16", "recipe": None, "datapath": {}, "path": None}
            for g in ("fprop", "dgrad", "wgrad"):
                if g != self.only:
                    recipe = recipe.replace_gemm(g, **hp)
            recipe = TrainingRecipe(**(recipe.model_dump() | {"saved_activation": "input"}))
        return TrainingRecipe(**(recipe.model_dump() | {"name": self.label()})).check()


class GridAxes(_Strict):
    recipes: list[RecipeName] = Field(default_factory=list)
    models: list[str] = Field(default_factory=lambda: ["h100"], min_length=1)


class StudyConfig(_Strict):
    """The paired comparison of tcsim.train.study: every run against ``reference`` (a run's
    label), seed by seed."""

    reference: Optional[str] = None


class Config(_Strict):
    """A grid of training runs of one model on one corpus."""

    name: str = "training"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    grid: GridAxes = GridAxes()
    runs: list[RunSpec] = Field(default_factory=list)
    study: StudyConfig = StudyConfig()

    @model_validator(mode="after")
    def _has_runs(self) -> "Config":
        if not self.run_specs():
            raise ValueError("runs: no runs (give [grid] recipes or [[runs]] entries)")
        labels = [r.label() for r in self.run_specs()]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"runs: the same run twice: {', '.join(dup)}")
        ref = self.study.reference
        if ref is not None and ref not in labels:
            raise ValueError(f"study.reference: {ref!r} is not a run of this config; runs: "
                             f"{', '.join(labels)}")
        return self

    def seeds(self) -> list[int]:
        """The seeds every run is trained with: train.seed, train.seed + 1, ... (train.seeds)."""
        return [self.train.seed + i for i in range(self.train.seeds)]

    def with_train(self, **fields) -> "Config":
        """This config with these [train] fields replaced (e.g. a command-line override)."""
        return self.model_copy(update={"train": self.train.model_copy(update=fields)})

    def for_seed(self, seed: int) -> "Config":
        """This config with train.seed = seed (one seed's runs)."""
        return self.with_train(seed=seed)

    def seeded_runs(self) -> list[tuple["Config", RunSpec]]:
        """Every (one seed's config, run) to train, seed by seed (so a stopped study has whole
        seeds to compare)."""
        return [(self.for_seed(seed), spec) for seed in self.seeds() for spec in self.run_specs()]

    def run_specs(self) -> list[RunSpec]:
        """The grid's runs (each recipe on each model; bf16/fp32 once), then [[runs]]."""
        out = []
        for r in self.grid.recipes:
            if r == "accumulator_proposal":
                raise ValueError("grid: accumulator_proposal needs fraction_bits; give it as a "
                                 "[[runs]] entry")
            models = ["h100"] if r in ("bf16", "fp32") else self.grid.models
            out += [RunSpec(recipe=r, model=m) for m in models]
        return out + list(self.runs)

    def run_id(self, spec: RunSpec) -> str:
        """A stable id of a run: its spec and everything that shapes its numbers.

        train.device counts only when it is "cuda" (torch may then train on its GPU, whose
        kernels sum in other orders); the simulated GEMMs have the same bits on either
        backend, so a run without it keeps its id and resumes with ``device = "cpu"``.
        train.seeds does not count: a run is one seed's (train.seed), and a study of more seeds
        reuses the runs of fewer."""
        exclude = {"seeds"} | (set() if self.train.device == "cuda" else {"device"})
        train = self.train.model_dump(exclude=exclude)
        body = {"spec": spec.model_dump(), "model": self.model.model_dump(),
                "data": self.data.model_dump(), "train": train}
        return hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path) -> Config:
    """Read and validate a training TOML file; errors name the file, the field and why."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such training config file")
    data = read_toml(path)          # unreadable, not UTF-8 or not TOML: one line naming it
    return parse_config(data, where=f"{path}: ")


def parse_config(data: dict, where: str = "") -> Config:
    """A Config from a dict (ConfigError naming the field)."""
    try:
        cfg = Config(**data)
        for spec in cfg.run_specs():
            spec.training_recipe()
        return cfg
    except ValidationError as exc:
        raise ConfigError(config_error_message(exc, where=where)) from None
    except TcsimError as exc:
        raise ConfigError(f"{where}{exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}{exc}") from None
