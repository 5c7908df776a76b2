"""The package's modules import one way: pure core <- step modules <- shells (no cycle, lazy imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import fracture

PACKAGE_DIR = Path(fracture.__file__).parent
REPO = PACKAGE_DIR.parent
# Folders mapped into the package by pyproject.toml's package-dir (the design card's top level), and their names.
ROOTS = {
    PACKAGE_DIR: "fracture",
    REPO / "components": "fracture.kubeflow.components",
    REPO / "pipelines": "fracture.kubeflow.pipelines",
}


def module_name(path: Path) -> str:
    root = next(r for r in ROOTS if path.is_relative_to(r))
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join([ROOTS[root], *parts])


def package_files() -> list[Path]:
    """Every module of the package, the mapped folders included (their tests/ are not modules of the package)."""
    return [p for root in ROOTS for p in root.rglob("*.py") if "tests" not in p.relative_to(root).parts]


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
    files = {module_name(p): p for p in package_files()}
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
    assert (
        "fracture.kubeflow.steps" in graph["fracture.kubeflow.components.train.component"]
    )  # inside the component body
    assert "fracture.config" in graph["fracture.cli"]  # inside a function


def test_no_import_cycle_among_the_package_modules() -> None:
    graph = import_graph()
    # A package's __init__ importing its own submodules is not a layering edge.
    graph = {m: {d for d in deps if m not in parent_packages(d)} for m, deps in graph.items()}
    cycles = strongly_connected(graph)
    assert not cycles, f"import cycles: {cycles}"


def test_shells_are_not_imported_by_the_core() -> None:
    shells = {
        "fracture.cli",
        "fracture.kubeflow.steps",
        "fracture.kubeflow.runner",
        "fracture.kubeflow.pipelines.training",
    }
    graph = import_graph()
    offenders = {m: sorted(graph[m] & shells) for m in graph if not m.startswith("fracture.kubeflow")}
    offenders = {m: d for m, d in offenders.items() if d and m != "fracture.cli"}
    assert not offenders, f"core modules importing a shell: {offenders}"


# The layer map (README, "Architecture"): each entry of the package root and its layer. A module imports modules of
# its own layer or below, never above; a new entry at the root must be placed here.
LAYERS: dict[str, int] = {
    # 0 foundation: errors, logging, file I/O, the contracts steps exchange, typed configuration
    "base": 0,
    "contracts": 0,
    "vocab": 0,
    "config": 0,
    # 1 pure domain: statistics, images, the HTML pages' environment, MLflow tracking
    "stats": 1,
    "images": 1,
    "templates": 1,
    "tracking": 1,
    # 2 data steps: the sources, synthetic data, ingest, validate, split, preprocess (and its cache contract)
    "sources": 2,
    "synth": 2,
    "ingest": 2,
    "validate": 2,
    "split": 2,
    "preprocess": 2,
    # 3 the model
    "model": 3,
    "access": 5,
    # 4 model steps
    "train": 4,
    "evaluate": 4,
    "explain": 4,
    # 5 what acts on evaluated models: report, registry and who may act on it, infra validation, serving
    "report": 5,
    "registry": 5,
    "infravalidate": 5,
    "serving": 5,
    # 6 the shells
    "kubeflow": 6,
    "cli": 6,
    "review": 6,
    "tune": 5,
    "cv": 5,
    "corrections": 2,
}


def layer_of(module: str) -> int | None:
    """The layer of a `fracture.*` module (None for the package itself)."""
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every edge from a module to a module of a higher layer."""
    out = []
    for module, deps in sorted(graph.items()):
        mine = layer_of(module)
        for dep in sorted(deps):
            theirs = layer_of(dep)
            if mine is not None and theirs is not None and theirs > mine:
                out.append(f"{module} (layer {mine}) imports {dep} (layer {theirs})")
    return out


def test_every_root_entry_has_a_layer() -> None:
    entries = {p.stem if p.suffix == ".py" else p.name for p in PACKAGE_DIR.iterdir()}
    entries = {e for e in entries if e != "__init__" and not e.startswith((".", "__"))}
    assert entries - set(LAYERS) == set(), "place these in LAYERS (and the README's layer map)"
    assert len(list(PACKAGE_DIR.iterdir())) <= 31, "the package root holds at most 30 entries (+ __pycache__)"


def test_no_module_imports_a_higher_layer() -> None:
    offenders = upward_imports(import_graph())
    assert not offenders, "\n".join(offenders)


def test_the_layer_check_catches_a_planted_upward_import() -> None:
    graph = import_graph()
    graph["fracture.stats.metrics"] = graph["fracture.stats.metrics"] | {"fracture.registry.client"}
    assert upward_imports(graph) == ["fracture.stats.metrics (layer 1) imports fracture.registry.client (layer 5)"]


def test_no_module_over_600_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE_DIR)): n
        for p in PACKAGE_DIR.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long, long
