"""Helpers for end-to-end tests: a throw-away copy of the project, and small demo params.

Copying the project (a fresh git repo of the tracked and untracked-but-not-ignored files) is shared with the
benchmarks (`benchmarks/common.py`), which time the same `dvc repro` flow.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchmarks.common import REPO, copy_project, project_env, shrink_params

__all__ = ["REPO", "copy_project", "project_env", "shrink_params"]

# The demo DAG as `make demo` runs it (so the test proves the demo learns), with fewer bootstrap resamples.
E2E_OVERRIDES = {"evaluate": {"n_bootstrap": 200}}
# For wiring tests that need not learn: small data, one epoch, a gate that any model passes.
WIRING_OVERRIDES = {
    "synth": {"n_per_source": 32},
    "train": {"epochs": 1},
    "evaluate": {"n_bootstrap": 100, "min_subgroup_n": 10, "gate": {"min_auroc": 0.0, "min_sensitivity": 0.0}},
}


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project whose demo DAG has run once through `dvc repro`."""
    project = copy_project(tmp_path_factory.mktemp("project"))
    shrink_params(project, E2E_OVERRIDES)
    proc = subprocess.run(["dvc", "repro"], cwd=project, env=project_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return project
