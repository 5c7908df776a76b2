"""The report's cross-validation section: per-fold table, pooled ROC with the folds' curves, the LOSO transfer table.

Reads pool dirs (`fracture pool`'s contract: folds.csv, pooled.json, study.json, plots/roc.csv); one subsection per
study given (`fracture report --cv DIR`, repeatable: a k-fold and a LOSO study side by side).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fracture.base.errors import InputError
from fracture.base.io import read_json
from fracture.cv import FILES
from fracture.report.figures import _finish_unit_axes, _pyplot
from fracture.report.tables import fmt

STRATEGY_TITLES = {
    "kfold": "Stratified k-fold over every source (out of fold)",
    "loso": "Leave one source out: transfer to a source the model never saw",
}


def plot_cv_roc(roc: pd.DataFrame, pooled: dict) -> str:
    """The pooled ROC (bold) over each fold's ROC (thin), as base64 PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for curve, part in roc.groupby("curve", sort=True):
        if curve != "pooled":
            ax.plot(part["fpr"], part["tpr"], lw=1, alpha=0.6, label=str(curve))
    pooled_part = roc[roc["curve"] == "pooled"]
    if len(pooled_part):
        label = f"pooled (AUROC {fmt(pooled.get('auroc'))})"
        ax.plot(pooled_part["fpr"], pooled_part["tpr"], color="black", lw=2.2, label=label)
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    return _finish_unit_axes(fig, ax, "1 - specificity (FPR)", "sensitivity (TPR)", "ROC: pooled and per fold",
                             "lower right")  # fmt: skip


def load_cv_study(pool_dir: Path) -> dict:
    """One study's section content from its pool dir.

    Raises:
        InputError: a contract file is missing or unreadable.
    """
    pool_dir = Path(pool_dir)
    pooled, study = read_json(pool_dir / FILES["pooled"]), read_json(pool_dir / FILES["study"])
    try:
        folds = pd.read_csv(pool_dir / FILES["folds"])
        roc = pd.read_csv(pool_dir / "plots" / "roc.csv")
    except (OSError, pd.errors.ParserError) as err:
        raise InputError(f"{pool_dir}: cannot read the pool dir ({err})") from None
    strategy = str(study.get("strategy"))
    return {
        "dir": str(pool_dir),
        "strategy": strategy,
        "title": STRATEGY_TITLES.get(strategy, strategy),
        "pooled": pooled,
        "folds": folds.astype(object).where(folds.notna(), None).to_dict(orient="records"),
        "ci_note": study.get("ci"),
        "thresholds_note": study.get("thresholds"),
        "recipe": study.get("recipe"),
        "roc_png": plot_cv_roc(roc, pooled) if len(roc) else None,
    }


def cv_context(pool_dirs: list[Path]) -> list[dict]:
    """The CV section's studies, in the order given (empty: the report has no CV section)."""
    return [load_cv_study(Path(d)) for d in pool_dirs]
