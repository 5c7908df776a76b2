"""One owner for every artifact name (fracture/contracts/artifacts.py): no other module spells one, and the KFP
components' artifacts are the steps' declared inputs and outputs."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from kfp.dsl.types import type_annotations

from fracture.contracts import artifacts
from fracture.contracts.artifacts import STEPS, artifact_file_names

REPO = Path(__file__).resolve().parents[3]
OWNER = REPO / "fracture" / "contracts" / "artifacts.py"


def literals(path: Path, names: frozenset[str]) -> list[str]:
    """Artifact file names written as string literals in a module (docstrings and comments are prose, not code)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings
    ]


def test_no_artifact_file_name_is_spelled_outside_its_owner():
    names = artifact_file_names() - {artifacts.PARAMS_COPY}  # params.yaml is also the CLI's default params file
    files = [p for root in ("fracture", "components", "pipelines") for p in (REPO / root).rglob("*.py") if p != OWNER]
    offenders = [hit for p in files if "tests" not in p.parts for hit in literals(p, names)]
    assert not offenders, "\n".join(offenders)


def test_the_literal_check_catches_one(tmp_path):
    planted = REPO / "fracture" / "contracts" / "_planted_for_test.py"
    planted.write_text('"""Doc mentions manifest.parquet."""\nPATH = "manifest.parquet"\n')
    try:
        assert literals(planted, artifact_file_names()) == [
            "fracture/contracts/_planted_for_test.py:2: 'manifest.parquet'"
        ]
    finally:
        planted.unlink()


def test_every_component_exchanges_its_steps_declared_artifacts():
    from tools.component_docs import component_of

    for name, spec in STEPS.items():
        component = component_of(name)
        given = {"in": set(), "out": set()}
        for arg, parameter in inspect.signature(component.python_func).parameters.items():
            annotation = parameter.annotation
            if type_annotations.is_Input_Output_artifact_annotation(annotation):
                given["out" if type_annotations.is_artifact_wrapped_in_Output(annotation) else "in"].add(arg)
        assert set(spec.inputs) <= given["in"], (name, given)
        assert set(spec.outputs) <= given["out"], (name, given)
