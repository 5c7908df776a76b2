"""`fracture pool`: the folds of a cross-validation study pooled out of fold.

Every development image is scored once, by the fold model that held it out (its test rows); an image in two folds'
test sets is an error. Each fold's decisions use that fold's frozen threshold (tuned by train on that fold's val
only, recorded by evaluate in thresholds.json); pooled sensitivity and specificity count those decisions, and no
threshold is ever tuned on the pooled held-out predictions. The pooled AUROC's interval resamples the pooled
patients (leakage clusters) with replacement, the fold models held fixed: it is conditional on the models that were
trained and does not include the variation from retraining them.

Outputs (the contract other tools read): `folds.csv` (one row per fold; for LOSO one per held-out source),
`oof_predictions.parquet` (image_id, fold, label, prob, threshold, decision, plus cluster_id and source),
`pooled.json` (numbers only: the DVC metric), `study.json` (strategy, recipe hash, what the CI resamples) and
`plots/roc.csv` (the pooled ROC and each fold's).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fracture.base.errors import InputError
from fracture.base.io import atomic_write_text, read_json, read_parquet, write_json, write_parquet
from fracture.config import EvaluateParams, Params, load_params
from fracture.contracts.artifacts import PREDICTIONS, THRESHOLDS
from fracture.cv import FILES, fold_dir_name
from fracture.cv.recipe import recipe_hash
from fracture.stats.bootstrap import draw_resamples, percentile_interval, ranking_replicates, rate_replicates
from fracture.stats.metrics import auroc, roc_points

log = logging.getLogger(__name__)

OOF_COLUMNS = ("image_id", "fold", "label", "prob", "threshold", "decision", "cluster_id", "source")
FOLD_COLUMNS = (
    "fold", "held_out", "n_images", "n_patients", "n_positive", "prevalence", "auroc", "auroc_lo", "auroc_hi",
    "sens", "spec", "threshold", "threshold_method",
)  # fmt: skip
CI_NOTE = (
    "Pooled intervals resample the pooled patients (leakage clusters) with replacement, every fold model held "
    "fixed: they are conditional on the fold models that were trained and leave out the variation from retraining."
)
PREDICTION_NEEDS = ("image_id", "split", "label", "prob", "cluster_id", "patient_id", "source")


@dataclass(frozen=True)
class FoldResult:
    """One fold's held-out predictions and the operating point frozen on its val.

    Attributes:
        name: `fold-<K>`.
        strategy: kfold | loso.
        threshold: the fold's frozen threshold (tuned on the fold's val only).
        method: how it was tuned (youden, ...).
        test: the fold's test rows: image_id, label, prob, cluster_id, patient_id, source.
        recipe: recipe hash of the fold's params (cv.recipe).
    """

    name: str
    strategy: str
    threshold: float
    method: str
    test: pd.DataFrame
    recipe: str


@dataclass(frozen=True)
class Pooled:
    """The pooling step's outputs, in memory."""

    folds: pd.DataFrame
    oof: pd.DataFrame
    pooled: dict
    study: dict


def _num(value: float) -> float | None:
    """A JSON-safe number (NaN, undefined, becomes null)."""
    return None if value is None or not math.isfinite(value) else float(value)


def oof_predictions(folds: list[FoldResult]) -> pd.DataFrame:
    """Every fold's test rows with that fold's threshold and decision (positive when prob >= threshold).

    Raises:
        InputError: an image is held out by two folds (the folds overlap), or two folds share a name.
    """
    names = [f.name for f in folds]
    if len(set(names)) != len(names):
        raise InputError(f"pool: fold names repeat ({', '.join(names)}): pass each fold's eval dir once")
    parts = [
        f.test.assign(fold=f.name, threshold=f.threshold, decision=(f.test["prob"] >= f.threshold).astype(int))
        for f in folds
    ]
    oof = pd.concat(parts, ignore_index=True)
    twice = oof[oof["image_id"].duplicated(keep=False)]
    if len(twice):
        first = twice.iloc[0]["image_id"]
        where = ", ".join(twice.loc[twice["image_id"] == first, "fold"])
        raise InputError(f"pool: image {first} is held out by several folds ({where}); the folds must not overlap")
    oof["label"] = oof["label"].astype(int)
    return oof[list(OOF_COLUMNS)]


def _ci(reps: np.ndarray, ep: EvaluateParams) -> tuple[float | None, float | None]:
    lo, hi = percentile_interval(reps, ep.ci_level)
    return _num(lo), _num(hi)


def scored_summary(frame: pd.DataFrame, ep: EvaluateParams, seed: int) -> dict:
    """AUROC with its cluster-bootstrap CI, and sensitivity / specificity of the rows' own decisions (with CIs).

    Returns:
        auroc, auroc_lo, auroc_hi, sens, sens_lo, sens_hi, spec, spec_lo, spec_hi, n_images, n_clusters,
        n_positive, prevalence (None where undefined, e.g. AUROC of a one-class set).
    """
    y = frame["label"].to_numpy().astype(bool)
    probs, decisions = frame["prob"].to_numpy(np.float64), frame["decision"].to_numpy(np.float64)
    out: dict = {"n_images": len(frame), "n_clusters": int(frame["cluster_id"].nunique(dropna=False))}
    out |= {"n_positive": int(y.sum()), "prevalence": _num(y.mean()) if len(y) else None}
    both = 0 < y.sum() < len(y)
    out["auroc"] = _num(auroc(y, probs)) if both else None
    out["sens"] = _num(decisions[y].mean()) if y.any() else None
    out["spec"] = _num(1 - decisions[~y].mean()) if (~y).any() else None
    if ep.n_bootstrap and len(frame):
        rs = draw_resamples(frame["cluster_id"], ep.n_bootstrap, seed)
        out["auroc_lo"], out["auroc_hi"] = _ci(ranking_replicates(rs, y, probs)["auroc"], ep) if both else (None, None)
        rates = rate_replicates(rs, y, decisions, 0.5)  # decisions are 0/1: >= 0.5 is the fold's own decision
        out["sens_lo"], out["sens_hi"] = _ci(rates["sensitivity"], ep)
        out["spec_lo"], out["spec_hi"] = _ci(rates["specificity"], ep)
    else:
        out |= {k: None for k in ("auroc_lo", "auroc_hi", "sens_lo", "sens_hi", "spec_lo", "spec_hi")}
    return out


def fold_table(folds: list[FoldResult], oof: pd.DataFrame, ep: EvaluateParams, seed: int) -> pd.DataFrame:
    """folds.csv: one row per fold (held-out sources, sizes, prevalence, AUROC with CI, sens/spec, threshold)."""
    rows = []
    for f in folds:
        part = oof[oof["fold"] == f.name]
        s = scored_summary(part, ep, seed)
        held_out = "+".join(sorted(part["source"].astype(str).unique()))
        n_patients = int(f.test["patient_id"].nunique())
        rows.append({**s, "fold": f.name, "held_out": held_out, "n_patients": n_patients,
                     "threshold": f.threshold, "threshold_method": f.method})  # fmt: skip
    return pd.DataFrame(rows, columns=list(FOLD_COLUMNS))


def _mean_sd(values: pd.Series) -> tuple[float | None, float | None]:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return _num(v.mean()) if len(v) else None, _num(v.std(ddof=1)) if len(v) > 1 else None


def pool_folds(folds: list[FoldResult], ep: EvaluateParams, seed: int) -> Pooled:
    """Pool the folds out of fold (see the module docstring).

    Raises:
        InputError: no folds, folds of different strategies or recipes, or overlapping held-out sets.
    """
    if not folds:
        raise InputError("pool: no folds given")
    for key in ("strategy", "recipe"):
        values = {getattr(f, key) for f in folds}
        if len(values) > 1:
            raise InputError(f"pool: the folds differ in {key} ({', '.join(sorted(values))}); pool one study at a time")
    oof = oof_predictions(folds)
    table = fold_table(folds, oof, ep, seed)
    pooled = {**scored_summary(oof, ep, seed), "n_folds": len(folds)}
    for key in ("auroc", "sens", "spec"):
        pooled[f"{key}_fold_mean"], pooled[f"{key}_fold_sd"] = _mean_sd(table[key])
    pooled |= {"n_bootstrap": ep.n_bootstrap, "ci_level": ep.ci_level}
    study = {
        "strategy": folds[0].strategy,
        "recipe": folds[0].recipe,
        "folds": {f.name: {"threshold": f.threshold, "method": f.method} for f in folds},
        "ci": CI_NOTE,
        "thresholds": "each fold's decisions use its own threshold, tuned on that fold's val only; never re-tuned "
        "on pooled held-out predictions",
    }
    return Pooled(folds=table, oof=oof, pooled=pooled, study=study)


def roc_table(oof: pd.DataFrame) -> pd.DataFrame:
    """plots/roc.csv: the pooled ROC and each fold's (curve, fpr, tpr), for the report and `dvc plots`."""
    parts = []
    for curve, frame in [("pooled", oof), *oof.groupby("fold", sort=True)]:
        y = frame["label"].to_numpy().astype(bool)
        if 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_points(y, frame["prob"].to_numpy(np.float64))
            parts.append(pd.DataFrame({"curve": curve, "fpr": fpr, "tpr": tpr}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["curve", "fpr", "tpr"])


def load_fold(eval_dir: Path) -> FoldResult:
    """One fold from its eval dir: test rows of predictions.parquet, thresholds.json's frozen point, params.yaml.

    Raises:
        InputError: a file is missing or lacks what pooling needs.
    """
    eval_dir = Path(eval_dir)
    params = load_params(eval_dir / "params.yaml")
    if params.split.strategy not in ("kfold", "loso"):
        raise InputError(f"{eval_dir}: split strategy {params.split.strategy!r} is not a CV fold (kfold or loso)")
    preds = read_parquet(eval_dir / PREDICTIONS)
    missing = [c for c in PREDICTION_NEEDS if c not in preds.columns]
    if missing:
        raise InputError(f"{eval_dir / PREDICTIONS}: missing columns {', '.join(missing)}")
    thresholds = read_json(eval_dir / THRESHOLDS)
    if not isinstance(thresholds.get("frozen"), int | float):
        raise InputError(f"{eval_dir / THRESHOLDS}: no frozen threshold")
    if not thresholds.get("matches_config", True):
        log.warning("%s: val thresholds recomputed by evaluate differ from train's", eval_dir)
    test = preds.loc[preds["split"] == "test", [c for c in PREDICTION_NEEDS if c != "split"]].reset_index(drop=True)
    return FoldResult(
        name=f"fold-{params.split.fold}",
        strategy=params.split.strategy,
        threshold=float(thresholds["frozen"]),
        method=str(thresholds.get("method", "unknown")),
        test=test,
        recipe=recipe_hash(params),
    )


def write_pool(result: Pooled, out_dir: Path) -> None:
    """Write the pool dir (every file atomically)."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / FILES["folds"], result.folds.to_csv(index=False))
    write_parquet(result.oof, out_dir / FILES["oof"])
    write_json(out_dir / FILES["pooled"], result.pooled)
    write_json(out_dir / FILES["study"], result.study)
    atomic_write_text(out_dir / "plots" / "roc.csv", roc_table(result.oof).to_csv(index=False))


def run_pool(params: Params, eval_dirs: list[Path], out_dir: Path) -> dict:
    """`fracture pool`: load each fold's eval dir, pool out of fold, write the pool dir.

    Returns:
        pooled.json's content.
    """
    folds = [load_fold(Path(d)) for d in eval_dirs]
    result = pool_folds(folds, params.evaluate, params.base.seed)
    write_pool(result, out_dir)
    p = result.pooled
    log.info(
        "pooled %d fold(s) (%s): %d images, AUROC %s [%s, %s], sens %s, spec %s; wrote %s",
        p["n_folds"], result.study["strategy"], p["n_images"], p["auroc"], p["auroc_lo"], p["auroc_hi"],
        p["sens"], p["spec"], out_dir,
    )  # fmt: skip
    return p


def study_eval_dirs(params: Params, eval_dirs: list[Path], eval_root: Path | None) -> list[Path]:
    """The eval dirs to pool: those given, and `eval_root/fold-<K>` for every K in `cv.folds` when a root is given.

    Raises:
        InputError: neither is given.
    """
    dirs = [Path(d) for d in eval_dirs]
    if eval_root is not None:
        dirs += [Path(eval_root) / fold_dir_name(k) for k in params.cv.folds]
    if not dirs:
        raise InputError("pool: give --eval-dirs (one per fold) or --eval-root")
    return dirs
