"""No import cycles in lmrec: between modules, and between its top-level packages.

Every import counts, at module level or inside a function (a function-level import hides a
cycle, it does not remove it); only imports under `if TYPE_CHECKING:` are left out, since they
never run. `from a import b` is an edge to the module `a.b` when it is one, else to `a`.
The package check folds modules into lmrec's top-level parts (lmrec.models, lmrec.serve, ...),
so that data flows one way between them: models never import evaluate, serve never is
imported by models, and so on.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lmrec

SRC = Path(lmrec.__file__).resolve().parent


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and (
                (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
                or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its code)."""
    mods = _modules(root)
    top = root.name

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_nodes(tree)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                         for a in node.names]
            for name in names:
                if name == top or name.startswith(top + "."):
                    target = resolve(name)
                    if target and target != mod:
                        graph[mod].add(target)
    return graph


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph folded into top-level parts (`lmrec.models.base` -> `lmrec.models`)."""
    def part(m: str) -> str:
        return ".".join(m.split(".")[:2])

    out: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        out.setdefault(part(mod), set())
        for dep in deps:
            out.setdefault(part(dep), set())
            if part(dep) != part(mod):
                out[part(mod)].add(part(dep))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_module_imports_itself_back() -> None:
    assert cycles(import_graph(SRC)) == []


def test_top_level_packages_form_no_cycle() -> None:
    assert cycles(package_graph(import_graph(SRC))) == []


def test_the_check_finds_a_hidden_cycle(tmp_path: Path) -> None:
    """A function-level import closing a loop is found; a TYPE_CHECKING one is not."""
    pkg = tmp_path / "lmrec"
    (pkg / "models").mkdir(parents=True)
    (pkg / "evaluate").mkdir()
    for init in (pkg, pkg / "models", pkg / "evaluate"):
        (init / "__init__.py").write_text("")
    (pkg / "models" / "base.py").write_text(
        "def f():\n    from lmrec.evaluate import metrics\n    return metrics\n")
    (pkg / "evaluate" / "metrics.py").write_text("from lmrec.models.base import f\n")
    (pkg / "evaluate" / "report.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lmrec.models import base\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [["lmrec.evaluate.metrics", "lmrec.models.base"]]
    assert "lmrec.models" not in graph["lmrec.evaluate.report"]
    assert cycles(package_graph(graph)) == [["lmrec.evaluate", "lmrec.models"]]
