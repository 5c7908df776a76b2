"""What `make demo` prints at the end: where the outputs are and how to look at them."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fracture.config import Params
from fracture.tracking import tracking_uri


def summary_lines(params: Params) -> list[str]:
    """Human-readable pointers to the demo's report, metrics, registered model and MLflow UI (params `paths`)."""
    report, registration = Path(params.paths.report), Path(params.paths.registration)
    metrics = Path(params.paths.eval) / "metrics.json"
    lines = ["", "Demo finished."]
    if metrics.exists():
        m = json.loads(metrics.read_text())
        auroc = m.get("test.auroc")
        lo, hi = m.get("test.auroc_ci_low"), m.get("test.auroc_ci_high")
        if auroc is not None:
            ci = f" (95% CI {lo:.3f}-{hi:.3f})" if lo is not None and hi is not None else ""
            lines.append(f"  test AUROC (external domain): {auroc:.3f}{ci}")
    if report.exists():
        lines.append(f"  evaluation report: {report.resolve()}  (open in a browser)")
    if registration.exists():
        reg = json.loads(registration.read_text())
        lines.append(f"  registered model: {reg.get('name')} version {reg.get('version')} (alias challenger)")
    uri = tracking_uri()
    lines.append(f"  MLflow store: {uri}")
    if uri.startswith("sqlite:"):
        lines.append(
            f"  MLflow UI: .venv/bin/mlflow ui --backend-store-uri {uri} --port 5000  -> http://127.0.0.1:5000"
        )
    lines.append("  metrics: .venv/bin/dvc metrics show    plots: .venv/bin/dvc plots show")
    return lines


def print_summary(params: Params) -> None:
    """Print the summary to stdout (the CLI's output)."""
    typer.echo("\n".join(summary_lines(params)))
