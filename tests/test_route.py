"""The kernel route (tcsim.route): every shipped preset path gets one, tcsim.mma runs the kernel
it names, and no other module decides which kernel serves a datapath (read from the source with
``ast``, as tests/importgraph.py reads the imports)."""

from __future__ import annotations

import ast
import importlib
import itertools
import math

import numpy as np
import pytest

from importgraph import module_files
from tcsim import load_model, preset_names
from tcsim.datapath import Datapath
from tcsim.errors import ConfigError, ShapeError
from tcsim.mma import mma
from tcsim.params import kernel_params
from tcsim.route import Kernel, Route, require, route

ROUTER = "tcsim.route"
# the functions that decide which kernel serves a datapath: defined in the router only (other
# modules may call them: the router decides)
DECIDERS = {"route", "fits_float32", "fused_serves", "serves", "staged_tiled",
            "staged_int32_sums", "staged_variant", "check_staged_bits", "check_sum_bits"}
# the kernel families' entry points: called only in a branch on a route's Kernel
ENTRY_POINTS = {"exact_kernel", "staged_kernel", "fused_kernel", "run_lowered"}


def preset_cases() -> list:
    """(model, path, a_format, b_format, acc, scale_format) of every shipped preset path, read
    from models/ as tests/test_kernel_vs_oracle.py reads them."""
    cases = []
    for name in preset_names():
        for p in load_model(name).paths:
            for a_fmt, b_fmt in itertools.product(p.inputs, repeat=2):
                for sfmt in p.scale_formats or (None,):
                    cases.append((name, p.name, a_fmt, b_fmt, p.output, sfmt))
    return cases


PRESET_CASES = preset_cases()


def _ran(monkeypatch) -> list:
    """Record the kernel family of every kernel call tcsim.mma makes, in order."""
    from tcsim._kernels import blockfma, fused, staged
    mma_module = importlib.import_module("tcsim.mma")   # the module (tcsim.mma is the function)
    ran = []

    def spy(module, name, family):
        real = getattr(module, name)

        def call(*args):
            kind = family(args) if callable(family) else family
            ran.append(kind)
            return real(*args)
        monkeypatch.setattr(module, name, call)

    spy(blockfma, "exact_kernel", Kernel.EXACT)
    spy(fused, "run", Kernel.FUSED)
    spy(staged, "staged_kernel",
        lambda args: Kernel.STAGED_TILE if args[-1].tiled else Kernel.PAIRWISE)
    spy(mma_module, "run_lowered", Kernel.LOWERED)
    return ran


def _problem(dp, acc, sfmt, block):
    """All-ones operands (every format holds 1) of a K the datapath takes."""
    k = dp.lowered_k or dp.block_size or 16
    if block:
        k = k * block // math.gcd(k, block)
    a, b = np.ones((2, k)), np.ones((k, 3))
    c = np.zeros((2, 3), np.float16 if acc == "fp16" else np.float32)
    scales = {}
    if sfmt is not None:
        scales = dict(a_scale=np.ones((2, k // block)), b_scale=np.ones((k // block, 3)),
                      scale_format=sfmt)
    return a, b, c, scales


@pytest.mark.parametrize("case", PRESET_CASES, ids=lambda c: "-".join(filter(None, c)))
def test_every_preset_path_runs_its_route(monkeypatch, case):
    """Each preset path gets a route (no ConfigError), and tcsim.mma runs the kernel the route
    names (a lowered path: the chain, then its inner instruction's own route)."""
    model, path, a_fmt, b_fmt, acc, sfmt = case
    dp = load_model(model).find_path(a_fmt, b_fmt, acc, path=path, scaled=sfmt is not None,
                                     scale_format=sfmt)         # a Path, as tcsim.mma runs it
    for block in (dp.scale_blocks if sfmt is not None else [None]):
        a, b, c, scales = _problem(dp, acc, sfmt, block)
        ran = _ran(monkeypatch)
        try:
            mma(a, b, c, model=model, path=path, a_format=a_fmt, b_format=b_fmt, acc=acc,
                **scales)
        except ShapeError:      # a scale block this scale format does not take
            continue
        first = route(dp, a_fmt, b_fmt, acc, a.shape[1])
        want = [first.kernel]
        if first.kernel is Kernel.LOWERED:
            inner = dp.replace(lowered_k=None, k_order=())
            want.append(route(inner, a_fmt, b_fmt, acc, dp.lowered_k).kernel)
        assert ran == want, f"{case}: the route names {want}, tcsim.mma ran {ran}"
        monkeypatch.undo()
        return
    pytest.fail(f"{case}: no scale block of {dp.scale_blocks} was taken")


def test_the_presets_reach_the_families():
    """The preset paths reach the lowered chain, the exact, fused and staged tile kernels, and
    NaN/Inf inputs leave the fused tile."""
    kernels = set()
    for model, path, a_fmt, b_fmt, acc, sfmt in PRESET_CASES:
        dp = load_model(model).find_path(a_fmt, b_fmt, acc, path=path, scaled=sfmt is not None,
                                         scale_format=sfmt).datapath()
        kernels.add(route(dp, a_fmt, b_fmt, acc, 64).kernel)
    assert kernels >= {Kernel.LOWERED, Kernel.EXACT, Kernel.FUSED, Kernel.STAGED_TILE}
    h100 = load_model("h100").find_path("e4m3", "e4m3", "fp32").datapath()
    assert route(h100, "e4m3", "e4m3", "fp32", 64).kernel is Kernel.FUSED
    assert route(h100, "e4m3", "e4m3", "fp32", 64, True).kernel is Kernel.STAGED_TILE


def test_routes_of_drawn_datapaths():
    """The families beside the presets: exact alignment, a pairwise tree that is not all binary32
    RNE nodes, and the one clear error of a datapath no kernel models exactly."""
    assert route(Datapath(block_size=16), "bf16", "bf16", "fp32", 64).kernel is Kernel.EXACT
    tree = Datapath(block_size=4, product_sum="pairwise", c_placement="after",
                    product_sum_precision=24, product_sum_rounding="rne", output_rounding="rz")
    assert route(tree, "fp16", "fp16", "fp32", 64) == Route(Kernel.PAIRWISE, False, False, False)
    with pytest.raises(ConfigError, match="fraction_bits"):
        route(Datapath(block_size=32, fraction_bits=50), "e4m3", "e4m3", "fp32", 64)


def test_a_backend_names_the_path_it_does_not_serve():
    """require(): the route when the backend serves its family, else one error naming both."""
    h100 = load_model("h100").find_path("e4m3", "e4m3", "fp32")
    r = route(h100, "e4m3", "e4m3", "fp32", 64)
    assert require(r, {Kernel.FUSED}, "a GPU backend", h100) is r
    with pytest.raises(ConfigError, match="a GPU backend does not serve path 'wgmma': it runs "
                                          "on the fused kernel .* serves: exact"):
        require(r, {Kernel.EXACT}, "a GPU backend", h100)


def test_kernel_params_carry_the_route():
    """The one parameter compiler: the staged variant in KernelParams is the route's."""
    dp = load_model("h100").find_path("fp16", "fp16", "fp32").datapath()
    r = route(dp, "fp16", "fp16", "fp32", 256)
    prm = kernel_params(dp, "fp32", 256, False, 0, "fp16", "fp16", r)
    assert (prm.tiled, prm.int32_sums) == (r.tiled, r.int32_sums)
    assert kernel_params(dp, "fp32", 256, False, 0, "fp16", "fp16") == prm


# ---- no other module decides ------------------------------------------------------------------

def _parents(tree: ast.AST) -> dict:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _called_name(call: ast.Call) -> str:
    f = call.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        # fused.run: the fused tile's entry point
        if f.attr == "run" and isinstance(f.value, ast.Name) and f.value.id == "fused":
            return "fused.run"
        return f.attr
    return ""


def _under_route_branch(node, parents) -> bool:
    """True when an enclosing ``if`` tests a route's Kernel."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and any(
                isinstance(n, (ast.Name, ast.Attribute)) and
                (getattr(n, "id", None) == "Kernel" or getattr(n, "attr", None) == "Kernel")
                for n in ast.walk(node.test)):
            return True
    return False


def eligibility_outside_router(module: str, tree: ast.AST) -> list:
    """(line, what) for every place of ``module`` that decides which kernel serves a datapath
    (the router itself excepted)."""
    if module == ROUTER:
        return []
    found = []
    parents = _parents(tree)
    in_kernels = module.startswith("tcsim._kernels")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in DECIDERS:
            found.append((node.lineno, f"defines {node.name}"))
        if isinstance(node, ast.Call):
            name = _called_name(node)
            if name == "staged":        # the router's own test of a datapath
                found.append((node.lineno, "calls Datapath.staged()"))
            if not in_kernels and (name in ENTRY_POINTS or name == "fused.run") and \
                    not _under_route_branch(node, parents):
                found.append((node.lineno, f"runs {name} outside a branch on the route"))
    return found


def test_only_the_router_decides_which_kernel_serves():
    bad = []
    for module, path in module_files().items():
        if module == "tcsim.datapath":      # defines Datapath.staged(), the datapath's own fact
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        bad += [f"{module} line {line}: {what}"
                for line, what in eligibility_outside_router(module, tree)]
    assert not bad, "kernel eligibility outside tcsim.route:\n" + "\n".join(bad)


def test_the_check_finds_a_scattered_decision():
    """The checker is not blind: a second fused check, a staged() test and an unrouted kernel
    call are each found."""
    tree = ast.parse("def serves(dp):\n    return not dp.staged()\n"
                     "def run(a):\n    return exact_kernel(a)\n"
                     "def ok(r, a):\n    if r.kernel is Kernel.EXACT:\n"
                     "        return exact_kernel(a)\n")
    found = eligibility_outside_router("tcsim.mma", tree)
    assert sorted(line for line, _ in found) == [1, 2, 4]
