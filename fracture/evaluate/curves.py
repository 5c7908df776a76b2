"""Curve tables: DVC plot data (ROC, PR, calibration, confusion, decision curve) and the reliability table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fracture.config import EvaluateParams
from fracture.evaluate import intervals
from fracture.evaluate.cohort import EVAL_SPLITS
from fracture.evaluate.intervals import resample_frame
from fracture.stats import metrics
from fracture.stats.bootstrap import bin_replicates

# Decision-curve threshold probabilities: the range where a fracture work-up is a plausible decision.
DECISION_THRESHOLDS = np.round(np.arange(0.05, 0.5 + 1e-9, 0.01), 2)
DECISION_TABLE_STEP = 0.05


def net_benefit(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> pd.DataFrame:
    """Decision curve (Vickers & Elkin 2006): net benefit of the model, treat-all and treat-none.

    Net benefit at threshold probability t = TP/N - FP/N * t / (1 - t), treating when prob >= t; treat-all is
    prevalence - (1 - prevalence) * t / (1 - t); treat-none is 0.

    Returns:
        Columns threshold, net_benefit (model), treat_all, treat_none, and net_benefit_vs_all (model - treat-all).
    """
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64)
    n = max(y.size, 1)
    treated = p[None, :] >= t[:, None]  # [T, N]
    tp, fp = (treated & y).sum(axis=1) / n, (treated & ~y).sum(axis=1) / n
    odds = t / (1 - t)
    prevalence = y.mean() if y.size else np.nan
    model, treat_all = tp - fp * odds, prevalence - (1 - prevalence) * odds
    return pd.DataFrame(
        {
            "threshold": t,
            "net_benefit": model,
            "treat_all": treat_all,
            "treat_none": 0.0,
            "net_benefit_vs_all": model - treat_all,
        }
    )


def decision_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """The decision curve of val and test (a `split` column), thresholds 0.05-0.5 in steps of 0.01."""
    parts = [
        net_benefit(part["label"].to_numpy(), part["prob"].to_numpy(), DECISION_THRESHOLDS).assign(split=split)
        for split in EVAL_SPLITS
        if not (part := frame[frame["split"] == split]).empty
    ]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return table[["split", *[c for c in table.columns if c != "split"]]] if not table.empty else table


def decision_table(curves: pd.DataFrame) -> pd.DataFrame:
    """decision_curve.csv for the report: the curves every 0.05, with avoided unnecessary work-ups per 100.

    Net reduction in interventions per 100 = (NB_model - NB_all) / (t / (1 - t)) * 100.
    """
    if curves.empty:
        return curves
    on_grid = np.isclose((curves["threshold"] / DECISION_TABLE_STEP).round(), curves["threshold"] / DECISION_TABLE_STEP)
    table = curves[on_grid].copy()
    odds = table["threshold"] / (1 - table["threshold"])
    table["interventions_avoided_per_100"] = table["net_benefit_vs_all"] / odds * 100
    return table.reset_index(drop=True)


def reliability_table(frame: pd.DataFrame, ep: EvaluateParams, seed: int) -> pd.DataFrame:
    """reliability.csv: per split and bin, counts (images, clusters) and observed frequency with a clustered CI.

    Val chose the checkpoint and the threshold: its table is shown beside test, not as independent evidence.
    """
    rows = []
    for split in EVAL_SPLITS:
        part = frame[frame["split"] == split]
        if part.empty:
            continue
        r = resample_frame(part, ep, seed)
        curve = metrics.reliability_curve(r.y, r.p, ep.calibration_bins)
        bins = np.clip((r.p * ep.calibration_bins).astype(np.int64), 0, ep.calibration_bins - 1)
        clusters = part["cluster_id"].astype("string").groupby(bins).nunique()
        curve = curve.assign(split=split, n_clusters=curve["bin"].map(clusters).astype("int64"))
        curve = curve.join(_bin_cis(r, curve, ep), how="left")
        rows.append(curve)
    columns = ["split", "bin", "bin_low", "bin_high", "count", "n_clusters", "mean_pred", "frac_pos",
               "frac_pos_ci_low", "frac_pos_ci_high", "ci_method", "ci_valid"]  # fmt: skip
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def _bin_cis(r: intervals.Resampled, curve: pd.DataFrame, ep: EvaluateParams) -> pd.DataFrame:
    """Per non-empty bin: CI of the observed positive fraction (cluster bootstrap, Wilson for independent rows)."""
    out = pd.DataFrame(index=curve.index, columns=["frac_pos_ci_low", "frac_pos_ci_high", "ci_method", "ci_valid"])
    if r.independent:
        for i, (count, frac) in curve[["count", "frac_pos"]].iterrows():
            low, high = metrics.wilson_interval(int(round(frac * count)), int(count), ep.ci_level)
            out.loc[i] = [low, high, intervals.WILSON, np.nan]
        return out
    if r.resamples is None:
        return out
    sums = bin_replicates(r.resamples, r.y, r.p, ep.calibration_bins)
    for i, b in curve["bin"].items():
        count = sums["count"][:, b]
        frac = np.where(count > 0, sums["sum_pos"][:, b] / np.maximum(count, 1), np.nan)  # NaN: bin empty in a resample
        e = intervals.bootstrap_entries("f", frac, r.level)
        out.loc[i] = [e["f_ci_low"], e["f_ci_high"], intervals.BOOTSTRAP, e["f_ci_valid"]]
    return out


def plot_tables(frame: pd.DataFrame, n_bins: int) -> dict[str, pd.DataFrame]:
    """DVC plot data, val and test told apart by a `split` column.

    Returns:
        {"roc": fpr, tpr, threshold; "pr": recall, precision, threshold; "calibration": the reliability curve;
        "confusion": actual, predicted per test image at the frozen threshold; "decision_curve": threshold,
        net_benefit, treat_all, treat_none}.
    """
    roc, pr, cal = [], [], []
    for split in EVAL_SPLITS:
        part = frame[frame["split"] == split]
        if part.empty:
            continue
        y, p = part["label"].to_numpy(), part["prob"].to_numpy()
        fpr, tpr, thr = metrics.roc_points(y, p)
        thr = np.where(np.isfinite(thr), thr, np.nan)  # the (0, 0) corner has no finite threshold
        roc.append(pd.DataFrame({"split": split, "fpr": fpr, "tpr": tpr, "threshold": thr}))
        recall, precision, _ = metrics.pr_points(y, p)
        pr.append(pd.DataFrame({"split": split, "recall": recall, "precision": precision, "threshold": thr}))
        cal.append(metrics.reliability_curve(y, p, n_bins).assign(split=split))
    test = frame[frame["split"] == "test"]
    confusion = pd.DataFrame({"actual": test["label"].astype(int), "predicted": test["pred"].astype(int)})
    calibration_df = pd.concat(cal, ignore_index=True) if cal else pd.DataFrame()
    if not calibration_df.empty:
        calibration_df = calibration_df[["split", *[c for c in calibration_df.columns if c != "split"]]]
    return {
        "roc": pd.concat(roc, ignore_index=True),
        "pr": pd.concat(pr, ignore_index=True),
        "calibration": calibration_df,
        "confusion": confusion.reset_index(drop=True),
        "decision_curve": decision_curves(frame),
    }
