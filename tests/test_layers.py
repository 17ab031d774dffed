"""Imports run one way: cli -> experiments -> jobs -> engine -> weights -> models/data/compression -> runtime -> config/errors.

Every module of the package is parsed (not imported) and each ``squeezelab.*`` import it makes,
at the top or inside a function, must point at its own layer or one below. A new sub-package has to
be placed in LAYERS, so nothing lands unplaced.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "squeezelab"

# Lowest first. A module may import its own layer and the ones below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "config"),
    ("runtime", "complexity"),
    ("models", "data", "compression"),  # pure tensor functions and building blocks
    ("weights",),  # every weights file format (builds models, decodes with compression.code)
    ("engine",),
    ("jobs", "deploy"),  # demo, transfer, compress; export, quantise, bench, predict: compositions of the engine
    ("experiments",),  # sweeps, the runs store, statistics, reports: read run folders, run `squeezelab train`
    ("cli", "__main__"),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "squeezelab" and len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "squeezelab" else [f"squeezelab.{a.name}" for a in node.names]
            out += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return [(line, name) for line, name in out if _top(name)]


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def _layer_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.stem != "__init__" else "__init__"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_its_layer_or_below(path):
    own = _layer_of(path)
    if own == "__init__":  # the package's own docstring-only __init__
        assert not _imports(path)
        return
    assert own in RANK, f"{own} is not placed in LAYERS"
    above = [(line, name) for line, name in _imports(path) if RANK.get(_top(name), -1) > RANK[own]]
    assert not above, f"{path.relative_to(PACKAGE)} ({own}) imports from a layer above it: {above}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (``from squeezelab.x import y``: x.y when y is a module)."""
    modules = {_module_name(p): p for p in MODULES}
    graph = {}
    for name, path in modules.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                        for a in node.names}
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
        graph[name] = {m for m in out if m in modules and m != name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v), on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_between_modules():
    # Layers keep sub-packages apart; this keeps modules apart inside one (engine's loop -> run ->
    # compression -> loop was one: fit lived in loop.py, and read more like a knot than a pipeline).
    assert not _circles(_import_graph())


def test_the_circle_finder_finds_one():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
