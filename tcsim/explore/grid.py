"""Sweep grids: TOML files validated by pydantic, expanded into points.

```toml
name = "accumulator-width"
[datapath]                 # lists of values; every combination is a point
base = "h100"              # preset (or model TOML) whose path for the recipe's formats -> fp32
                           # is the starting datapath
fraction_bits = [10, 13, 16, 20]
block_size = [16, 32]
term_rounding = ["truncate"]   # "truncate", "floor", "rne" or "sr" (stochastic terms)
output_rounding = ["rz"]   # "rz", "rne" or "sr" (stochastic, sr_bits random bits)
output_precision = ["f+1"] # an integer, "f+1" (one more than fraction_bits, capped at 24), or "base"
[recipe]
base = "deepseek_v3"       # a named Recipe
promotion_interval = [128, 0]   # 0 = fast accumulation
a_granularity = ["group"]  # "base" keeps the named recipe's scaling
b_granularity = ["block"]
scale_dtype = ["fp32"]
[workload]
m = [32]
n = [32]
k = [256, 1024, 4096]
dist = ["normal", "uniform", "heavy", "outliers"]   # any of tcsim.workloads.DISTRIBUTIONS
seed = [0]
```
Every datapath and recipe axis defaults to ["base"]: an axis the grid does not name keeps the
base preset's / base recipe's value (a "base" entry may also be listed next to others). The
points carry the values "base" stands for (fraction bits, block size, roundings, sr_bits,
output precision of the base path; the base recipe's promotion interval, 0 for none); the
scalings stay "base" (each operand keeps its own). A grid that cannot run is refused when it is
loaded: an unknown base, a base preset without a path for the recipe's formats, a value out of
range, or a value listed twice (also "base" next to the value it stands for).
Combinations the recipe rules reject (fast accumulation with K-grouped scales, ...) are kept as
points with status "invalid" and the reason, so that a re-run skips them too.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Annotated, Literal, Union, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..datapath import AccRounding, TermRounding
from ..errors import ConfigError, TcsimError
from ..frozen_config import config_error_message
from ..recipe import Granularity
from ..tomlfile import read_toml
from ..workloads import DISTRIBUTIONS

BASE = "base"
Base = Literal["base"]
Size = Annotated[int, Field(ge=1, le=1 << 24)]


def _base_default():
    return Field(default_factory=lambda: [BASE], min_length=1)


def _in_range(lo: int, hi: int, words: tuple = (BASE,)):
    """An after-validator: every entry is an integer in lo .. hi or one of ``words``."""
    def check(values: list) -> list:
        for i, v in enumerate(values):
            if isinstance(v, str):
                if v not in words:
                    raise ValueError(f"entry {i}: {v!r} is not an integer or one of {words}")
            elif isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"entry {i}: {v!r} is not in {lo} .. {hi}")
        return values
    return AfterValidator(check)


IntOrWord = list[Union[int, str]]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("*")
    @classmethod
    def _distinct(cls, values):
        """Each value of an axis is one point: a value listed twice would be one row on disk."""
        if isinstance(values, list):
            seen = set()
            for v in values:
                if repr(v) in seen:
                    raise ValueError(f"{v!r} is listed more than once (each value is one point)")
                seen.add(repr(v))
        return values


class DatapathAxes(_Strict):
    base: str = "h100"
    fraction_bits: Annotated[IntOrWord, _in_range(0, 48)] = _base_default()
    block_size: Annotated[IntOrWord, _in_range(1, 4096)] = _base_default()
    term_rounding: list[Literal[(BASE,) + get_args(TermRounding)]] = _base_default()
    output_rounding: list[Literal[(BASE,) + get_args(AccRounding)]] = _base_default()
    sr_bits: Annotated[IntOrWord, _in_range(1, 32)] = _base_default()
    output_precision: Annotated[IntOrWord, _in_range(2, 24, (BASE, "f+1"))] = _base_default()


class RecipeAxes(_Strict):
    base: str = "deepseek_v3"
    promotion_interval: Annotated[IntOrWord, _in_range(0, 1 << 24)] = _base_default()
    a_granularity: list[Union[Base, Granularity]] = _base_default()
    b_granularity: list[Union[Base, Granularity]] = _base_default()
    scale_dtype: list[Literal["base", "fp32", "pow2", "ue8m0"]] = _base_default()


class WorkloadAxes(_Strict):
    m: list[Size] = Field(default_factory=lambda: [32], min_length=1)
    n: list[Size] = Field(default_factory=lambda: [32], min_length=1)
    k: list[Size] = Field(default_factory=lambda: [1024], min_length=1)
    dist: list[Literal[DISTRIBUTIONS]] = Field(
        default_factory=lambda: ["normal"], min_length=1)
    seed: list[Annotated[int, Field(ge=0, le=2 ** 63 - 1)]] = Field(
        default_factory=lambda: [0], min_length=1)


def named_recipe(name: str):
    """The Recipe of a named recipe (tcsim.recipe.RECIPE_NAMES: "deepseek_v3", ...)."""
    from ..recipe import Recipe
    try:
        return Recipe.named(name)
    except ConfigError as exc:
        raise ConfigError(f"recipe.base: {exc}") from None


def base_path(model: str, recipe):
    """The path of preset (or model file) ``model`` serving the recipe's formats -> fp32."""
    from ..presets import load_model
    try:
        return load_model(model).find_path(recipe.a_format, recipe.b_format, "fp32",
                                           scaled=recipe.scales_in_mma)
    except TcsimError as exc:
        raise ConfigError(f"datapath.base: {exc}") from None


class Grid(_Strict):
    """A sweep: the cartesian product of every list below."""

    name: str = "sweep"
    datapath: DatapathAxes = DatapathAxes()
    recipe: RecipeAxes = RecipeAxes()
    workload: WorkloadAxes = WorkloadAxes()

    def base_values(self) -> dict:
        """What "base" stands for on each axis that resolves to one value (ConfigError naming
        the field when a base does not exist or has no path for the recipe's formats)."""
        recipe = named_recipe(self.recipe.base)
        path = base_path(self.datapath.base, recipe)
        return {"datapath.fraction_bits": path.fraction_bits,
                "datapath.block_size": path.block_size,
                "datapath.term_rounding": path.term_rounding,
                "datapath.output_rounding": path.output_rounding,
                "datapath.sr_bits": path.sr_bits,
                "datapath.output_precision": path.output_precision,
                "recipe.promotion_interval": recipe.promotion_interval or 0}

    def axes(self) -> dict:
        """Every axis ("section.key") with its values, "base" resolved (see base_values); a
        value listed twice after resolving raises ConfigError."""
        bases = self.base_values()
        axes = {}
        for section in ("datapath", "recipe", "workload"):
            for key, values in getattr(self, section).model_dump().items():
                if key == "base":
                    continue
                name = f"{section}.{key}"
                if name in bases:
                    resolved = [bases[name] if v == BASE else v for v in values]
                    if len(set(map(repr, resolved))) < len(resolved):
                        raise ConfigError(f"{name}: {values} lists {bases[name]!r} more than "
                                          f"once ('base' is {bases[name]!r} for "
                                          f"{self.datapath.base} / {self.recipe.base})")
                    values = resolved
                axes[name] = values
        return axes

    def points(self) -> list[dict]:
        """Every combination as a flat dict with a stable ``point_id``."""
        axes = self.axes()
        fixed = {"datapath.base": self.datapath.base, "recipe.base": self.recipe.base}
        names = list(axes)
        out = []
        for combo in itertools.product(*(axes[n] for n in names)):
            point = dict(fixed, **dict(zip(names, combo)))
            point["point_id"] = point_id(point)
            out.append(point)
        return out


def point_id(point: dict) -> str:
    """A stable id of a point's parameters (sha1 of their sorted JSON)."""
    body = {k: v for k, v in point.items() if k != "point_id"}
    return hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def load_grid(path) -> Grid:
    """Read and validate a grid TOML file; errors name the file, the field and why."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such grid file")
    data = read_toml(path)
    try:
        grid = Grid(**data)
    except ValidationError as exc:
        raise ConfigError(config_error_message(exc, where=f"{path}: ")) from None
    try:
        grid.axes()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return grid
