"""The same steps as one Kubeflow pipeline, run locally through kfp.local.SubprocessRunner."""

import json
import os
import shutil
import subprocess

import mlflow
import pytest
import yaml

from tests.e2e.conftest import REPO, WIRING_OVERRIDES, project_env, shrink_params

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _run_local(tmp_path, overrides, key=True):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shrink_params(tmp_path, overrides)
    params_path = tmp_path / "params.yaml"
    store = tmp_path / "mlflow.db"
    env = project_env(MLFLOW_TRACKING_URI=f"sqlite:///{store}")
    if not key:  # as typed in a fresh shell: run-local generates the demo data and uses the public demo key
        env.pop("FRACTURE_PSEUDONYM_KEY")
    out = tmp_path / "kfp"
    proc = subprocess.run(
        ["fracture", "pipeline", "run-local", "--out", str(out), "--params", str(params_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc, out, store, yaml.safe_load(params_path.read_text())


def _artifact(out, name):
    found = [p for p in (out / "pipeline_root").rglob(name) if p.is_file()]
    assert found, f"no {name} artifact"
    return found[0]


def test_pipeline_run_local_records_a_refused_registration_with_its_reasons(tmp_path):
    """A model the evaluation gate refuses: infravalidate does not serve it, register records why, as under DVC."""
    # A gate the tiny test set can decide (a coarse precision needs few patients per class) and no model can pass.
    gate = {"min_auroc": 1.0, "min_sensitivity": 1.0, "min_specificity": 1.0, "precision": 0.45}
    refusing = {**WIRING_OVERRIDES, "evaluate": {**WIRING_OVERRIDES["evaluate"], "gate": gate}}
    proc, out, store, params = _run_local(tmp_path, refusing, key=False)
    log = proc.stdout + proc.stderr
    assert "pseudonymised with the public demo key" in log
    record = json.loads(_artifact(out, "registration").read_text())
    assert record["registered"] is False and record["why"] == "gate failed", record
    assert record["reasons"] and not any("undecidable" in reason for reason in record["reasons"]), record
    infra = json.loads(_artifact(out, "infra_validation").read_text())
    assert infra["not_run"] is True and "evaluation gate refused" in infra["reasons"][0]
    assert "not registered: gate failed" in log
    assert "evaluation gate: failed" in log  # the closing summary
    assert (out / "report.html").read_text().lower().count("<html") == 1
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    assert not client.search_model_versions(f"name='{params['register']['model_name']}'")


def test_pipeline_run_local_registers_a_model_and_writes_a_report(tmp_path):
    proc, out, store, params = _run_local(tmp_path, WIRING_OVERRIDES)
    reports = [p for p in (out / "pipeline_root").rglob("report") if p.is_file()]
    assert reports, "no report artifact"
    assert "<html" in reports[0].read_text().lower()
    registrations = [p for p in (out / "pipeline_root").rglob("registration") if p.is_file()]
    assert registrations, "register did not run (gate or infra validation failed?)\n" + proc.stderr[-6000:]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    version = client.get_model_version_by_alias(params["register"]["model_name"], "challenger")
    assert int(version.version) >= 1
    assert version.tags["infra_validation.passed"] == "true"  # the infravalidate task served and replayed it
    summary = (proc.stdout + proc.stderr).split("local run ")[-1]
    for task in ("ingest", "train", "evaluate", "register"):
        assert f"  {task} " in summary, summary
    assert f"registered: {params['register']['model_name']} version" in summary
    assert f"report: {out / 'report.html'}" in summary and (out / "report.html").is_file()
    assert not os.environ.get("FRACTURE_DATA_ROOT")
