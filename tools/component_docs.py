"""Each KFP component's README (components/<step>/README.md), written from the component itself.

The inputs, outputs and parameters come from the compiled component spec, the summary from the function's
docstring, the step it calls from its body: a README can't drift from its component. `python -m
tools.component_docs` rewrites them; `--check` exits 1 naming any that is out of date (tests/unit run it).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import sys
from pathlib import Path

from kfp.dsl.types import type_annotations

REPO = Path(__file__).resolve().parents[1]
COMPONENTS = REPO / "components"


def component_of(step: str):  # noqa: ANN201 - a kfp PythonComponent
    """The component object defined in components/<step>/component.py (the one `@dsl.component` function)."""
    module = importlib.import_module(f"fracture.kubeflow.components.{step}.component")
    found = [
        v for v in vars(module).values() if hasattr(v, "python_func") and v.python_func.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise SystemExit(f"components/{step}/component.py: expected one component, found {len(found)}")
    return found[0]


def _step_called(component) -> str:  # noqa: ANN001
    tree = ast.parse(inspect.getsource(component.python_func))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names]
    return next((n for n in names if n.endswith("_step")), "?")


def _rows(component) -> tuple[list[str], list[str], list[str]]:  # noqa: ANN001
    params, inputs, outputs = [], [], []
    for name, parameter in inspect.signature(component.python_func).parameters.items():
        annotation = parameter.annotation
        if type_annotations.is_Input_Output_artifact_annotation(annotation):
            kind = type_annotations.get_io_artifact_class(annotation).__name__
            target = outputs if type_annotations.is_artifact_wrapped_in_Output(annotation) else inputs
            target.append(f"| `{name}` | {kind} |")
        else:
            params.append(f"| `{name}` | {getattr(annotation, '__name__', annotation)} |")
    return params, inputs, outputs


def readme(step: str) -> str:
    """The README text of components/<step>."""
    component = component_of(step)
    doc = inspect.getdoc(component.python_func) or ""
    module_doc = (importlib.import_module(f"fracture.kubeflow.components.{step}.component").__doc__ or "").strip()
    params, inputs, outputs = _rows(component)

    def table(title: str, rows: list[str], what: str) -> list[str]:
        return (
            [f"## {title}", "", f"| {what} | type |", "|---|---|", *rows, ""]
            if rows
            else [f"## {title}", "", "None.", ""]
        )

    lines = [
        f"# `{step}` component",
        "",
        module_doc,
        "",
        doc,
        "",
        f"Runs `fracture.kubeflow.steps.{_step_called(component)}` (the same `run_<step>` as the CLI and the DVC",
        f"stage) in the project's one container image. Its test: `tests/test_{step}_component.py` calls the",
        "component's function with fake artifacts and checks which path reaches which argument.",
        "",
        *table("Parameters", params, "name"),
        *table("Inputs", inputs, "artifact"),
        *table("Outputs", outputs, "artifact"),
        "This file is generated from the component (`python -m tools.component_docs`); edit the component instead.",
        "",
    ]
    return "\n".join(lines)


def steps() -> list[str]:
    """Every component folder."""
    return sorted(p.parent.name for p in COMPONENTS.glob("*/component.py"))


def main(argv: list[str] | None = None) -> int:
    """Write the READMEs, or with --check list the stale ones (exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m tools.component_docs", description=main.__doc__)
    parser.add_argument("--check", action="store_true")
    check = parser.parse_args(argv).check
    stale = []
    for step in steps():
        path = COMPONENTS / step / "README.md"
        text = readme(step)
        if path.exists() and path.read_text() == text:
            continue
        if check:
            stale.append(str(path.relative_to(REPO)))
        else:
            path.write_text(text)
    for name in stale:
        print(f"{name} is out of date: python -m tools.component_docs", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
