"""The package's modules import one way: pure core <- step modules <- shells (no cycle, lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import fracture

PACKAGE_DIR = Path(fracture.__file__).parent


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every `fracture` module a file imports, at module level or inside functions."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module_name(path).split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found.update(n for n in names if n in known)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    known = set(files)
    return {name: imported_modules(path, known) - {name} for name, path in files.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
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
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def parent_packages(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_tarjan_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_relative_and_lazy_imports_are_seen() -> None:
    graph = import_graph()
    assert "fracture.kubeflow.steps" in graph["fracture.kubeflow.components.train"]  # inside the component body
    assert "fracture.config" in graph["fracture.cli"]  # inside a function


def test_no_import_cycle_among_the_package_modules() -> None:
    graph = import_graph()
    # A package's __init__ importing its own submodules is not a layering edge.
    graph = {m: {d for d in deps if m not in parent_packages(d)} for m, deps in graph.items()}
    cycles = strongly_connected(graph)
    assert not cycles, f"import cycles: {cycles}"


def test_shells_are_not_imported_by_the_core() -> None:
    shells = {"fracture.cli", "fracture.kubeflow.steps", "fracture.kubeflow.runner", "fracture.kubeflow.pipeline"}
    graph = import_graph()
    offenders = {m: sorted(graph[m] & shells) for m in graph if not m.startswith("fracture.kubeflow")}
    offenders = {m: d for m, d in offenders.items() if d and m != "fracture.cli"}
    assert not offenders, f"core modules importing a shell: {offenders}"
