"""``tcsim.torch.convert``: swap a model's torch.nn.Linear layers for tcsim.torch.Linear."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Iterable, Optional

import torch

from .device import check_device
from .linear import Linear
from .nonfinite import check_mode
from .recipes import TrainingRecipe

#: Linear layers DeepSeek-V3 keeps in higher precision (s3.3: "the embedding module, the output
#: head, MoE gating modules, normalization operators, and attention operators"), by module path.
#: Norms, embeddings and the attention core (softmax(QK^T)V) are no nn.Linear and never
#: converted; these patterns keep an output head or a gate that is one.
DEEPSEEK_KEEP = ("*embed*", "*head", "*lm_head*", "output", "*.output", "*gate", "*router*",
                 "*norm*")


# Modules whose arithmetic includes GEMM-like products that convert() does not simulate (they
# run in torch's own precision), with why. MultiheadAttention calls
# F.multi_head_attention_forward with its projection weights directly: its out_proj is an
# nn.Linear subclass whose forward is never called, so converting it would simulate nothing.
_NOT_SIMULATED = (
    (torch.nn.MultiheadAttention, "its Q/K/V and output projections and the attention core run "
     "inside F.multi_head_attention_forward (its out_proj Linear's forward is never called)"),
    (torch.nn.modules.conv._ConvNd, "a convolution (a GEMM over im2col patches)"),
    (torch.nn.Bilinear, "a bilinear form x1^T A x2"),
    (torch.nn.RNNBase, "its input and recurrent GEMMs run inside torch's RNN kernel"),
    (torch.nn.TransformerEncoderLayer, "in eval mode without grad torch may run the whole layer "
     "as one fused kernel (its fast path), bypassing converted linear1/linear2"),
    (torch.nn.TransformerDecoderLayer, "its attention blocks are MultiheadAttention (see there)"),
)
# Modules whose every GEMM the convert() loop cannot reach: their Linear children are skipped
_OPAQUE = (torch.nn.MultiheadAttention,)
# Table lookups: weight matrices, but no GEMM
_LOOKUPS = (torch.nn.Embedding, torch.nn.EmbeddingBag)


@dataclass
class Conversion:
    """What convert() did: module paths of the converted and of the kept Linear layers, and
    what it does not simulate.

    not_simulated: "path (Type): why" for each module with GEMM-like arithmetic convert()
        cannot reach (convolutions, Bilinear, MultiheadAttention, RNNs, ...) and each 2-D
        Parameter outside any known layer (a module's own F.linear / matmul / einsum on it is
        invisible to convert()); all of these run in torch's precision. Functional calls on
        activations (F.scaled_dot_product_attention, torch.matmul) are not listed: convert()
        sees modules, not code.
    lookups: the Embedding layers (table lookups: no GEMM to simulate)."""

    recipe: str
    converted: list = field(default_factory=list)
    kept: list = field(default_factory=list)
    not_simulated: list = field(default_factory=list)
    lookups: list = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"tcsim.torch.convert ({self.recipe}): {len(self.converted)} Linear layer(s) "
                 f"converted, {len(self.kept)} kept in high precision, "
                 f"{len(self.not_simulated)} not simulated (torch's precision)"]
        lines += [f"  converted:     {_path(n)}" for n in self.converted]
        lines += [f"  kept:          {_path(n)}" for n in self.kept]
        lines += [f"  not simulated: {n}" for n in self.not_simulated]
        lines += [f"  lookup:        {n}" for n in self.lookups]
        return "\n".join(lines)


def _path(name: str) -> str:
    return name or "(the model itself)"


def _matches(name: str, patterns: Optional[Iterable[str]]) -> bool:
    return any(fnmatchcase(name, p) for p in (patterns or ()))


def _inside(name: str, prefixes: list) -> bool:
    """Whether module path ``name`` lies strictly below one of ``prefixes``."""
    return any((name != "") if p == "" else name.startswith(p + ".") for p in prefixes)


def _note_unsimulated(report: Conversion, name: str, module: torch.nn.Module) -> None:
    """Add what of ``module`` (itself, not its children) convert() leaves to torch."""
    kind = type(module).__name__
    why = [w for t, w in _NOT_SIMULATED if isinstance(module, t)]
    if why:
        report.not_simulated.append(f"{_path(name)} ({kind}): {why[0]}")
        return
    if isinstance(module, _LOOKUPS):
        report.lookups.append(f"{_path(name)} ({kind}): a table lookup, no GEMM")
        return
    if isinstance(module, torch.nn.Linear):
        return
    for pname, p in module.named_parameters(recurse=False):
        if p.dim() >= 2:
            full = f"{name}.{pname}" if name else pname
            report.not_simulated.append(
                f"{full} ({p.dim()}-D Parameter of {kind}): a GEMM on it in the module's own "
                f"code (F.linear, matmul, einsum) is not simulated")


def _to_tcsim(module: torch.nn.Linear, recipe: TrainingRecipe, name: str,
              device: Optional[str], nonfinite: str = "propagate") -> Linear:
    """``module`` as a tcsim Linear with ``recipe`` and GEMM device ``device``: the module
    itself, its class changed, when it is the model (nothing holds it to replace it in), else a
    new one sharing its Parameters."""
    if isinstance(module, Linear):
        module.recipe, module.name, module.gemm_device = recipe, name, device
        module.nonfinite = nonfinite
        return module
    if not name:
        module.__class__ = Linear
        module._init_state(recipe, name, device, nonfinite)
        return module
    return Linear.from_linear(module, recipe, name, device, nonfinite)


def convert(model: torch.nn.Module, recipe: TrainingRecipe, include: Optional[Iterable[str]]
            = None, exclude: Optional[Iterable[str]] = DEEPSEEK_KEEP,
            verbose: bool = False, device: Optional[str] = None,
            nonfinite: str = "propagate") -> Conversion:
    """Replace, in place, each torch.nn.Linear of ``model`` whose module path matches ``include``
    (fnmatch patterns; None = every Linear) and no ``exclude`` pattern (default: what
    DeepSeek-V3 keeps in higher precision, DEEPSEEK_KEEP; () converts all) by a
    tcsim.torch.Linear with ``recipe`` sharing its Parameters. A tcsim Linear already there gets
    the new recipe; a bare torch.nn.Linear passed as ``model`` becomes a tcsim Linear itself.
    device: where the converted layers' simulated GEMMs run (their ``gemm_device``, tcsim.gemm's
    ``device``): None follows the tensors (CUDA tensors stay on the GPU), "cpu" or "cuda"; it
    moves no Parameter (``model.to`` does). nonfinite: the converted layers' mode for NaN/Inf in
    a GEMM operand, "propagate" or "raise" (tcsim.torch.nonfinite). Returns a
    :class:`Conversion` naming the converted and kept layers and what is not simulated (printed
    when verbose; a warning names the count when GEMM-like modules are left to torch)."""
    recipe = recipe.check()
    check_device(device)
    check_mode(nonfinite)
    report = Conversion(recipe.name)
    include = None if include is None else tuple(include)
    # every path of a module used twice (tied layers): each gets the one replacement
    entries = list(model.named_modules(remove_duplicate=False))
    opaque = [n for n, m in entries if isinstance(m, _OPAQUE)]
    new_of: dict = {}
    for name, module in entries:
        if _inside(name, opaque):          # reported with the module that hides it
            continue
        _note_unsimulated(report, name, module)
        if not isinstance(module, torch.nn.Linear):
            continue
        wanted = (include is None or _matches(name, include)) and not _matches(name, exclude)
        if not wanted:
            report.kept.append(name)
            continue
        if id(module) not in new_of:
            new_of[id(module)] = _to_tcsim(module, recipe, name, device, nonfinite)
        if name:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, new_of[id(module)])
        report.converted.append(name)
    if verbose:
        print(report)
    if report.not_simulated:
        warnings.warn(f"tcsim.torch.convert: {len(report.not_simulated)} module(s) or "
                      f"weight(s) with GEMM-like arithmetic are not simulated and run in torch's "
                      f"precision: {'; '.join(report.not_simulated)}", stacklevel=2)
    return report


def layers(model: torch.nn.Module) -> list:
    """The tcsim.torch.Linear layers of a model, in module order."""
    return [m for m in model.modules() if isinstance(m, Linear)]


def attach_stats(model: torch.nn.Module, stats) -> None:
    """Let every tcsim.torch.Linear of ``model`` report to ``stats`` (a GemmStats; None
    detaches)."""
    for m in layers(model):
        m.stats = stats
