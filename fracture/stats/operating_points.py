"""Operating points (decision thresholds) tuned on one labelled set: the one owner of threshold tuning.

Train freezes one of these into the model config from val; evaluate re-derives them from val to check the frozen
one. Test data never reaches this module.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fracture.stats.bootstrap import conservative_target_threshold
from fracture.stats.metrics import roc_points


def tune_thresholds(
    y_true: np.ndarray,
    probs: np.ndarray,
    target_sensitivity: float,
    groups: np.ndarray | pd.Series | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Operating points from one labelled set (val only: the caller must never pass test data).

    Args:
        y_true: [N] 0/1 labels.
        probs: [N] probabilities.
        target_sensitivity: the target of the two target rules.
        groups: [N] bootstrap cluster of each sample (patient / leakage group) for the conservative rule; without
            it every sample is its own cluster, which is only right for one image per patient.
        n_resamples: bootstrap resamples of the conservative rule (0 leaves it out).
        seed: bootstrap seed.

    Returns:
        {"youden": argmax(tpr - fpr), "f1_max": argmax F1, "target_sensitivity": the highest threshold whose
        sensitivity reaches the target (i.e. the most specific one that does), "target_sensitivity_conservative":
        the highest threshold whose lower 95 % cluster-bootstrap bound of sensitivity reaches it, "fixed": 0.5}.
    """
    y = np.asarray(y_true).astype(bool)
    fpr, tpr, thr = roc_points(y, probs)
    finite = np.isfinite(thr)
    fpr, tpr, thr = fpr[finite], tpr[finite], thr[finite]
    if thr.size == 0:
        return {"youden": 0.5, "f1_max": 0.5, "target_sensitivity": 0.5, "fixed": 0.5}
    youden = float(thr[np.argmax(tpr - fpr)])
    n_pos, n_neg = y.sum(), (~y).sum()
    tp, fp = tpr * n_pos, fpr * n_neg
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    f1 = np.divide(2 * precision * tpr, precision + tpr, out=np.zeros_like(tp), where=(precision + tpr) > 0)
    f1_max = float(thr[np.argmax(f1)])
    reaching = np.flatnonzero(tpr >= target_sensitivity)
    target = float(thr[reaching[0]]) if reaching.size else float(thr[-1])
    out = {"youden": youden, "f1_max": f1_max, "target_sensitivity": target, "fixed": 0.5}
    conservative = conservative_target_threshold(y, probs, target_sensitivity, groups, n_resamples, seed)
    if np.isfinite(conservative):
        out["target_sensitivity_conservative"] = conservative
    return out
