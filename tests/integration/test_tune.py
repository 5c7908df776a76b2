"""`fracture tune` on local Ray: ASHA stops a planted trial that cannot learn, a failing trial is recorded and the
search goes on, a search killed with SIGKILL resumes, MLflow holds one parent with a child per trial, and the
best params file trains as is.

One search serves every assertion (Ray's start-up is most of its cost): four grid trials, one at a time so that
ASHA's rung comparison is deterministic: lr=0 (refused by params validation: the failing trial), two that learn,
and lr=1e-9 last (cannot learn: val AUROC stays near chance while the two before it reached about 1 at epoch 1).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml

from fracture.base.errors import InputError
from fracture.base.io import read_json
from fracture.config import dump_params, load_params, parse_params
from fracture.train import run_train
from fracture.tune.run import run_tune
from tests.procs import wait_until
from tests.unit.train.test_train import TINY, write_tiny_dataset

pytestmark = pytest.mark.slow

EPOCHS = 3
GRID = [0.0, 0.004, 0.002, 1.0e-9]  # failing, learns, learns, cannot learn (ASHA stops it at epoch 1)
SPACE = {
    "scheduler": {"grace_period": 1, "reduction_factor": 2},
    "max_concurrent_trials": 1,
    "resources_per_trial": {"cpu": 1, "gpu": "auto"},
    "space": {"train.lr": {"grid": GRID}},
}


def _cmd(data: dict, root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "fracture.cli", "tune", "--params", str(root / "params.yaml"), "--space",
        str(root / "space.yaml"), "--trials", "1", "--out", str(root / "out"), "--manifest", str(data["manifest"]),
        "--splits", str(data["splits"]), "--cache", str(data["cache"]), *extra,
    ]  # fmt: skip


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the search and the local Ray it started (a lost node: nothing gets to clean up)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _one_ended_one_mid_trial(out: Path) -> bool:
    """A learning trial has ended (its checkpoints removed) and the next one has written a checkpoint."""
    dirs = [d for d in (out / "trials").glob("*") if d.is_dir()] if (out / "trials").is_dir() else []
    ended = [d for d in dirs if not (d / "checkpoints").exists()]
    running = [d for d in dirs if (d / "checkpoints" / "last.pt").exists()]
    return bool(ended and running)


@pytest.fixture(scope="module")
def search(make_params, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tune")
    data = write_tiny_dataset(root / "data", n={"train": 64, "val": 32, "test": 8})
    params = make_params({**TINY, "train": {**TINY["train"], "epochs": EPOCHS}})
    dump_params(params, root / "params.yaml")
    (root / "space.yaml").write_text(yaml.safe_dump(SPACE))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}

    proc = subprocess.Popen(
        _cmd(data, root), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    wait_until(proc, lambda: _one_ended_one_mid_trial(root / "out"), _kill_group, timeout=240)
    _kill_group(proc)
    proc.stderr.close()
    assert not (root / "out" / "best.json").exists(), "the search finished before it could be killed"
    (killed_at,) = [d for d in (root / "out" / "trials").iterdir() if (d / "checkpoints" / "last.pt").exists()]
    epoch_at_kill = torch.load(killed_at / "checkpoints" / "last.pt", weights_only=True)["epoch"]

    resumed = subprocess.run(_cmd(data, root, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    return {
        "root": root, "data": data, "params": params, "env": env, "resumed": resumed,
        "killed_at": killed_at.name, "epoch_at_kill": epoch_at_kill,
    }  # fmt: skip


def test_a_search_dir_is_not_overwritten_without_resume(search):
    root, data = search["root"], search["data"]
    args = (root / "space.yaml", data["manifest"], data["splits"], data["cache"], root / "out", 1)
    with pytest.raises(InputError, match="holds a search already; pass --resume"):
        run_tune(search["params"], *args)


def test_asha_stops_the_planted_trial_and_the_failing_one_is_recorded(search):
    table = pd.read_csv(search["root"] / "out" / "trials.csv").set_index("config.train.lr")
    assert sorted(table.index) == sorted(GRID)
    failed = table.loc[0.0]
    assert failed["status"] == "error" and "train.lr" in failed["error"]
    planted = table.loc[1.0e-9]
    assert planted["status"] == "finished" and planted["stopped_early"] and planted["epochs"] < EPOCHS
    for lr in (0.004, 0.002):
        assert table.loc[lr, "epochs"] == EPOCHS and not table.loc[lr, "stopped_early"]
        assert table.loc[lr, "best_val_auroc"] > planted["best_val_auroc"]


def test_the_killed_search_resumed_its_interrupted_trial_from_its_checkpoint(search):
    assert "restoring the search in" in search["resumed"].stderr
    client = mlflow.MlflowClient(search["env"]["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(search["params"].train.experiment)
    where = f"tags.`fracture.tune.trial_id` = '{search['killed_at']}'"
    (run,) = client.search_runs([exp.experiment_id], where)  # the same child run, reopened
    assert run.info.status == "FINISHED"
    # Continued from the checkpoint of the epoch it was killed in, not retrained from epoch 1.
    assert 1 <= search["epoch_at_kill"] < EPOCHS
    assert run.data.tags["fracture.tune.resumed_from_epoch"] == str(search["epoch_at_kill"])
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/auroc"))
    # Every epoch once; an epoch whose report was still in flight at the kill may be missing (its checkpoint is not).
    assert len(steps) == len(set(steps)) and set(range(search["epoch_at_kill"] + 1, EPOCHS + 1)) <= set(steps)


def test_mlflow_holds_one_parent_and_a_child_run_per_trial(search):
    client = mlflow.MlflowClient(search["env"]["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(search["params"].train.experiment)
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("fracture.step") == "tune"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(GRID) == len(runs) - 1
    best = read_json(search["root"] / "out" / "best.json")
    assert parent.info.status == "FINISHED"
    assert json.loads(parent.data.params["space.space.train.lr.grid"]) == GRID
    assert parent.data.tags["best.trial_id"] == best["trial_id"]
    assert parent.data.metrics["best/val_auroc"] == pytest.approx(best["val_auroc"])
    by_lr = {float(r.data.params["train.lr"]): r for r in children}
    assert by_lr[0.0].info.status == "FAILED" and "train.lr" in by_lr[0.0].data.tags["fracture.tune.error"]
    assert by_lr[1.0e-9].data.tags["fracture.tune.stopped_early"] == "true"
    assert {r.info.status for lr, r in by_lr.items() if lr} == {"FINISHED"}


def test_the_best_params_file_is_complete_and_trains(search, tmp_path):
    out = search["root"] / "out"
    best = read_json(out / "best.json")
    assert best["config"]["train.lr"] in (0.004, 0.002) and best["val_auroc"] > 0.9
    assert best["dvc_exp_run"] == ["dvc", "exp", "run", "-S", f"train.lr={best['config']['train.lr']}"]
    tuned = load_params(out / "best_params.yaml")
    base = search["params"].to_dict()
    base["train"]["lr"] = best["config"]["train.lr"]
    assert tuned.to_dict() == base  # every other key as in the base params
    one_epoch = tuned.to_dict()
    one_epoch["train"]["epochs"] = 1
    data, before = search["data"], torch.get_num_threads()
    torch.set_num_threads(1)  # as the trials ran; more OpenMP threads than free cores stall on a shared runner
    try:
        result = run_train(parse_params(one_epoch), data["manifest"], data["splits"], data["cache"], tmp_path / "m")
    finally:
        torch.set_num_threads(before)
    assert result["epochs_run"] == 1 and (tmp_path / "m" / "model.pt").is_file()
