"""Helpers for end-to-end tests: a throw-away copy of the project, and small demo params."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# The demo DAG as `make demo` runs it (so the test proves the demo learns), with fewer bootstrap resamples.
E2E_OVERRIDES = {"evaluate": {"n_bootstrap": 200}}
# For wiring tests that need not learn: small data, one epoch, a gate that any model passes.
WIRING_OVERRIDES = {
    "synth": {"n_per_source": 32},
    "train": {"epochs": 1},
    "evaluate": {"n_bootstrap": 100, "min_subgroup_n": 10, "gate": {"min_auroc": 0.0, "min_sensitivity": 0.0}},
}


def project_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files: what a fresh clone of this tree would hold."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    return [f for f in out.split("\0") if f and (REPO / f).is_file()]


def copy_project(dst: Path) -> Path:
    """Copy the project into `dst` as a fresh git repository with one commit."""
    for rel in project_files():
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dst, check=True)
    subprocess.run(git + ["commit", "-qm", "copy"], cwd=dst, check=True)
    return dst


def shrink_params(project: Path, overrides: dict) -> None:
    """Edit the copy's params.yaml in place (what `dvc exp run -S` would do)."""
    path = project / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        data[section].update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def project_env(**extra: str) -> dict[str, str]:
    """Environment for commands in a copy: the venv first on PATH, the embedded MLflow store, no progress bars."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["FRACTURE_NO_PROGRESS"] = "1"
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project whose demo DAG has run once through `dvc repro`."""
    project = copy_project(tmp_path_factory.mktemp("project"))
    shrink_params(project, E2E_OVERRIDES)
    proc = subprocess.run(["dvc", "repro"], cwd=project, env=project_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return project
