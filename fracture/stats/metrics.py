"""Pure metric functions: ROC/PR, AUROC/AUPRC, operating points, Wilson intervals, calibration.

Vectorised NumPy; checked against scikit-learn in tests. No I/O, no params. A prediction is positive when its
probability is >= the threshold, everywhere.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd


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


def _sorted_by_score(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Positive and negative scores sorted ascending, with their positions in the input."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    pos_idx = np.flatnonzero(y)
    neg_idx = np.flatnonzero(~y)
    pos_idx = pos_idx[np.argsort(s[pos_idx], kind="mergesort")]
    neg_idx = neg_idx[np.argsort(s[neg_idx], kind="mergesort")]
    return s[pos_idx], s[neg_idx], pos_idx, neg_idx


class RankIndex:
    """Sort once, reuse for any number of weightings (the basis of the vectorised bootstrap).

    Samples are put in `order`: positives by ascending score, then negatives by ascending score. For every
    positive it stores how many negatives score strictly below it and below-or-equal (ties), and how many
    positives score strictly below it. AUROC and average precision of a weighting are then two cumulative
    sums and a few gathers, with no per-weighting sort.
    """

    def __init__(self, y_true: np.ndarray, scores: np.ndarray) -> None:
        """Index `scores` (any real values) by the binary labels `y_true`."""
        sp, sn, pos_idx, neg_idx = _sorted_by_score(y_true, scores)
        self.order = np.r_[pos_idx, neg_idx]
        self.n_pos = pos_idx.size
        self.neg_below = np.searchsorted(sn, sp, side="left")  # negatives with score < each positive
        self.neg_upto = np.searchsorted(sn, sp, side="right")  # negatives with score <= each positive
        self.pos_below = np.searchsorted(sp, sp, side="left")  # positives with score < each positive

    def auroc_and_ap(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted AUROC (Mann-Whitney, ties count 1/2) and average precision (sklearn's definition).

        Args:
            weights: [B, N] or [N] non-negative sample weights in the input order (e.g. bootstrap counts).

        Returns:
            (auroc, ap), each [B] (or 0-d for 1-D weights); NaN where a class has zero weight.
        """
        w = np.atleast_2d(weights)[:, self.order]
        auroc, ap = self.auroc_and_ap_ordered(w)
        return (auroc[0], ap[0]) if np.ndim(weights) == 1 else (auroc, ap)

    def auroc_and_ap_ordered(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Same as `auroc_and_ap` for [B, N] weights already permuted into `self.order`."""
        # Integer weights (bootstrap counts) stay integral: exact, and int32 halves the memory traffic.
        integral = np.issubdtype(w.dtype, np.integer)
        acc = (np.int32 if w.sum(axis=1).max(initial=0) < 2**29 else np.int64) if integral else np.float64
        wp, wn = w[:, : self.n_pos], w[:, self.n_pos :]
        cum_n = np.zeros((w.shape[0], wn.shape[1] + 1), dtype=acc)
        np.cumsum(wn, axis=1, dtype=acc, out=cum_n[:, 1:])
        cum_p = np.zeros((w.shape[0], wp.shape[1] + 1), dtype=acc)
        np.cumsum(wp, axis=1, dtype=acc, out=cum_p[:, 1:])
        n_pos, n_neg = cum_p[:, -1:], cum_n[:, -1:]
        below = np.take(cum_n, self.neg_below, axis=1)
        ties = np.take(cum_n, self.neg_upto, axis=1) - below
        u2 = np.einsum("ij,ij->i", wp, 2 * below + ties, dtype=np.float64)  # 2 * Mann-Whitney U
        tp_ge = n_pos - np.take(cum_p, self.pos_below, axis=1)  # positive weight scoring >= this positive
        # tp_ge > 0 wherever wp > 0, so the floor only turns 0/0 into 0 for zero-weight columns
        precision = tp_ge / np.maximum(tp_ge + n_neg - below, np.finfo(np.float64).tiny)
        ap_num = np.einsum("ij,ij->i", wp, precision, dtype=np.float64)
        n_pos, n_neg = n_pos[:, 0].astype(np.float64), n_neg[:, 0].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            auroc = np.where((n_pos > 0) & (n_neg > 0), u2 / (2 * n_pos * n_neg), np.nan)
            ap = np.where(n_pos > 0, ap_num / n_pos, np.nan)
        return auroc, ap


def auroc(y_true: np.ndarray, scores: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Area under the ROC curve (probability a positive outranks a negative; ties count 1/2).

    Returns:
        AUROC, or NaN when only one class is present.
    """
    w = np.ones(len(y_true)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    return float(RankIndex(y_true, scores).auroc_and_ap(w)[0])


def average_precision(y_true: np.ndarray, scores: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Average precision, sum over thresholds of (R_k - R_{k-1}) * P_k (matches sklearn's average_precision_score).

    Returns:
        AUPRC (average precision), or NaN when there are no positives.
    """
    w = np.ones(len(y_true)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    return float(RankIndex(y_true, scores).auroc_and_ap(w)[1])


def pr_points(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve at every distinct score (descending thresholds).

    Returns:
        (recall, precision, thresholds); a prediction is positive when score >= threshold. The first point is
        (recall 0, precision 1) with threshold +inf, as in sklearn's curve read from high to low threshold.
    """
    fpr, tpr, thr = roc_points(y_true, scores)
    y = np.asarray(y_true).astype(bool)
    tp, fp = tpr * y.sum(), fpr * (~y).sum()
    precision = np.divide(tp, tp + fp, out=np.ones_like(tp), where=(tp + fp) > 0)
    return tpr, precision, thr


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, int]:
    """Confusion matrix of binary labels and predictions as {"tp", "fp", "tn", "fn"}."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    return {
        "tp": int(np.sum(y & p)),
        "fp": int(np.sum(~y & p)),
        "tn": int(np.sum(~y & ~p)),
        "fn": int(np.sum(y & ~p)),
    }


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def binary_rates(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    """Rates derived from a confusion matrix; NaN where a denominator is zero.

    Returns:
        sensitivity, specificity, ppv, npv, f1, accuracy and Cohen's kappa.
    """
    n = tp + fp + tn + fn
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, n),
        "kappa": cohen_kappa(tp, fp, tn, fn),
    }


def cohen_kappa(tp: int, fp: int, tn: int, fn: int) -> float:
    """Cohen's kappa between labels and predictions (agreement beyond chance); NaN when chance agreement is 1."""
    n = tp + fp + tn + fn
    if n == 0:
        return float("nan")
    observed = (tp + tn) / n
    chance = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n**2
    return _ratio(observed - chance, 1.0 - chance) if chance < 1 else float("nan")


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Returns:
        (low, high); (NaN, NaN) when n == 0.
    """
    if n <= 0:
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends at 0/n and n/n (no rounding dust)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return float(low), float(high)


def trivial_f1(prevalence: float) -> float:
    """F1 of calling everything a fracture: precision = prevalence, recall = 1, so 2p / (1 + p)."""
    return 2 * prevalence / (1 + prevalence)


def brier_score(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean squared difference between predicted probability and the 0/1 outcome."""
    y = np.asarray(y_true, dtype=np.float64)
    return float(np.mean((np.asarray(probs, dtype=np.float64) - y) ** 2)) if y.size else float("nan")


def reliability_curve(y_true: np.ndarray, probs: np.ndarray, n_bins: int) -> pd.DataFrame:
    """Reliability diagram over `n_bins` equal-width bins of [0, 1] (empty bins left out).

    Returns:
        Columns bin, bin_low, bin_high, mean_pred, frac_pos, count.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    bins = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    keep = count > 0
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins)[keep],
            "bin_low": edges[:-1][keep],
            "bin_high": edges[1:][keep],
            "mean_pred": sum_p[keep] / count[keep],
            "frac_pos": sum_y[keep] / count[keep],
            "count": count[keep],
        }
    )


def expected_calibration_error(curve: pd.DataFrame) -> float:
    """Count-weighted mean |observed - predicted| over the reliability curve's bins."""
    total = curve["count"].sum()
    if total == 0:
        return float("nan")
    return float((curve["count"] * (curve["frac_pos"] - curve["mean_pred"]).abs()).sum() / total)


def _logistic_newton(x: np.ndarray, y: np.ndarray, offset: np.ndarray, max_iter: int = 100) -> np.ndarray | None:
    """Maximum-likelihood logistic regression by Newton-Raphson with step halving.

    Args:
        x: [N, K] design matrix (include a column of ones for an intercept).
        y: [N] 0/1 outcomes.
        offset: [N] fixed term added to the linear predictor.
        max_iter: Newton steps before giving up.

    Returns:
        [K] coefficients, or None when the fit does not converge (e.g. separation) or is singular.
    """

    def loglik(beta: np.ndarray) -> float:
        eta = offset + x @ beta
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    beta = np.zeros(x.shape[1])
    current = loglik(beta)
    for _ in range(max_iter):
        mu = 1.0 / (1.0 + np.exp(-(offset + x @ beta)))
        hessian = x.T @ (x * (mu * (1 - mu))[:, None])
        try:
            step = np.linalg.solve(hessian, x.T @ (y - mu))
        except np.linalg.LinAlgError:
            return None
        scale = 1.0
        while scale > 1e-8 and loglik(beta + scale * step) < current - 1e-9 * (1 + abs(current)):
            scale /= 2  # log-likelihood is concave: halving the step always finds an ascent
        beta = beta + scale * step
        current = loglik(beta)
        if not np.all(np.isfinite(beta)) or np.max(np.abs(beta)) > 1e4:
            return None
        if np.max(np.abs(scale * step)) < 1e-10:
            return beta
    return None


def calibration_fit(y_true: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> dict[str, float]:
    """Calibration slope and intercept (logistic regression of y on logit(p)) and calibration-in-the-large.

    Perfect calibration is slope 1, intercept 0; slope < 1 means over-confident predictions. Calibration-in-
    the-large is the intercept with the slope fixed at 1 (logit(p) as an offset). Undefined fits (one class
    only, constant predictions, or classes perfectly separated by p, where the slope is infinite) give NaN.

    Returns:
        {"slope", "intercept", "citl"}.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    out = {"slope": float("nan"), "intercept": float("nan"), "citl": float("nan")}
    if y.size == 0 or y.min() == y.max():
        return out
    logit = np.log(p) - np.log1p(-p)
    ones = np.ones((y.size, 1))
    citl = _logistic_newton(ones, y, logit)
    if citl is not None:
        out["citl"] = float(citl[0])
    separated = logit[y == 0].max() <= logit[y == 1].min() or logit[y == 1].max() <= logit[y == 0].min()
    if not separated:
        fit = _logistic_newton(np.column_stack([ones, logit]), y, np.zeros_like(y))
        if fit is not None:
            out["intercept"], out["slope"] = float(fit[0]), float(fit[1])
    return out


def operating_point(y_true: np.ndarray, probs: np.ndarray, threshold: float, level: float) -> dict[str, float]:
    """Everything at one threshold (positive when prob >= threshold), with Wilson intervals for proportions.

    Returns:
        threshold, tp, fp, tn, fn, sensitivity, specificity, ppv, npv, accuracy (each with `_ci_low` and
        `_ci_high`), f1 and kappa.
    """
    y = np.asarray(y_true).astype(bool)
    counts = confusion_counts(y, np.asarray(probs) >= threshold)
    tp, fp, tn, fn = counts["tp"], counts["fp"], counts["tn"], counts["fn"]
    rates = binary_rates(tp, fp, tn, fn)
    out: dict[str, float] = {"threshold": float(threshold), **counts}
    fractions = {
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "ppv": (tp, tp + fp),
        "npv": (tn, tn + fn),
        "accuracy": (tp + tn, tp + fp + tn + fn),
    }
    for name, (k, n) in fractions.items():
        low, high = wilson_interval(k, n, level)
        out.update({name: rates[name], f"{name}_ci_low": low, f"{name}_ci_high": high})
    out.update({"f1": rates["f1"], "kappa": rates["kappa"]})
    return out
