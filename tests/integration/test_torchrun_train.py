"""`torchrun --standalone --nproc_per_node=2 -m fracture.cli train` on CPU (gloo): one model dir, one MLflow run.

A run of 2 processes writes exactly what a single process writes (rank 0 alone writes files and logs); a run whose
processes are killed after its first checkpoint resumes under torchrun to the uninterrupted run's weights, in
the same MLflow run. The TrainJob node entry point trains from a staged folder with only the `PET_*` variables the
Kubeflow Trainer torch runtime sets (one node, two processes here).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import psutil
import pytest
import torch

from fracture.config import dump_params, load_params
from fracture.kubeflow.trainjob_stage import put_inputs
from fracture.tracking import MODEL_DIGEST_TAG, model_digest
from tests.procs import kill_at_first_checkpoint
from tests.unit.train.test_train import TINY, assert_same_weights, write_tiny_dataset

pytestmark = pytest.mark.slow

EPOCHS = 3
MODEL_DIR_FILES = ["checkpoints", "config.json", "history.csv", "metadata.json", "model.pt", "params.yaml"]


def _cmd(data: dict, params_path: Path, out: Path, *extra: str) -> list[str]:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return [
        *torchrun, "-m", "fracture.cli", "train", "--manifest", str(data["manifest"]), "--splits", str(data["splits"]),
        "--cache", str(data["cache"]), "--out", str(out), "--params", str(params_path), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_params) -> tuple[dict, Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("torchrun")
    data = write_tiny_dataset(root / "data", n={"train": 64, "val": 16, "test": 8})
    train = {**TINY["train"], "epochs": EPOCHS, "batch_size": 8, "effective_batch_size": 16}
    params_path = root / "params.yaml"
    dump_params(make_params({**TINY, "train": train}), params_path)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    return data, params_path, env


@pytest.fixture(scope="module")
def full_run(setup, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    data, params_path, env = setup
    out = tmp_path_factory.mktemp("full") / "model"
    done = subprocess.run(_cmd(data, params_path, out), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done


def _runs(env: dict[str, str]) -> list:
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_two_processes_write_one_complete_model_dir_and_one_mlflow_run(setup, full_run):
    _, _, env = setup
    out, done = full_run
    assert sorted(p.name for p in out.iterdir()) == MODEL_DIR_FILES
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert "2 process(es) x batch 8 x accumulation 1 per step" in done.stderr
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))
    runs = _runs(env)
    assert len(runs) == 1, [r.info.run_name for r in runs]
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.tags[MODEL_DIGEST_TAG] == model_digest(out)  # the run points at the model, not back


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and every rank (torchrun starts its workers in sessions of their own), as a lost node."""
    victims = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    for pid in victims[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(timeout=30)


def test_resume_under_torchrun_reaches_the_uninterrupted_weights(setup, full_run, tmp_path):
    data, params_path, env = setup
    killed = tmp_path / "model"
    kill_at_first_checkpoint(_cmd(data, params_path, killed), env, killed, _kill_all)
    assert not (killed / "model.pt").exists(), "the run finished before it could be killed"
    epoch_at_kill = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert 1 <= epoch_at_kill < EPOCHS

    resumed = subprocess.run(
        _cmd(data, params_path, killed, "--resume"), env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"after epoch {epoch_at_kill}" in resumed.stderr, resumed.stderr[-4000:]

    assert_same_weights(full_run[0], killed)
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    run = max(_runs(env), key=lambda r: r.info.start_time)  # the killed run, reopened by the resume
    assert run.info.status == "FINISHED" and run.data.tags[MODEL_DIGEST_TAG] == model_digest(killed)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/auroc")) == list(range(1, EPOCHS + 1))
    assert len(_runs(env)) == 2, "the full run and the killed-then-resumed one"


def test_a_trainjob_node_trains_from_the_stage_with_the_runtime_pet_variables(setup, tmp_path):
    data, params_path, env = setup
    root = tmp_path / "stage" / "fracture-train-1"
    put_inputs(str(root), data["manifest"], data["splits"], data["cache"], load_params(params_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pet = {"PET_NNODES": "1", "PET_NPROC_PER_NODE": "2", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "127.0.0.1"}
    node_env = {**env, **pet, "PET_MASTER_PORT": str(port)}
    cmd = [sys.executable, "-m", "fracture.kubeflow.trainjob_node", str(root)]
    done = subprocess.run(cmd, env=node_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (root / "model").iterdir()) == MODEL_DIR_FILES
    assert "2 process(es) x batch 8 x accumulation 1 per step" in done.stderr
