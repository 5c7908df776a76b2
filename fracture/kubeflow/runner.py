"""`fracture pipeline compile | run-local | submit`: the Kubeflow shell around the same steps."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from fracture.config import Params
from fracture.kubeflow.pipelines.training import build_pipeline

log = logging.getLogger(__name__)


def run_compile(params: Params, out_path: Path) -> Path:
    """Compile the pipeline to IR YAML."""
    from kfp import compiler

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(params), package_path=str(out_path))
    log.info("compiled pipeline -> %s", out_path)
    return out_path


def run_local(params: Params, out_dir: Path, params_path: Path | None = None, raw_dir: Path | None = None) -> Path:
    """Run the whole DAG locally through `kfp.local.SubprocessRunner(use_venv=False)`.

    Generates the synthetic demo data under `out_dir/raw` unless `raw_dir` is given, then runs every component
    as a subprocess in this environment. Outputs land under `out_dir/pipeline_root`; the report is copied to
    `out_dir/report.html`, and a summary (tasks and their times, the gate's verdict, the registration) ends the log.
    On the generated demo data, and only there, the public demo pseudonymisation key is used when none is set.
    """
    from kfp import local

    out_dir = Path(out_dir).resolve()
    if raw_dir is None:
        from fracture.sources.privacy import DEMO_KEY, KEY_ENV
        from fracture.synth import run_synth

        if not os.environ.get(KEY_ENV):
            os.environ[KEY_ENV] = DEMO_KEY
            log.info("synthetic demo data: pseudonymised with the public demo key (%s is not set)", KEY_ENV)
        raw_dir = out_dir / "raw"
        run_synth(params, raw_dir)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(out_dir / "pipeline_root"))
    pipeline = build_pipeline(params)
    log.info("running the pipeline locally (params %s); outputs under %s", params_path or "<given>", out_dir)
    started = time.time()
    try:
        pipeline(data_source="volume", data_location=str(Path(raw_dir).resolve()))
    finally:
        lines = local_run_summary(out_dir / "pipeline_root", out_dir, started)
        if lines:
            log.info("\n".join(lines))
    return out_dir / "pipeline_root"


def _newest_run(pipeline_root: Path) -> Path | None:
    runs = [p for p in Path(pipeline_root).glob("*") if p.is_dir()]
    return max(runs, key=lambda p: p.stat().st_mtime, default=None)


def local_run_summary(pipeline_root: Path, out_dir: Path, started: float) -> list[str]:
    """What a local run did: each task and its time, the gate's verdict, the registration, where the report is.

    Tasks run one after another under kfp.local, so a task's time is the gap between its executor output and the
    previous one's. Copies the report artifact (a file named `report`) to `out_dir/report.html`.
    """
    from fracture.base.io import read_json
    from fracture.contracts.artifacts import GATE, REPORT_HTML
    from fracture.contracts.verdict import read_verdict

    run = _newest_run(pipeline_root)
    if run is None:
        return []
    done = sorted((p.stat().st_mtime, p.parent.name) for p in run.glob("*/executor_output.json"))
    lines = [f"local run {run.name}: {len(done)} tasks in {time.time() - started:.0f} s"]
    previous = started
    for finished, task in done:
        lines.append(f"  {task:<16} {finished - previous:7.1f} s")
        previous = finished
    gate = next(iter(run.glob(f"evaluate/eval_dir/{GATE}")), None)
    if gate is not None:
        verdict = read_verdict(gate)
        lines.append(
            f"evaluation gate: {verdict.status}" + (f" ({'; '.join(verdict.reasons)})" if verdict.reasons else "")
        )
    registration = next(iter(run.glob("register/registration")), None)
    if registration is not None:
        record = read_json(registration)
        if record.get("registered") is False:
            lines.append(f"not registered: {record['why']} ({'; '.join(record['reasons'])})")
        else:
            lines.append(f"registered: {record.get('name')} version {record.get('version')} (alias challenger)")
    report = next(iter(run.glob("report/report")), None)
    if report is not None:
        shutil.copyfile(report, Path(out_dir) / REPORT_HTML)
        lines.append(f"report: {Path(out_dir) / REPORT_HTML}")
    return lines


def run_submit(params: Params, host: str, experiment: str | None = None) -> str:
    """Submit to a KFP cluster; token from `KFP_TOKEN`, namespace from `KFP_NAMESPACE`. Returns the run URL."""
    import kfp

    client = kfp.Client(
        host=host, existing_token=os.environ.get("KFP_TOKEN"), namespace=os.environ.get("KFP_NAMESPACE")
    )
    run = client.create_run_from_pipeline_func(
        build_pipeline(params),
        arguments={},
        experiment_name=experiment or params.train.experiment,
        enable_caching=True,
    )
    url = f"{host.rstrip('/')}/#/runs/details/{run.run_id}"
    log.info("submitted run %s: %s", run.run_id, url)
    return url
