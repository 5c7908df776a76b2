"""Exact-bound certification of a target-sensitivity threshold, on val (selection data) only.

A threshold is *certified* for a target sensitivity when the exact (Clopper-Pearson) lower bound of its val
sensitivity reaches the target. The bound counts positive patients, not images: the design effect is taken at its
largest (every positive patient counts once, k_eff = sensitivity x positive patients), so several images of one
patient cannot buy precision. The one-sided level is (1 + ci_level) / 2. With 0 misses the bound is
alpha ** (1 / n), so 0.9 needs 36 positive patients (0.9 ** 36 < 0.025). When no threshold can be certified, the
rule says so and names the positive patients it would need (with 0 misses); it never reports a percentile bound of 1
from resamples that cannot vary as "meets the target".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def patients_to_certify(target: float, level: float) -> int:
    """Positive patients that certify `target` with 0 misses: the smallest n with target ** n <= alpha."""
    alpha = (1 - level) / 2
    return math.ceil(math.log(alpha) / math.log(target) - 1e-12) if 0 < target < 1 else 1


def exact_lower_bounds(k: np.ndarray, n: float, level: float) -> np.ndarray:
    """Clopper-Pearson lower bounds of (possibly effective, non-integer) k successes of n, vectorised."""
    from scipy.stats import beta

    k = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        low = beta.ppf((1 - level) / 2, k, n - k + 1)
    return np.where(k <= 0, 0.0, low)


def certify_target(
    y: np.ndarray, probs: np.ndarray, clusters: np.ndarray | pd.Series, target: float, level: float
) -> dict:
    """The highest threshold whose exact patient-level lower bound of sensitivity reaches `target`.

    Returns:
        {"certified", "threshold" (None when not certified), "lower_bound", "sensitivity", "n_pos_patients",
        "n_needed" (positive patients the target needs with 0 misses), "note"}.
    """
    y = np.asarray(y).astype(bool)
    pos_scores = np.sort(np.asarray(probs, dtype=np.float64)[y])[::-1]  # candidate thresholds, strictest first
    n_pos_patients = int(pd.Series(np.asarray(clusters)[y]).nunique())
    needed = patients_to_certify(target, level)
    base = {"target": target, "n_pos_patients": n_pos_patients, "n_needed": needed}
    if pos_scores.size == 0:
        return {**base, "certified": False, "threshold": None, "lower_bound": None, "sensitivity": None,
                "note": f"cannot certify: val has no positive patient; {needed} needed"}  # fmt: skip
    thresholds = np.unique(pos_scores)[::-1]
    sens = (pos_scores[None, :] >= thresholds[:, None]).sum(axis=1) / pos_scores.size
    low = exact_lower_bounds(sens * n_pos_patients, n_pos_patients, level)
    reaching = np.flatnonzero(low >= target)
    if reaching.size:
        i = int(reaching[0])
        return {**base, "certified": True, "threshold": float(thresholds[i]), "lower_bound": float(low[i]),
                "sensitivity": float(sens[i]),
                "note": f"certified: exact lower bound {low[i]:.4f} >= {target} on {n_pos_patients} positive "
                        "patients"}  # fmt: skip
    more = f"at least {needed} positive patients (with 0 misses)"
    return {**base, "certified": False, "threshold": None, "lower_bound": float(low[-1]), "sensitivity": 1.0,
            "note": f"cannot certify sensitivity {target}: val has {n_pos_patients} positive patients, the exact "
                    f"bound needs {more}"}  # fmt: skip
