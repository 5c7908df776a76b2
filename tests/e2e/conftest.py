"""Helpers for end-to-end tests: a throw-away copy of the project, and small demo params.

Copying the project (a fresh git repo of the tracked and untracked-but-not-ignored files) is shared with the
benchmarks (`benchmarks/common.py`), which time the same `dvc repro` flow.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks.common import REPO, copy_project, project_env, shrink_params

__all__ = ["DEMO_KEY", "FIXTURE_LOCK", "REPO", "copy_project", "demo_env", "project_env", "shrink_params"]

# The demo's pseudonymisation key, as `make demo` sets it (the Makefile's DEMO_KEY; checked below): with it and the
# committed params, a fresh `dvc repro` must reproduce the committed dvc.lock (tests/e2e/test_dvc_experiments.py).
from fracture.sources.privacy import DEMO_KEY  # the Makefile spells it too (checked below)

# Where the session's fresh demo leaves its dvc.lock (git-ignored build/): `.ci/run` checks it against its own.
FIXTURE_LOCK = REPO / "build" / "e2e" / "demo.dvc.lock"
# For wiring tests that need not learn: small data, one epoch, a gate that no model fails (too few patients to
# decide: undecidable, so the model registers as a challenger tagged undecidable).
WIRING_OVERRIDES = {
    "synth": {"n_per_source": 32},
    "train": {"epochs": 1},
    "evaluate": {
        "n_bootstrap": 100,
        "min_subgroup_n": 10,
        "gate": {"min_auroc": 0.0, "min_sensitivity": 0.0, "min_specificity": 0.0},
    },
}


def demo_env(**extra: str) -> dict[str, str]:
    """project_env with the demo's pseudonymisation key, as `make demo` runs the DAG."""
    return project_env(FRACTURE_PSEUDONYM_KEY=DEMO_KEY, **extra)


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project whose demo DAG has run once through `dvc repro`, exactly as `make demo` runs it."""
    assert f"DEMO_KEY := {DEMO_KEY}\n" in (REPO / "Makefile").read_text(), "DEMO_KEY differs from the Makefile's"
    project = copy_project(tmp_path_factory.mktemp("project"))
    proc = subprocess.run(["dvc", "repro"], cwd=project, env=demo_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # `.ci/run` compares this fresh run's lock with its own `make demo` on the same machine (two fresh runs agree).
    FIXTURE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(project / "dvc.lock", FIXTURE_LOCK)
    return project
