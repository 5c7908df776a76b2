"""The design card's top level is the package's: components/ and pipelines/ are mapped into it, never imported bare.

pyproject.toml writes the package list out (setuptools `packages` + `package-dir`); these tests keep it complete, keep
every component documented and tested, and keep the bare top-level names out of every import.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAPPED = {"components": "fracture.kubeflow.components", "pipelines": "fracture.kubeflow.pipelines"}


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def packages_on_disk() -> set[str]:
    """Every folder with an __init__.py under fracture/ and the mapped folders (their tests/ are not packages)."""
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "fracture").rglob("__init__.py")}
    for folder, name in MAPPED.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            found.add(".".join([name, *rel]))
    return found


def test_the_package_list_names_every_package_and_nothing_else():
    listed = set(_setuptools()["packages"])
    assert listed == packages_on_disk(), {
        "unlisted": packages_on_disk() - listed,
        "absent": listed - packages_on_disk(),
    }
    assert _setuptools()["package-dir"] == {name: folder for folder, name in MAPPED.items()}


def bare_imports(tree: ast.AST) -> list[str]:
    """`import components...` / `from pipelines import ...`: the top-level names instead of the package's."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [n for n in names if n.split(".")[0] in MAPPED]


def test_nothing_imports_components_or_pipelines_by_their_top_level_names():
    skip = {".venv", ".git", "build", "data", "models", "reports"}
    files = [p for p in REPO.rglob("*.py") if not skip & set(p.relative_to(REPO).parts)]
    offenders = {str(p.relative_to(REPO)): bare for p in files if (bare := bare_imports(ast.parse(p.read_text())))}
    assert not offenders, offenders


def test_the_bare_import_check_catches_one():
    assert bare_imports(ast.parse("import components.train.component\nfrom pipelines import training")) == [
        "components.train.component",
        "pipelines",
    ]


def test_every_component_has_its_readme_up_to_date_and_its_own_test():
    from tools.component_docs import main, steps

    assert main(["--check"]) == 0, "run: python -m tools.component_docs"
    for step in steps():
        assert (REPO / "components" / step / "tests" / f"test_{step}_component.py").is_file(), step
