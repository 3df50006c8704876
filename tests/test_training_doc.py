"""docs/training.md: its table of the named training recipes says what the recipes do (each
row's formats, scales, accumulation and output are rendered here from the TrainingRecipe)."""

from __future__ import annotations

import re
from pathlib import Path

from tcsim.training_recipes import GEMMS, TrainingRecipe

DOC = Path(__file__).resolve().parent.parent / "docs" / "training.md"
OPERANDS = {"fprop": ("x", "w^T"), "dgrad": ("dy", "w"), "wgrad": ("dy^T", "x")}


def _tiles(scaling, role: str) -> str:
    if scaling.granularity == "tensor":
        return "per tensor"
    if scaling.granularity == "group":
        g = scaling.group_size
        return f"1x{g}" if role == "a" else f"{g}x1"
    if scaling.granularity == "block":
        return f"{scaling.group_size}x{scaling.group_size}"
    return scaling.granularity


def _scales(setting, scaling) -> str:
    if setting.scale_rule == "torchao":
        return "fp32 max/amax (torchao)"
    if setting.scale_rule == "te_delayed":
        return f"fp32 max/amax of the {scaling.amax_history} previous steps"
    return {"fp32": "fp32 amax/max", "pow2": "power of two"}.get(scaling.scale_dtype,
                                                                 scaling.scale_dtype)


def cells(recipe: TrainingRecipe, gemm: str) -> tuple:
    """(operand a, operand b, accumulation, output) of one GEMM, as docs/training.md writes
    them."""
    s = getattr(recipe, gemm)
    r = s.recipe
    ops = []
    for role, name in zip("ab", OPERANDS[gemm]):
        sc = getattr(r, f"{role}_scaling")
        ops.append(f"{name} {getattr(r, f'{role}_format').upper()}, {_tiles(sc, role)}, "
                   f"{_scales(s, sc)}")
    acc = "fast" if r.promotion_interval is None else f"promote every {r.promotion_interval}"
    return (ops[0], ops[1], acc, r.output)


def _doc_rows() -> dict:
    rows = {}
    for line in DOC.read_text().splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if len(parts) == 7 and parts[1] in GEMMS:
            rows[(parts[0].strip("`"), parts[1])] = tuple(parts[2:6])
    return rows


def test_the_recipe_table_is_what_the_recipes_do():
    rows = _doc_rows()
    names = ("deepseek_v3", "torchao_tensorwise", "te_hybrid_delayed", "fast_accum")
    assert {n for n, _ in rows} == set(names)
    for name in names:
        recipe = getattr(TrainingRecipe, name)()
        for gemm in GEMMS:
            assert rows[(name, gemm)] == cells(recipe, gemm), (name, gemm)


def test_the_readme_links_the_recipe_table():
    readme = (DOC.parent.parent / "README.md").read_text()
    assert re.search(r"\(docs/training\.md(#[\w-]+)?\)", readme)
