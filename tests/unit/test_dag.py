"""The DAG cannot go stale: every stage's `deps` cover every `fracture` module its step runs.

For each stage of dvc.yaml the step module is the one its CLI command imports (read from fracture/cli.py, so the
mapping follows the code). A subprocess imports it with the command's other imports and collects the `fracture.*`
modules in `sys.modules`, then follows function-level `import fracture...` statements of those modules too (the
steps import heavy modules lazily). Each module maps to its file (a package to its folder's files), and a stage
whose deps list neither that file nor a folder above it fails the test, naming the stage and the file.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: argv[1:] are the modules to import; prints the files of every fracture module loaded.
CLOSURE = r"""
import ast, importlib, json, sys
from pathlib import Path

def imported_names(module):
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py"):
        return set()
    names = set()
    for node in ast.walk(ast.parse(Path(path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.split(".")[0] == "fracture"}

for name in sys.argv[1:]:
    importlib.import_module(name)
seen = set()
while todo := [m for m in list(sys.modules) if m.split(".")[0] == "fracture" and m not in seen]:
    for name in todo:
        seen.add(name)
        for other in imported_names(sys.modules[name]):
            try:
                importlib.import_module(other)
            except ImportError:  # `from fracture.x import function`: the function is not a module
                pass
files = {getattr(sys.modules[m], "__file__", None) for m in seen}
print(json.dumps(sorted(f for f in files if f)))
"""
# The package's __init__ holds only the version string; every other fracture file a step loads must be a dep.
IGNORED = {"fracture/__init__.py"}


def command_imports() -> dict[str, list[str]]:
    """CLI command name -> the `fracture` modules its function body imports (fracture/cli.py's AST)."""
    tree = ast.parse((REPO / "fracture/cli.py").read_text(encoding="utf-8"))
    out = {}
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        calls = [d.func for d in fn.decorator_list if isinstance(d, ast.Call)]
        if not any(isinstance(c, ast.Attribute) and c.attr == "command" for c in calls):
            continue
        imports = [n.module for n in ast.walk(fn) if isinstance(n, ast.ImportFrom) and n.module]
        out[fn.name.replace("_", "-")] = sorted({m for m in imports if m.split(".")[0] == "fracture"})
    return out


PIPELINES = ("dvc.yaml", "cv/dvc.yaml")  # the demo DAG and the cross-validation study


def stages() -> dict[str, dict]:
    """Every pipeline's stages (a foreach stage's `do` body), un-templated; cv/dvc.yaml's as `cv/dvc.yaml:<name>`."""
    out = {}
    for pipeline in PIPELINES:
        data = yaml.safe_load((REPO / pipeline).read_text(encoding="utf-8"))
        prefix = "" if pipeline == "dvc.yaml" else f"{pipeline}:"
        out |= {prefix + name: st.get("do", st) for name, st in data["stages"].items()}
    return out


def step_of(stage: dict) -> str:
    """The `fracture <step>` command a stage runs."""
    words = stage["cmd"].split()
    assert words[0] == "fracture", f"stage cmd {stage['cmd']!r} is not a fracture command"
    return words[1]


def loaded_files(module_lists: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per key, the repo-relative files of every fracture module loaded by importing its modules (and lazy imports).

    One fresh interpreter per key, all started at once.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = {
        key: subprocess.Popen(
            [sys.executable, "-c", CLOSURE, "fracture.config", "fracture.base.errors", *modules],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for key, modules in module_lists.items()
    }
    out = {}
    for key, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-2000:]
        out[key] = [str(Path(f).resolve().relative_to(REPO)) for f in json.loads(stdout.splitlines()[-1])]
    return out


@pytest.fixture(scope="module")
def stage_files() -> dict[str, list[str]]:
    """Stage name -> the fracture files its step loads."""
    commands = command_imports()
    return loaded_files({name: commands[step_of(stage)] for name, stage in stages().items()})


def uncovered(files: list[str], deps: list[str]) -> list[str]:
    """The files that no dep names, neither itself nor a folder above it."""
    code = [d.rstrip("/") for d in deps if isinstance(d, str) and d.startswith("fracture")]
    return sorted(f for f in files if f not in IGNORED and not any(f == d or f.startswith(d + "/") for d in code))


def test_uncovered_finds_a_missing_module_and_accepts_folders():
    files = ["fracture/model/core.py", "fracture/sources/mura.py", "fracture/__init__.py"]
    assert uncovered(files, ["fracture/sources"]) == ["fracture/model/core.py"]
    assert uncovered(files, ["fracture/model/core.py", "fracture/sources/"]) == []
    assert uncovered(["fracture/modelx.py"], ["fracture/model"]) == ["fracture/modelx.py"]


def test_every_stage_runs_a_cli_command_that_imports_its_step():
    commands = command_imports()
    for name, stage in stages().items():
        step = step_of(stage)
        assert commands.get(step), f"dvc.yaml stage {name}: `fracture {step}` imports no step module"


@pytest.mark.parametrize("name", list(stages()))
def test_stage_deps_cover_every_module_its_step_loads(name, stage_files):
    missing = uncovered(stage_files[name], stages()[name].get("deps", []))
    assert not missing, f"dvc.yaml stage {name}: deps miss {', '.join(missing)} (imported by its step)"


@pytest.mark.parametrize("name", list(stages()))
def test_stage_code_deps_exist(name):
    deps = [d for d in stages()[name].get("deps", []) if d.startswith("fracture")]
    assert not [d for d in deps if not (REPO / d).exists()], f"dvc.yaml stage {name}: a code dep does not exist"


def test_bytecode_caches_are_not_part_of_a_code_dependency():
    """Regression: after `make test` wrote fracture/registry/__pycache__/, `make demo` hashed it into `register`'s
    code dependency and dvc.lock differed from a clean clone's (what `.ci/run` checks). `.dvcignore` leaves them out.
    """
    from dvc.repo import Repo

    ignore = Repo(str(REPO)).dvcignore
    for package in ("fracture/registry", "fracture/train", "fracture/sources"):
        cache = REPO / package / "__pycache__"
        assert ignore.is_ignored_dir(str(cache)), package
        assert ignore.is_ignored_file(str(cache / "run.cpython-311.pyc")), package
        assert not ignore.is_ignored_file(str(REPO / package / "__init__.py")), package
