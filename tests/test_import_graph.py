"""No import circle inside bayesfuse (docs/architecture.md: one direction of flow).

Every import of a bayesfuse module counts: module level, inside functions (deferred imports that
break a circle at import time still tie the two files together) and under ``if TYPE_CHECKING:``
(a circle of types is a circle of concepts). Resolution: ``from P import name`` depends on
``P.name`` when that is a module, otherwise on ``P``. The implicit import of a parent package
that Python performs before any submodule is not an edge (a package's ``__init__`` re-exporting
its own submodules would otherwise always form a circle).
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "bayesfuse"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(modules: set[str], current: str, is_package: bool, node: ast.AST) -> set[str]:
    targets = set()
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = current.split(".") if is_package else current.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        names = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
    for name in names:
        while name and name not in modules:          # an attribute of a module: depend on the module
            name = name.rpartition(".")[0]
        if name.startswith("bayesfuse") and name != current:
            targets.add(name)
    return targets


def import_graph(root: Path = PKG) -> dict[str, set[str]]:
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps |= _resolve(modules, name, path.name == "__init__.py", node)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first = last), or None."""
    state, stack = {}, []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (c := visit(w)):
                return c
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (c := visit(v)):
            return c
    return None


def test_no_import_circle_in_bayesfuse():
    graph = import_graph()
    assert len(graph) > 50 and graph["bayesfuse.model.fusion_model"], "the import graph was not read"
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_cycle_detection_finds_a_deferred_and_a_type_only_circle(tmp_path):
    """Negative control: a circle closed by a function-level import, and one closed under TYPE_CHECKING."""
    pkg = tmp_path / "bayesfuse"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from bayesfuse.sub.a import A\n")
    (pkg / "sub" / "a.py").write_text("from bayesfuse.sub import b\n\nclass A:\n    pass\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from bayesfuse.sub.a import A  # noqa\n    return A\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bayesfuse.d import D\n")
    (pkg / "d.py").write_text("from bayesfuse.c import TYPE_CHECKING as D\n")
    graph = import_graph(pkg)
    assert graph["bayesfuse.sub.a"] == {"bayesfuse.sub.b"}          # ``from P import submodule`` -> the submodule
    assert set(find_cycle(graph)) in ({"bayesfuse.sub.a", "bayesfuse.sub.b"}, {"bayesfuse.c", "bayesfuse.d"})
    (pkg / "sub" / "b.py").write_text("def f():\n    return 1\n")
    assert set(find_cycle(import_graph(pkg))) == {"bayesfuse.c", "bayesfuse.d"}
    (pkg / "d.py").write_text("D = 1\n")
    assert find_cycle(import_graph(pkg)) is None
