"""`fracture tune`: the command's options (registered by fracture.cli); Ray is imported only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def tune(
    manifest: Annotated[Path, typer.Option(help="manifest.parquet from ingest.")],
    splits: Annotated[Path, typer.Option(help="splits.parquet from split (val selects; test is never read).")],
    cache: Annotated[Path, typer.Option(help="Preprocess cache dir (shared by every trial).")],
    out: Annotated[Path, typer.Option(help="Search dir: Ray state, trials.csv, best_params.yaml, best.json.")],
    space: Annotated[Path, typer.Option(help="Search-space file.", dir_okay=False)] = Path("configs/search_space.yaml"),
    trials: Annotated[int, typer.Option(help="Samples of the space (a `grid` rule multiplies them).")] = 8,
    resume: Annotated[bool, typer.Option(help="Restore the interrupted search in --out.")] = False,
    params: Annotated[Path, typer.Option("--params", help="params.yaml to use.", dir_okay=False)] = Path("params.yaml"),
) -> None:
    """Search the training recipe with Ray Tune + ASHA on val AUROC (RAY_ADDRESS: a cluster); MLflow parent run."""
    from fracture.config import load_params
    from fracture.tune.run import run_tune

    cfg = load_params(params)
    run_tune(cfg, space, manifest, splits, cache, out, trials, resume=resume)
