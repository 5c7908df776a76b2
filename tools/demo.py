"""What `make demo` prints at the end: where the outputs are and how to look at them."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from fracture.config import Params
from fracture.tracking import UI_PORT, redact, tracking_uri, ui_base, ui_links

# `dvc exp show` in a 120-column terminal: the headline metrics without their CI bounds (`dvc metrics diff` shows
# them) and the params that differ; dependency hashes (columns named by paths), the time and the localization
# figures (`dvc metrics show`) dropped. docs/experiments.md; tests/e2e/test_dvc_experiments.py measures the width.
_LOCALIZATION = r"(pointing_game|energy_inside|shortcut|chance)\..*|n_cases|n_patients"
EXP_SHOW_FLAGS = f"--only-changed --drop 'Created|.*/.*|.*_(lo|hi)|{_LOCALIZATION}'"


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
        from fracture.registry.register import registered_version

        reg = json.loads(registration.read_text())
        found = registered_version(reg["name"], reg["fingerprint"]) if reg.get("registered") else None
        lines.append(registration_line(reg, found))
    uri = redact(tracking_uri())
    lines.append(f"  MLflow store: {uri}")
    ui = ui_base(tracking_uri())
    if ui is None:
        lines.append(f"  MLflow UI: .venv/bin/mlflow ui --backend-store-uri {uri} --port {UI_PORT}, then open")
    else:
        lines.append("  MLflow UI:")
    lines.extend(f"    {link}" for link in mlflow_links(ui or f"http://127.0.0.1:{UI_PORT}", params))
    lines.append("  metrics: .venv/bin/dvc metrics show    plots: .venv/bin/dvc plots show")
    lines.append(f"  compare runs: .venv/bin/dvc exp show {EXP_SHOW_FLAGS}")
    return lines


def registration_line(reg: dict, found: dict | None) -> str:
    """One line for reports/registration.json: the version the registry holds now, or why the gate kept it out.

    Args:
        reg: the outcome `register --out` wrote (name and fingerprint, no version: see registry.register).
        found: the registry's version with that fingerprint now (`registered_version`), or None.
    """
    if reg.get("registered") is False:
        why = reg.get("why") or "gate failed"
        return f"  not registered: {why} ({'; '.join(reg.get('reasons') or []) or 'no reason recorded'})"
    if found is None:
        return f"  registered model: {reg.get('name')}, but this MLflow store has no version with its fingerprint"
    aliases = f" (alias {', '.join(found['aliases'])})" if found["aliases"] else ""
    status = reg.get("gate_status")
    gate = f"; evaluation gate {status}" if status and status != "passed" else ""
    return f"  registered model: {reg.get('name')} version {found['version']}{aliases}{gate}"


def mlflow_links(ui: str, params: Params) -> list[str]:
    """Direct links into the MLflow UI: the training experiment's runs and the registered model's versions."""
    from fracture.registry.client import mlflow_client

    experiment = mlflow_client().get_experiment_by_name(params.train.experiment)
    return ui_links(ui, experiment.experiment_id if experiment else None, params.registered_model_name)


def print_summary(params: Params) -> None:
    """Print the summary to stdout (the CLI's output)."""
    typer.echo("\n".join(summary_lines(params)))


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.demo [--params params.yaml]`: what `make demo` prints at the end."""
    import argparse

    from fracture.config import load_params

    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=main.__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    print_summary(load_params(parser.parse_args(argv).params))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
