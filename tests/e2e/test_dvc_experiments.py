"""After the demo: what a fresh run must reproduce of the committed dvc.lock, and experiments compared through DVC.

Reuses the session's demo project (tests/e2e/conftest.py). The README's comparison block runs as written in a
fresh shell on top of it: a baseline commit, one `dvc exp run --temp` of two epochs beside the demo, the
comparison commands, and the return to the demo (so the other e2e tests find the demo's workspace as it was).
"""

import hashlib
import json
import os
import re
import shlex
import subprocess

import pytest

from tests.e2e.conftest import REPO, demo_env
from tests.lockcheck import load_lock, portable_problems
from tools.demo import EXP_SHOW_FLAGS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXPERIMENT = "two-epochs"  # the name the README's block gives it
HEADLINE = "reports/eval/headline.json"
MARKER = "<!-- comparison-example"
DEMO_OUTPUTS = ("models/demo/model.pt", "models/demo/config.json", HEADLINE, "reports/eval/metrics.json")


def _run(project, *cmd, **env):
    return subprocess.run(list(cmd), cwd=project, env=demo_env(**env), capture_output=True, text=True)


def readme_comparison_block() -> str:
    """The bash block after the comparison-example marker (docs/experiments.md)."""
    text = (REPO / "docs" / "experiments.md").read_text()
    return re.findall(r"```bash\n(.*?)```", text[text.index(MARKER) :], flags=re.S)[0]


def fresh_shell_env(project) -> dict[str, str]:
    """A login-like shell: system PATH only (the block activates the venv), a user whose git knows their name."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(project.parent), "LANG": "C.UTF-8"}
    env.update(GIT_AUTHOR_NAME="Demo User", GIT_AUTHOR_EMAIL="demo@example.org")
    env.update(GIT_COMMITTER_NAME="Demo User", GIT_COMMITTER_EMAIL="demo@example.org", FRACTURE_NO_PROGRESS="1")
    if os.environ.get("PYTHONPATH"):  # the worktree under test, when the venv's installed package is another tree
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _digests(project) -> dict[str, str]:
    return {rel: hashlib.sha256((project / rel).read_bytes()).hexdigest() for rel in DEMO_OUTPUTS}


def test_fresh_demo_reproduces_the_committed_lock_where_any_machine_must(demo_project):
    """Commands, params, code dependencies and the synthetic data: identical to the commit on any x86-64 CPU.

    Training and what follows it may hash differently on another CPU (README, "dvc.lock after make demo");
    `.ci/run` checks those byte for byte against this session's run on the same machine.
    """
    problems = portable_problems(load_lock(REPO / "dvc.lock"), load_lock(demo_project / "dvc.lock"))
    assert not problems, "\n".join(problems) + "\n(a stale dvc.lock: run make demo and commit it)"


@pytest.fixture(scope="module")
def comparison(demo_project):
    """Run the README's comparison block in a fresh shell; the demo outputs' digests before it, and its output."""
    (demo_project / ".venv").symlink_to(REPO / ".venv")
    before = _digests(demo_project)
    script = "set -euo pipefail\nset -x\n" + readme_comparison_block()
    proc = subprocess.run(
        ["bash", "-c", script], cwd=demo_project, env=fresh_shell_env(demo_project), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return before, proc.stdout


def test_readme_comparison_prints_numeric_changes_between_demo_and_experiment(comparison):
    _, out = comparison
    rows = [line.split() for line in out.splitlines() if line.startswith(HEADLINE)]
    changes = {row[1]: row[-1] for row in rows if len(row) == 5}
    assert {"auroc", "sens", "spec"} <= set(changes), out
    assert any(float(value) != 0 for value in changes.values() if value != "-"), out


def test_return_to_demo_restores_the_demo_model_and_metrics(demo_project, comparison):
    """The block leaves the demo untouched (--temp); its last line brings the demo back from an experiment's state."""
    before, _ = comparison
    assert _digests(demo_project) == before
    # A workspace that holds the experiment (as `dvc exp run` without --temp leaves it): its params, lock, outputs.
    branch = _run(demo_project, "dvc", "exp", "branch", EXPERIMENT, "e2e-two-epochs-branch")
    assert branch.returncode == 0, branch.stderr
    moved = _run(
        demo_project,
        "bash",
        "-c",
        "git checkout e2e-two-epochs-branch -- params.yaml dvc.lock && dvc checkout dvc.yaml",
    )
    assert moved.returncode == 0, moved.stderr[-2000:]
    assert _digests(demo_project) != before, "the experiment's outputs did not reach the workspace"
    back = readme_comparison_block().strip().splitlines()[-1].split("  #")[0]
    assert back.startswith("git checkout HEAD"), back
    proc = subprocess.run(
        ["bash", "-c", f"source .venv/bin/activate && {back}"],
        cwd=demo_project,
        env=fresh_shell_env(demo_project),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _digests(demo_project) == before
    status = _run(demo_project, "dvc", "status", "dvc.yaml", "--json")
    assert json.loads(status.stdout) == {}, status.stdout


def test_a_failed_gate_is_a_recorded_experiment(demo_project, comparison):
    shown = _run(demo_project, "dvc", "exp", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert EXPERIMENT in shown.stdout
    diff = _run(demo_project, "dvc", "params", "diff", "HEAD", EXPERIMENT, "--json")
    epochs = json.loads(diff.stdout)["params.yaml"]["train.epochs"]
    assert (epochs["old"], epochs["new"]) == (24, 2)


def test_metrics_diff_against_head_gives_numbers_for_every_headline_key(demo_project, comparison):
    proc = _run(demo_project, "dvc", "metrics", "diff", "HEAD", EXPERIMENT, "--all", "--json")
    assert proc.returncode == 0, proc.stderr
    headline = json.loads(proc.stdout)[HEADLINE]
    assert headline["gate_passed"]["new"] == 0, "the 2-epoch model passed the gate: this test needs one it refuses"
    for key in ("primary", "primary_lo", "auroc", "auroc_lo", "auroc_hi", "sens", "spec", "threshold"):
        old, new, change = headline[key]["old"], headline[key]["new"], headline[key].get("diff")
        assert isinstance(old, float) and isinstance(new, float) and change == pytest.approx(new - old), key
    assert headline["auroc"]["diff"] != 0


def test_exp_show_fits_120_columns_with_the_documented_flags(demo_project, comparison):
    proc = _run(demo_project, "dvc", "exp", "show", "--no-pager", *shlex.split(EXP_SHOW_FLAGS), COLUMNS="120")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 120, proc.stdout
    header = " ".join(lines[:4])
    # gate_passed is 0 for both (the demo's 40 test patients make its gate undecidable): --only-changed hides it
    for name in ("primary", "auroc", "sens", "spec", "threshold", "train.epochs"):
        assert name in header, proc.stdout
    assert "…" not in proc.stdout, proc.stdout  # no column cut off
    # No "!" cell: the baseline commit's metrics are in the local cache (HEAD is this machine's demo run).
    assert not any(cell == "!" for line in lines for cell in line.split()), proc.stdout
