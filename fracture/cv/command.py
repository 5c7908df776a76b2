"""The `fracture cv-split` and `fracture pool` commands' bodies; fracture/cli.py registers them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fracture.config import load_params

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to use.", dir_okay=False)]


def cv_split(
    manifest: Annotated[Path, typer.Option(help="manifest.parquet from ingest.")],
    out: Annotated[Path, typer.Option(help="Study dir: fold-<K>/ (splits.parquet, params.yaml) per cv.folds.")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Cross-validation: one split and one resolved params file per fold of the `cv` section."""
    from fracture.cv.folds import run_cv_split

    run_cv_split(load_params(params), manifest, out)


def pool(
    out: Annotated[Path, typer.Option(help="Pool dir: folds.csv, oof_predictions.parquet, pooled.json.")],
    eval_dirs: Annotated[list[Path] | None, typer.Option("--eval-dirs", help="A fold's eval dir (repeat).")] = None,
    eval_root: Annotated[Path | None, typer.Option(help="Holds fold-<K>/ eval dirs: pools those of cv.folds.")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Pool a cross-validation study out of fold: each fold's held-out images at that fold's frozen threshold."""
    from fracture.cv.pool import run_pool, study_eval_dirs

    cfg = load_params(params)
    run_pool(cfg, study_eval_dirs(cfg, eval_dirs or [], eval_root), out)
