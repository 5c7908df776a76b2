"""One split per fold: `fracture cv-split` writes `fold-<K>/splits.parquet` and the fold's resolved params.

The fold's params file is params.yaml with the study applied: `split.strategy` / `split.fold` / `split.n_folds`
from the `cv` section (the fold's own index) and `train.epochs` = `cv.epochs` (when set). Train and evaluate of
that fold run with it (`--params fold-<K>/params.yaml`), so every fold output records which fold it is.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fracture.base.io import write_json
from fracture.config import Params
from fracture.contracts.artifacts import SPLITS
from fracture.cv import fold_dir_name
from fracture.split.run import run_split

log = logging.getLogger(__name__)

SPLITS_FILE = SPLITS
PARAMS_FILE = "params.yaml"
STUDY_FILE = "study.json"


def study_params(params: Params, strategy: str | None = None) -> Params:
    """The params with the CV study applied (`strategy` overrides `cv.strategy`; the KFP pipeline passes its own).

    Returns:
        Params whose `split` runs the study's strategy over `cv.n_folds` folds and whose `train.epochs` is
        `cv.epochs` (train.epochs when that is null).
    """
    cv = params.cv
    split = params.split.model_copy(update={"strategy": strategy or cv.strategy, "n_folds": cv.n_folds, "fold": 0})
    train = params.train.model_copy(update={"epochs": cv.epochs or params.train.epochs})
    return params.model_copy(update={"split": split, "train": train})


def fold_params(params: Params, fold: int, strategy: str | None = None) -> Params:
    """The study's params for one fold (`split.fold` = fold)."""
    study = study_params(params, strategy)
    return study.model_copy(update={"split": study.split.model_copy(update={"fold": fold})})


def run_fold_split(params: Params, manifest_path: Path, out_dir: Path, fold: int, strategy: str | None = None) -> dict:
    """Split for one fold into `out_dir` (splits.parquet, summaries and the fold's params.yaml).

    Returns:
        The fold's split_summary.json content.
    """
    fp = fold_params(params, fold, strategy)
    return run_split(fp, Path(manifest_path), Path(out_dir) / SPLITS_FILE, fp.split.strategy, fold)


def run_cv_split(params: Params, manifest_path: Path, out_dir: Path) -> dict:
    """`fracture cv-split`: one `fold-<K>/` per fold in `cv.folds`, and study.json (strategy, folds, held out).

    Returns:
        study.json's content.
    """
    out_dir = Path(out_dir)
    held_out = {}
    for fold in params.cv.folds:
        summary = run_fold_split(params, manifest_path, out_dir / fold_dir_name(fold), fold)
        tests = [r for r in summary["rows"] if r["split"] == "test" and r["source"] != "all"]
        held_out[fold_dir_name(fold)] = sorted(r["source"] for r in tests)
    study = {
        "strategy": params.cv.strategy,
        "n_folds": params.cv.n_folds,
        "folds": list(params.cv.folds),
        "held_out_sources": held_out,
        "seed": params.base.seed,
    }
    write_json(out_dir / STUDY_FILE, study)
    log.info("cv split (%s): %d fold(s) under %s", params.cv.strategy, len(params.cv.folds), out_dir)
    return study
