"""The import graph of tcsim and gpu_validate, read from the source with ``ast`` (nothing is
imported, so a broken or slow module cannot hide an edge).

Every ``import`` / ``from ... import`` statement counts, at module level and inside functions
(a lazy import is still a dependency: it runs the imported module when the function does),
except those under ``if TYPE_CHECKING:`` (annotations only: never executed).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tcsim", "gpu_validate")


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (a module of ours) at ``line``; ``names``: the names taken
    from it by ``from target import ...`` (empty for ``import target``)."""

    source: str
    target: str
    line: int
    names: tuple
    lazy: bool          # inside a function


def module_files() -> dict:
    """module name -> source file, for every module of the packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """(node, lazy) for every import statement that runs, skipping TYPE_CHECKING blocks."""
    def walk(node, lazy):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    yield from walk(other, lazy)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, lazy
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                               ast.Lambda))
            yield from walk(child, inner)
    yield from walk(tree, False)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <node.module> import ...`` written in ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def edges() -> list:
    """Every import of one of our modules by one of our modules."""
    files = module_files()
    known = set(files)
    out = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, lazy in _import_nodes(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in known:
                        out.append(Edge(module, alias.name, node.lineno, (), lazy))
                continue
            target = _resolve(module, is_package, node)
            if target not in known:
                continue
            plain = []
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:            # from package import submodule
                    out.append(Edge(module, sub, node.lineno, (), lazy))
                else:
                    plain.append(alias.name)
            if plain:
                out.append(Edge(module, target, node.lineno, tuple(plain), lazy))
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports() -> list:
    """(edge, name) for each private name (``_x``, not a dunder) taken from another module:
    ``from .x import _y``, and ``x._y`` where ``x`` names a module of ours imported as a whole
    (``from . import x``, ``import tcsim.x as x``)."""
    found = [(e, name) for e in edges() for name in e.names
             if _private(name) and e.target != e.source]
    files = module_files()
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        found += private_attributes(module, path.name == "__init__.py", tree, set(files))
    return found


def cycles(edge_list) -> list:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph = {}
    for e in edge_list:
        if e.source != e.target:
            graph.setdefault(e.source, set()).add(e.target)
            graph.setdefault(e.target, set())
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def private_attributes(module: str, is_package: bool, tree: ast.AST, known: set) -> list:
    """(edge, name) for each ``x._y`` in ``module`` where ``x`` is another module of ours
    (``known``) imported as a whole."""
    bound = {}                          # local name -> module of ours it holds
    for node, _ in _import_nodes(tree):
        if isinstance(node, ast.Import):
            bound.update({a.asname: a.name for a in node.names if a.asname and a.name in known})
        else:
            target = _resolve(module, is_package, node)
            bound.update({a.asname or a.name: f"{target}.{a.name}" for a in node.names
                          if f"{target}.{a.name}" in known})
    return [(Edge(module, bound[node.value.id], node.lineno, (node.attr,), False), node.attr)
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and _private(node.attr) and
            isinstance(node.value, ast.Name) and bound.get(node.value.id, module) != module]
