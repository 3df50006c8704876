"""The one overflow-policy table (tcsim.overflow): every spelling names one of its codes, and no
other module numbers the policies itself (read from the source with ``ast``, as
tests/importgraph.py reads the imports)."""

from __future__ import annotations

import ast
from typing import get_args

import pytest

from importgraph import module_files
from tcsim.datapath import Datapath
from tcsim.formats.catalog import OVERFLOW_POLICIES
from tcsim.formats.conversion import overflow_code
from tcsim.overflow import DATAPATH_NAMES, FORMAT_NAMES, Overflow
from tcsim.params import kernel_params

TABLE = "tcsim.overflow"
ROUND_PACKS = ("round_pack", "round_pack_any")
# round_pack(v, lo, p, emin, emax, rnd, overflow, flush, u, rbits): the settings from overflow on
SETTINGS_FROM = 6


def _is_int(node) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, bool)


def _int_table(node) -> bool:
    """An int, a tuple of ints or a dict of ints: what a numbering of policies looks like."""
    if isinstance(node, ast.Tuple):
        return bool(node.elts) and all(_is_int(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return bool(node.values) and all(_is_int(v) for v in node.values)
    return _is_int(node)


def _named(node, name: str) -> bool:
    return (isinstance(node, ast.Name) and node.id == name) or \
        (isinstance(node, ast.Attribute) and node.attr == name)


def overflow_tables(tree: ast.AST) -> list:
    """(line, what) for every place of a module that numbers overflow policies itself."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            upper = [n.upper().lstrip("_") for n in names]
            if any("OVERFLOW" in n or n.startswith("OV_") for n in upper) and \
                    _int_table(node.value):
                found.append((node.lineno, f"overflow codes {', '.join(names)}"))
        if isinstance(node, ast.Dict) and any(
                isinstance(k, ast.Constant) and k.value == "saturate" for k in node.keys):
            found.append((node.lineno, "a dict of overflow policy names"))
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_named(s, "overflow") for s in sides) and any(_is_int(s) for s in sides):
                found.append((node.lineno, "overflow compared with a bare number"))
        if isinstance(node, ast.Call) and any(_named(node.func, f) for f in ROUND_PACKS):
            bare = [a for a in node.args[SETTINGS_FROM:] if isinstance(a, ast.Constant)]
            if bare:
                found.append((node.lineno, "round_pack settings as bare numbers"))
    return found


def test_no_module_numbers_overflow_policies_but_the_table():
    """Every kernel (round_pack, the fused tile, the codec, the quantiser), params and formats
    take the codes from tcsim.overflow; round_pack's call sites name their settings."""
    bad = [f"{module} line {line}: {what}"
           for module, path in module_files().items() if module != TABLE
           for line, what in overflow_tables(ast.parse(path.read_text()))]
    assert not bad, "overflow codes outside tcsim.overflow:\n" + "\n".join(bad)


@pytest.mark.parametrize("source, what", [
    ("OVERFLOW_IEEE, OVERFLOW_INF, OVERFLOW_SATURATE = 0, 1, 2", "overflow codes"),
    ("OV_SATURATE = 1", "overflow codes"),
    ('def f(dp):\n    return {"ieee": A, "inf": B, "saturate": C}[dp.overflow]', "dict"),
    ("big = inf if overflow == 1 else top", "bare number"),
    ("r = round_pack(hi, lo, p, emin, emax, rnd, 0, flush, 0, 1)", "bare numbers"),
])
def test_the_reader_finds_a_private_table(source, what):
    """The check is not blind: each way the old modules numbered the policies is found."""
    found = overflow_tables(ast.parse(source))
    assert len(found) == 1 and what in found[0][1], found


def test_every_spelling_names_a_member():
    assert tuple(DATAPATH_NAMES) == get_args(Datapath.model_fields["overflow"].annotation)
    assert OVERFLOW_POLICIES == tuple(FORMAT_NAMES)
    assert set(DATAPATH_NAMES.values()) == set(Overflow)
    # a format conversion's "inf" is the IEEE rule (RZ gives the largest finite value)
    assert FORMAT_NAMES == {"inf": Overflow.IEEE, "saturate": Overflow.SATURATE}


@pytest.mark.parametrize("name", list(DATAPATH_NAMES))
def test_kernel_params_carry_the_tables_code(name):
    dp = Datapath(fraction_bits=25, block_size=16, overflow=name)
    code = kernel_params(dp, "fp32", 16, False).overflow
    assert code == DATAPATH_NAMES[name] and type(code) is int    # a plain int for numba


@pytest.mark.parametrize("name", list(FORMAT_NAMES))
def test_format_overflow_code_is_the_tables(name):
    code = overflow_code(name)
    assert code == FORMAT_NAMES[name] and type(code) is int
