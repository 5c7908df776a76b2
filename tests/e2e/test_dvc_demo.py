"""The demo DAG through `dvc repro`: every artifact, a no-op second run, DVC metrics and plots, the registry."""

import json
import subprocess

import mlflow
import pytest

from tests.e2e.conftest import project_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _run(project, *cmd):
    return subprocess.run(list(cmd), cwd=project, env=project_env(), capture_output=True, text=True)


def test_repro_produces_every_artifact(demo_project):
    expected = [
        "data/interim/ingest/manifest.parquet",
        "data/interim/ingest/quarantine.csv",
        "data/interim/ingest/summary.json",
        "reports/validation/validation.json",
        "reports/validation/validation.html",
        "reports/validation/data_docs/index.html",
        "data/interim/split/splits.parquet",
        "data/interim/split/split_summary.json",
        "data/processed/cache/images.npy",
        "models/demo/model.pt",
        "models/demo/config.json",
        "models/demo/metadata.json",
        "reports/eval/metrics.json",
        "reports/eval/gate.json",
        "reports/eval/plots/roc.csv",
        "reports/explain/index.json",
        "reports/report.html",
        "reports/registration.json",
    ]
    missing = [p for p in expected if not (demo_project / p).exists()]
    assert not missing


def test_the_demos_small_test_set_registers_a_challenger_tagged_undecidable(demo_project):
    """About 40 test patients cannot decide the gate at the configured precision: a verdict, not a pass."""
    gate = json.loads((demo_project / "reports/eval/gate.json").read_text())
    assert gate["status"] == "undecidable" and gate["reasons"][0] == "undecidable: n too small", gate
    sizes = [c for c in gate["checks"] if c["name"].startswith("sample_size.")]
    assert any(c["n_observed"] < c["n_needed"] for c in sizes), sizes
    registration = json.loads((demo_project / "reports/registration.json").read_text())
    assert registration["registered"] is True and registration["gate_status"] == "undecidable", registration


def test_model_learns_on_the_demo(demo_project):
    metrics = json.loads((demo_project / "reports/eval/metrics.json").read_text())
    assert metrics["val.auroc"] > 0.75
    assert metrics["test.auroc"] > 0.7


def test_second_repro_is_a_no_op(demo_project):
    proc = _run(demo_project, "dvc", "repro")
    assert proc.returncode == 0, proc.stderr
    assert "Data and pipelines are up to date" in proc.stdout
    assert "Running stage" not in proc.stdout


def test_dvc_metrics_and_plots(demo_project):
    shown = _run(demo_project, "dvc", "metrics", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert set(json.loads(shown.stdout)[""]["data"]["reports/eval/headline.json"]["data"]) >= {"auroc", "gate_passed"}
    plots = _run(demo_project, "dvc", "plots", "show", "--json")
    assert plots.returncode == 0, plots.stderr
    assert set(json.loads(plots.stdout)["data"]) == {
        "roc",
        "precision_recall",
        "calibration",
        "confusion",
        "decision_curve",
    }


def test_demo_model_is_registered_in_the_embedded_store(demo_project):
    reg = json.loads((demo_project / "reports/registration.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{demo_project / 'mlflow.db'}")
    version = client.get_model_version_by_alias(reg["name"], "challenger")
    assert version.tags["fingerprint"] == reg["fingerprint"] and reg["registered"] is True
    assert "version" not in reg  # the outcome only: the same on every fresh run (dvc.lock)


def test_demo_summary_points_at_the_report(demo_project):
    proc = _run(demo_project, "python", "-m", "tools.demo")
    assert proc.returncode == 0, proc.stderr
    assert "report.html" in proc.stdout
    assert "mlflow ui" in proc.stdout
    assert "/#/experiments/" in proc.stdout and "/runs" in proc.stdout  # direct links into the MLflow UI
    assert "/#/models/fracture-swin" in proc.stdout
