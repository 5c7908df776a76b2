"""`fracture pipeline compile | run-local | submit`: the Kubeflow shell around the same steps."""

from __future__ import annotations

import logging
import os
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
    as a subprocess in this environment. Outputs land under `out_dir/pipeline_root`.
    """
    from kfp import local

    out_dir = Path(out_dir).resolve()
    if raw_dir is None:
        from fracture.synth import run_synth

        raw_dir = out_dir / "raw"
        run_synth(params, raw_dir)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(out_dir / "pipeline_root"))
    pipeline = build_pipeline(params)
    log.info("running the pipeline locally (params %s); outputs under %s", params_path or "<given>", out_dir)
    pipeline(data_source="volume", data_location=str(Path(raw_dir).resolve()))
    return out_dir / "pipeline_root"


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
