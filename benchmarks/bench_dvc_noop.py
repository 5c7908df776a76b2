"""Benchmark 6: a no-op `dvc repro` of the demo DAG after a full run.

The project is copied into a throw-away git repository (tracked + untracked-not-ignored files, as a fresh clone
would hold), its params.yaml shrunk (small synthetic set, one epoch, 100 bootstrap resamples, the evaluation gate
opened so that the one-epoch model may register: this benchmark measures DVC's bookkeeping, not the model), and
`dvc repro` run once in full. Then `dvc repro` (must report "Data and pipelines are up to date" and run no stage)
and `dvc status` are timed, interleaved, 3 times each.
Value: median seconds of the no-op `dvc repro`. Baseline: median seconds of `dvc status` on the same project
(the cheapest command that also hashes every dependency and output). Target: under 5 s.
Quick mode (smoke test) times the same commands on a minimal one-stage DVC project instead of the demo DAG.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Target,
    alternate,
    copy_project,
    make_result,
    median,
    project_env,
    scratch_dir,
    shrink_params,
    spread,
)

NAME = "dvc_noop"
TARGET_SECONDS = 5.0
DEMO_OVERRIDES = {
    "synth": {"n_per_source": 32, "min_side": 128, "max_side": 192},
    "validate": {"image_sample": 16},
    "train": {"epochs": 1, "batch_size": 16},
    "evaluate": {
        "n_bootstrap": 100,
        "min_subgroup_n": 10,
        "gate": {"min_auroc": 0.0, "min_sensitivity": 0.0, "min_specificity": 0.0},
    },
    "explain": {"n_per_category": 1},
}
UP_TO_DATE = "Data and pipelines are up to date"


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the venv's dvc in `project`; raises with the output tail when it fails."""
    exe = str(Path(sys.executable).with_name("dvc"))
    proc = subprocess.run([exe, *args], cwd=project, env=project_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc


def noop_repro(project: Path) -> None:
    """`dvc repro` that must not run any stage."""
    out = dvc(project, "repro").stdout
    if UP_TO_DATE not in out or "Running stage" in out:
        raise RuntimeError(f"the second dvc repro was not a no-op:\n{out[-3000:]}")


def demo_project(work: Path) -> Path:
    """A copy of this project whose (shrunk) demo DAG has run once through `dvc repro`."""
    project = copy_project(work / "project")
    shrink_params(project, DEMO_OVERRIDES)
    dvc(project, "repro")
    return project


def minimal_project(work: Path) -> Path:
    """A one-stage DVC project (quick mode): git + dvc init, a stage writing one file, run once."""
    project = work / "mini"
    project.mkdir()
    (project / "params.yaml").write_text("n: 1\n")
    script = "import yaml; open('out.txt', 'w').write(str(yaml.safe_load(open('params.yaml'))['n']))"
    (project / "dvc.yaml").write_text(
        f'stages:\n  make:\n    cmd: {Path(sys.executable)} -c "{script}"\n    params: [n]\n    outs: [out.txt]\n'
    )
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    dvc(project, "init", "-q")
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "mini"], cwd=project, check=True)
    dvc(project, "repro")
    return project


def run(quick: bool = False) -> dict[str, Any]:
    """Seconds of a no-op `dvc repro` after a full run (median of 3), against `dvc status` on the same project."""
    reps = 1 if quick else 3
    with scratch_dir(NAME) as work:
        project = minimal_project(work) if quick else demo_project(work)
        stages = dvc(project, "stage", "list", "--name-only").stdout.split()
        times = alternate({"repro": lambda: noop_repro(project), "status": lambda: dvc(project, "status")}, reps)
    repro_s, status_s = median(times["repro"]), median(times["status"])
    details = {
        "project": "minimal one-stage project (quick mode)" if quick else "demo DAG (dvc.yaml) after a full run",
        "stages": stages,
        "params_overrides": {} if quick else DEMO_OVERRIDES,
        "seconds": {k: spread(v) for k, v in times.items()},
        "baseline": "`dvc status` on the same project (hashes the same deps and outs, runs nothing)",
    }
    return make_result(
        NAME,
        "noop_repro_seconds",
        repro_s,
        status_s,
        "s",
        Target(TARGET_SECONDS, op="<=", on="value", text="no-op dvc repro under 5 s"),
        details,
        higher_is_better=False,
    )
