"""The `fracture pipeline compile | run-local | submit` commands' bodies; fracture/cli.py registers them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to use.", dir_okay=False)]
DEFAULT_PARAMS = Path("params.yaml")


def _params(path: Path):  # noqa: ANN202 - Params, imported lazily (`fracture --help` stays fast)
    from fracture.config import load_params

    return load_params(path)


def pipeline_compile(
    out: Annotated[Path, typer.Option(help="Pipeline IR YAML to write.")] = Path("training_pipeline.yaml"),
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Compile the Kubeflow pipeline to IR YAML."""
    from fracture.kubeflow.runner import run_compile

    run_compile(_params(params), out)


def pipeline_run_local(
    out: Annotated[Path, typer.Option(help="Local pipeline root for outputs.")] = Path("data/kfp-local"),
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Run the whole DAG through kfp.local.SubprocessRunner (on generated demo data); ends with a summary."""
    from fracture.kubeflow.runner import run_local

    run_local(_params(params), out, params_path=params)


def pipeline_submit(
    host: Annotated[str, typer.Option(help="KFP API endpoint URL.")],
    experiment: Annotated[str | None, typer.Option(help="KFP experiment name.")] = None,
    params: ParamsOpt = DEFAULT_PARAMS,
) -> None:
    """Submit the pipeline to a cluster (token and namespace from the environment); prints the run URL."""
    from fracture.kubeflow.runner import run_submit

    typer.echo(run_submit(_params(params), host, experiment=experiment))
