"""Confidence intervals that respect clustering: one cluster bootstrap per frame, Wilson only for independent units.

Images of one patient (and an augmented copy with its original) are correlated, so image-level Wilson intervals
are too narrow (a simulation with 120 patients of 2-8 images: 95 % Wilson intervals covered the truth about 80 %
of the time). Every CI here resamples the split's clusters (`cluster_id`); Wilson is used only where each cluster
holds one unit. Every CI says how it was made: `<key>_ci_method` ("cluster_bootstrap" | "wilson") and, for the
bootstrap, `<key>_ci_valid` (resamples where the metric was defined); `interval_table` flags a CI whose
undefined share is above MAX_UNDEFINED_SHARE, and every zero-width interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fracture.config import EvaluateParams
from fracture.stats import bootstrap, metrics
from fracture.stats.bootstrap import Resamples

MAX_UNDEFINED_SHARE = 0.01
PROPORTIONS = ("sensitivity", "specificity", "ppv", "npv", "accuracy")
CALIBRATION = ("brier", "ece", "calibration_slope", "calibration_intercept")
BOOTSTRAP, WILSON = "cluster_bootstrap", "wilson"


@dataclass(frozen=True)
class Resampled:
    """One frame's labels, probabilities and cluster resamples (None when n_bootstrap is 0)."""

    y: np.ndarray
    p: np.ndarray
    resamples: Resamples | None
    independent: bool  # every cluster holds exactly one row: Wilson intervals are valid
    level: float


def resample_frame(frame: pd.DataFrame, ep: EvaluateParams, seed: int) -> Resampled:
    """Draw the frame's cluster resamples once; every CI of the frame uses the same draws."""
    clusters = frame["cluster_id"]
    codes, n_clusters = bootstrap.cluster_codes(clusters)
    independent = n_clusters == len(frame)
    rs = bootstrap.draw_resamples(clusters, ep.n_bootstrap, seed) if ep.n_bootstrap > 0 and len(frame) else None
    return Resampled(frame["label"].to_numpy(), frame["prob"].to_numpy(), rs, independent, ep.ci_level)


def bootstrap_entries(key: str, reps: np.ndarray, level: float) -> dict:
    """{key_ci_low, key_ci_high, key_ci_valid, key_ci_method} of bootstrap replicates."""
    low, high = bootstrap.percentile_interval(reps, level)
    valid = int(np.isfinite(reps).sum())
    return {f"{key}_ci_low": low, f"{key}_ci_high": high, f"{key}_ci_valid": valid, f"{key}_ci_method": BOOTSTRAP}


def wilson_entries(key: str, successes: int, n: int, level: float) -> dict:
    """{key_ci_low, key_ci_high, key_ci_method} of a Wilson interval (independent units only)."""
    low, high = metrics.wilson_interval(successes, n, level)
    return {f"{key}_ci_low": low, f"{key}_ci_high": high, f"{key}_ci_method": WILSON}


def ranking_cis(r: Resampled) -> dict:
    """AUROC and AUPRC CIs (cluster bootstrap; {} without resamples)."""
    if r.resamples is None:
        return {}
    reps = bootstrap.ranking_replicates(r.resamples, r.y, r.p)
    return {k: v for name in ("auroc", "auprc") for k, v in bootstrap_entries(name, reps[name], r.level).items()}


def calibration_cis(r: Resampled, n_bins: int) -> dict:
    """Brier, ECE, calibration slope and intercept CIs (cluster bootstrap; {} without resamples)."""
    if r.resamples is None:
        return {}
    reps = bootstrap.calibration_replicates(r.resamples, r.y, r.p, n_bins)
    return {k: v for name in CALIBRATION for k, v in bootstrap_entries(name, reps[name], r.level).items()}


def operating_point_cis(r: Resampled, threshold: float) -> dict:
    """CIs of sensitivity, specificity, PPV, NPV, accuracy and F1 at `threshold`.

    Cluster bootstrap when the frame has resamples; Wilson for the proportions when every cluster holds one
    row; proportions of clustered rows without resamples get no CI (a Wilson interval would overstate precision).
    """
    out: dict = {}
    if r.independent or r.resamples is None:
        if r.independent:
            c = metrics.confusion_counts(r.y, r.p >= threshold)
            counts = {
                "sensitivity": (c["tp"], c["tp"] + c["fn"]),
                "specificity": (c["tn"], c["tn"] + c["fp"]),
                "ppv": (c["tp"], c["tp"] + c["fp"]),
                "npv": (c["tn"], c["tn"] + c["fn"]),
                "accuracy": (c["tp"] + c["tn"], len(r.y)),
            }
            for name, (k, n) in counts.items():
                out.update(wilson_entries(name, k, n, r.level))
        if r.resamples is None:
            return out
    reps = bootstrap.rate_replicates(r.resamples, r.y, r.p, threshold)
    names = ("f1",) if r.independent else (*PROPORTIONS, "f1")
    for name in names:
        out.update(bootstrap_entries(name, reps[name], r.level))
    return out


def undefined_share(valid: float, n_resamples: int) -> float:
    """Share of resamples where a bootstrap metric was undefined (NaN)."""
    return 1.0 - float(valid) / n_resamples if n_resamples > 0 else float("nan")


def interval_table(values: dict, n_resamples: int) -> pd.DataFrame:
    """intervals.csv: one row per CI in `values` (flat metric keys), with its method, valid resamples and flag.

    Columns: key, estimate, ci_low, ci_high, method, n_valid, n_resamples, undefined_share, zero_width, flagged
    (undefined share above MAX_UNDEFINED_SHARE, or a zero-width interval: low == high says the resamples cannot
    vary, not that the value is known; the gate then reads an exact bound, fracture.evaluate.decision).
    """
    rows = []
    for method_key in sorted(k for k in values if k.endswith("_ci_method")):
        key = method_key[: -len("_ci_method")]
        method = values[method_key]
        valid = values.get(f"{key}_ci_valid", np.nan) if method == BOOTSTRAP else np.nan
        share = undefined_share(valid, n_resamples) if method == BOOTSTRAP else 0.0
        low, high = values.get(f"{key}_ci_low", np.nan), values.get(f"{key}_ci_high", np.nan)
        zero_width = bool(np.isfinite(low) and np.isfinite(high) and high - low <= 0)
        rows.append(
            {
                "key": key,
                "estimate": values.get(key, np.nan),
                "ci_low": low,
                "ci_high": high,
                "method": method,
                "n_valid": valid,
                "n_resamples": n_resamples if method == BOOTSTRAP else np.nan,
                "undefined_share": share,
                "zero_width": zero_width,
                "flagged": bool(share > MAX_UNDEFINED_SHARE) or zero_width,
            }
        )
    return pd.DataFrame(rows, columns=["key", "estimate", "ci_low", "ci_high", "method", "n_valid", "n_resamples",
                                       "undefined_share", "zero_width", "flagged"])  # fmt: skip
