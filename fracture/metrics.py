"""Pure metric functions: ROC/PR, operating points, confusion-derived rates.

Vectorised NumPy; checked against scikit-learn in tests. No I/O, no params.
"""

from __future__ import annotations

import numpy as np


def roc_points(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve at every distinct score.

    Returns:
        (fpr, tpr, thresholds), thresholds descending; a prediction is positive when score >= threshold.
        The first point is (0, 0) with threshold +inf.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[distinct]
    fps = (distinct + 1) - tps
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray, target_sensitivity: float) -> dict[str, float]:
    """Operating points from one labelled set (val only: the caller must never pass test data).

    Returns:
        {"youden": argmax(tpr - fpr), "f1_max": argmax F1, "target_sensitivity": the highest threshold whose
        sensitivity reaches the target (i.e. the most specific one that does), "fixed": 0.5}.
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
    return {"youden": youden, "f1_max": f1_max, "target_sensitivity": target, "fixed": 0.5}
