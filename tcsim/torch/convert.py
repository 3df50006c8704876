"""``tcsim.torch.convert``: swap a model's torch.nn.Linear layers for tcsim.torch.Linear."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Iterable, Optional

import torch

from .linear import Linear
from .recipes import TrainingRecipe

#: Linear layers DeepSeek-V3 keeps in higher precision (s3.3: "the embedding module, the output
#: head, MoE gating modules, normalization operators, and attention operators"), by module path.
#: Norms, embeddings and the attention core (softmax(QK^T)V) are no nn.Linear and never
#: converted; these patterns keep an output head or a gate that is one.
DEEPSEEK_KEEP = ("*embed*", "*head", "*lm_head*", "output", "*.output", "*gate", "*router*",
                 "*norm*")


@dataclass
class Conversion:
    """What convert() did: module paths of the converted and of the kept Linear layers."""

    recipe: str
    converted: list = field(default_factory=list)
    kept: list = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"tcsim.torch.convert ({self.recipe}): {len(self.converted)} Linear layer(s) "
                 f"converted, {len(self.kept)} kept in high precision"]
        lines += [f"  converted: {n}" for n in self.converted]
        lines += [f"  kept:      {n}" for n in self.kept]
        return "\n".join(lines)


def _matches(name: str, patterns: Optional[Iterable[str]]) -> bool:
    return any(fnmatchcase(name, p) for p in (patterns or ()))


def convert(model: torch.nn.Module, recipe: TrainingRecipe, include: Optional[Iterable[str]]
            = None, exclude: Optional[Iterable[str]] = DEEPSEEK_KEEP,
            verbose: bool = False) -> Conversion:
    """Replace, in place, each torch.nn.Linear of ``model`` whose module path matches
    ``include`` (fnmatch patterns; None = every Linear) and no ``exclude`` pattern (default:
    what DeepSeek-V3 keeps in higher precision, DEEPSEEK_KEEP; () converts all) by a
    tcsim.torch.Linear with ``recipe`` sharing its Parameters. A tcsim Linear already there
    gets the new recipe. Returns a :class:`Conversion` naming the converted and kept layers
    (printed when verbose)."""
    recipe = recipe.check()
    report = Conversion(recipe.name)
    include = None if include is None else tuple(include)
    for name, module in list(model.named_modules()):
        if not isinstance(module, torch.nn.Linear) or not name:
            continue
        wanted = (include is None or _matches(name, include)) and not _matches(name, exclude)
        if not wanted:
            report.kept.append(name)
            continue
        if isinstance(module, Linear):
            module.recipe, module.name = recipe, name
        else:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, Linear.from_linear(module, recipe, name))
        report.converted.append(name)
    if verbose:
        print(report)
    return report


def layers(model: torch.nn.Module) -> list:
    """The tcsim.torch.Linear layers of a model, in module order."""
    return [m for m in model.modules() if isinstance(m, Linear)]


def attach_stats(model: torch.nn.Module, stats) -> None:
    """Let every tcsim.torch.Linear of ``model`` report to ``stats`` (a GemmStats; None
    detaches)."""
    for m in layers(model):
        m.stats = stats
