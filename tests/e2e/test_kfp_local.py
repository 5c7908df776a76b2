"""The same steps as one Kubeflow pipeline, run locally through kfp.local.SubprocessRunner."""

import os
import shutil
import subprocess

import mlflow
import pytest
import yaml

from tests.e2e.conftest import REPO, WIRING_OVERRIDES, project_env, shrink_params

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_pipeline_run_local_registers_a_model_and_writes_a_report(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shrink_params(tmp_path, WIRING_OVERRIDES)
    params_path = tmp_path / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    store = tmp_path / "mlflow.db"
    env = project_env(MLFLOW_TRACKING_URI=f"sqlite:///{store}")
    out = tmp_path / "kfp"
    proc = subprocess.run(
        ["fracture", "pipeline", "run-local", "--out", str(out), "--params", str(params_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    reports = [p for p in (out / "pipeline_root").rglob("report") if p.is_file()]
    assert reports, "no report artifact"
    assert "<html" in reports[0].read_text().lower()
    registrations = [p for p in (out / "pipeline_root").rglob("registration") if p.is_file()]
    assert registrations, "register did not run (gate or infra validation failed?)\n" + proc.stderr[-6000:]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    version = client.get_model_version_by_alias(params["register"]["model_name"], "challenger")
    assert int(version.version) >= 1
    assert version.tags["infra_validation.passed"] == "true"  # the infravalidate task served and replayed it
    assert not os.environ.get("FRACTURE_DATA_ROOT")
