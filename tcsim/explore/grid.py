"""Sweep grids: TOML files validated by pydantic, expanded into points.

```toml
name = "accumulator-width"
[datapath]                 # lists of values; every combination is a point
base = "h100"              # preset whose FP8 -> fp32 path is the starting datapath
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
dist = ["normal", "uniform", "heavy", "outliers"]
seed = [0]
```
Combinations the recipe rules reject (fast accumulation with K-grouped scales, ...) are kept as
points with status "invalid" and the reason, so that a re-run skips them too.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from pathlib import Path
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import config_error_message
from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OutputPrecision = Union[int, Literal["f+1", "base"]]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatapathAxes(_Strict):
    base: str = "h100"
    fraction_bits: list[int] = Field(default_factory=lambda: [13], min_length=1)
    block_size: list[int] = Field(default_factory=lambda: [32], min_length=1)
    term_rounding: list[Literal["truncate", "floor", "rne", "sr"]] = Field(
        default_factory=lambda: ["truncate"], min_length=1)
    output_rounding: list[Literal["rz", "rne", "sr"]] = Field(default_factory=lambda: ["rz"],
                                                              min_length=1)
    sr_bits: list[int] = Field(default_factory=lambda: [16], min_length=1)
    output_precision: list[OutputPrecision] = Field(default_factory=lambda: ["base"],
                                                    min_length=1)


class RecipeAxes(_Strict):
    base: str = "deepseek_v3"
    promotion_interval: list[int] = Field(default_factory=lambda: [128], min_length=1)
    a_granularity: list[str] = Field(default_factory=lambda: ["base"], min_length=1)
    b_granularity: list[str] = Field(default_factory=lambda: ["base"], min_length=1)
    scale_dtype: list[Literal["base", "fp32", "pow2", "ue8m0"]] = Field(
        default_factory=lambda: ["base"], min_length=1)


class WorkloadAxes(_Strict):
    m: list[int] = Field(default_factory=lambda: [32], min_length=1)
    n: list[int] = Field(default_factory=lambda: [32], min_length=1)
    k: list[int] = Field(default_factory=lambda: [1024], min_length=1)
    dist: list[Literal["normal", "uniform", "heavy", "outliers"]] = Field(
        default_factory=lambda: ["normal"], min_length=1)
    seed: list[int] = Field(default_factory=lambda: [0], min_length=1)


class Grid(_Strict):
    """A sweep: the cartesian product of every list below."""

    name: str = "sweep"
    datapath: DatapathAxes = DatapathAxes()
    recipe: RecipeAxes = RecipeAxes()
    workload: WorkloadAxes = WorkloadAxes()

    def points(self) -> list[dict]:
        """Every combination as a flat dict with a stable ``point_id``."""
        axes = {}
        for section in ("datapath", "recipe", "workload"):
            for key, values in getattr(self, section).model_dump().items():
                if key == "base":
                    continue
                axes[f"{section}.{key}"] = values
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
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Grid(**data)
    except ValidationError as exc:
        raise ConfigError(config_error_message(exc, where=f"{path}: ")) from None
