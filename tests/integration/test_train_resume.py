"""`kill -9` during training, then `fracture train --resume`: the same final weights as a run never interrupted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from fracture.config import dump_params
from fracture.tracking import MODEL_DIGEST_TAG, model_digest
from tests.procs import kill_at_first_checkpoint, sigkill
from tests.unit.train.test_train import TINY, assert_same_weights, write_tiny_dataset

pytestmark = pytest.mark.slow

EPOCHS = 4


def _cmd(data: dict, params_path: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "fracture.cli", "train", "--manifest", str(data["manifest"]), "--splits",
        str(data["splits"]), "--cache", str(data["cache"]), "--out", str(out), "--params", str(params_path), *extra,
    ]  # fmt: skip


def _env(tmp_path: Path) -> dict[str, str]:
    # One thread in every process: identical float reductions, so weights can be compared bit for bit.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}


def test_kill_9_then_resume_reaches_the_uninterrupted_weights(make_params, tmp_path):
    data = write_tiny_dataset(tmp_path / "data", n={"train": 128, "val": 32, "test": 16})
    params = make_params({**TINY, "train": {**TINY["train"], "epochs": EPOCHS}})
    params_path = tmp_path / "params.yaml"
    dump_params(params, params_path)
    env = _env(tmp_path)

    full = tmp_path / "full"
    subprocess.run(_cmd(data, params_path, full), env=env, check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    kill_at_first_checkpoint(_cmd(data, params_path, killed), env, killed, sigkill)
    assert not (killed / "model.pt").exists(), "the run finished before it could be killed"
    epoch_at_kill = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert 1 <= epoch_at_kill < EPOCHS

    resumed = subprocess.run(
        _cmd(data, params_path, killed, "--resume"), env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {killed / 'checkpoints' / 'last.pt'} after epoch {epoch_at_kill}" in resumed.stderr

    assert_same_weights(full, killed)
    h_full, h_resumed = (pd.read_csv(d / "history.csv") for d in (full, killed))
    pd.testing.assert_frame_equal(h_full, h_resumed)

    # The resumed process reopened the killed run: one MLflow run with every epoch's metrics, now finished.
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(params.train.experiment)
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    assert len(runs) == 2, "the full run and the killed-then-resumed one"
    run = runs[0]  # the killed run, found again by its checkpoint tag (the checkpoint holds no run id)
    assert run.info.status == "FINISHED" and run.data.tags[MODEL_DIGEST_TAG] == model_digest(killed)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/auroc")) == list(range(1, EPOCHS + 1))
