"""Metric code checked against scikit-learn on random inputs (ties included), plus hand-computed references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from fracture.stats import metrics
from fracture.stats.operating_points import tune_thresholds

SEEDS = range(6)


def _sample(seed: int, n: int = 400, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    scores = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y)))
    if ties:
        scores = np.round(scores, 1)  # ~10 distinct values: heavy ties across classes
    return y, scores


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ties", [False, True])
def test_auroc_and_average_precision_match_sklearn(seed: int, ties: bool) -> None:
    y, s = _sample(seed, ties=ties)
    assert metrics.auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_weighted_auroc_and_ap_match_sklearn_sample_weight(seed: int) -> None:
    y, s = _sample(seed, ties=True)
    w = np.random.default_rng(seed + 100).integers(0, 4, y.size).astype(float)
    assert metrics.auroc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert metrics.average_precision(y, s, w) == pytest.approx(
        average_precision_score(y, s, sample_weight=w), abs=1e-12
    )


def test_auroc_undefined_with_one_class() -> None:
    assert math.isnan(metrics.auroc(np.ones(5), np.linspace(0, 1, 5)))
    assert math.isnan(metrics.average_precision(np.zeros(5), np.linspace(0, 1, 5)))
    assert metrics.auroc([0, 1], [0.3, 0.3]) == 0.5  # a tie counts one half


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_and_pr_points_match_sklearn_curves(seed: int) -> None:
    y, s = _sample(seed, ties=True)
    fpr, tpr, thr = metrics.roc_points(y, s)
    sk_fpr, sk_tpr, sk_thr = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    recall, precision, _ = metrics.pr_points(y, s)
    sk_precision, sk_recall, _ = precision_recall_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(recall, sk_recall[::-1])
    np.testing.assert_allclose(precision, sk_precision[::-1])


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_f1_kappa_and_rates_match_sklearn(seed: int) -> None:
    y, s = _sample(seed)
    threshold = np.random.default_rng(seed).uniform(0.3, 0.7)
    pred = (s >= threshold).astype(int)
    c = metrics.confusion_counts(y, pred)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (tp, fp, tn, fn)
    rates = metrics.binary_rates(**c)
    assert rates["f1"] == pytest.approx(f1_score(y, pred), abs=1e-12)
    assert rates["kappa"] == pytest.approx(cohen_kappa_score(y, pred), abs=1e-12)
    assert rates["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert rates["specificity"] == pytest.approx(tn / (tn + fp))
    assert rates["ppv"] == pytest.approx(tp / (tp + fp))
    assert rates["npv"] == pytest.approx(tn / (tn + fn))
    assert rates["accuracy"] == pytest.approx((tp + tn) / y.size)


def test_rates_undefined_denominators_are_nan_not_zero() -> None:
    rates = metrics.binary_rates(tp=0, fp=0, tn=5, fn=0)  # no positives, none predicted
    assert math.isnan(rates["sensitivity"]) and math.isnan(rates["ppv"]) and math.isnan(rates["f1"])
    assert rates["specificity"] == 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_brier_and_reliability_curve_match_sklearn(seed: int) -> None:
    y, s = _sample(seed)
    assert metrics.brier_score(y, s) == pytest.approx(brier_score_loss(y, s), abs=1e-12)
    curve = metrics.reliability_curve(y, s, 10)
    frac_pos, mean_pred = calibration_curve(y, s, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(curve["frac_pos"], frac_pos)
    np.testing.assert_allclose(curve["mean_pred"], mean_pred)
    assert curve["count"].sum() == y.size


@pytest.mark.parametrize("seed", range(3))
def test_calibration_slope_and_intercept_match_unpenalised_logistic_regression(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(size=600)))
    y = (rng.random(600) < p**1.5).astype(int)  # miscalibrated on purpose
    logit = np.log(p / (1 - p))[:, None]
    ref = LogisticRegression(C=np.inf, solver="newton-cg", tol=1e-12, max_iter=1000).fit(logit, y)
    fit = metrics.calibration_fit(y, p)
    assert fit["slope"] == pytest.approx(ref.coef_[0, 0], abs=1e-6)
    assert fit["intercept"] == pytest.approx(ref.intercept_[0], abs=1e-6)


def test_calibration_of_perfectly_calibrated_probabilities_is_near_identity() -> None:
    rng = np.random.default_rng(7)
    p = rng.uniform(0.02, 0.98, 20_000)
    y = (rng.random(p.size) < p).astype(int)
    fit = metrics.calibration_fit(y, p)
    assert fit["slope"] == pytest.approx(1.0, abs=0.1)
    assert fit["intercept"] == pytest.approx(0.0, abs=0.1)
    assert fit["citl"] == pytest.approx(0.0, abs=0.05)


def test_calibration_fit_reports_separation_and_degenerate_inputs_as_nan() -> None:
    separated = metrics.calibration_fit([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert math.isnan(separated["slope"]) and math.isnan(separated["intercept"])
    assert math.isnan(metrics.calibration_fit([0, 1, 0, 1], [0.5] * 4)["slope"])  # constant predictions
    assert all(math.isnan(v) for v in metrics.calibration_fit([1, 1, 1], [0.2, 0.5, 0.9]).values())


def test_wilson_interval_against_hand_computed_values() -> None:
    # 8/10 at 95 %: z = 1.959964, centre = (0.8 + z^2/20) / (1 + z^2/10) = 0.716738,
    # half-width = z * sqrt(0.8 * 0.2 / 10 + z^2 / 400) / (1 + z^2/10) = 0.226576
    low, high = metrics.wilson_interval(8, 10, 0.95)
    assert low == pytest.approx(0.490162, abs=1e-6)
    assert high == pytest.approx(0.943318, abs=1e-6)
    # 0/10: low is exactly 0, high = z^2/n / (1 + z^2/n) = 0.384146 / 1.384146
    assert metrics.wilson_interval(0, 10, 0.95) == (0.0, pytest.approx(0.277533, abs=1e-6))
    assert metrics.wilson_interval(10, 10, 0.95)[1] == 1.0
    assert all(math.isnan(v) for v in metrics.wilson_interval(0, 0))
    narrow, wide = metrics.wilson_interval(50, 100, 0.80), metrics.wilson_interval(50, 100, 0.99)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]


def test_trivial_f1_is_the_call_everything_positive_baseline() -> None:
    y = np.array([1] * 67 + [0] * 33)
    assert metrics.trivial_f1(0.67) == pytest.approx(f1_score(y, np.ones_like(y)))
    assert metrics.trivial_f1(0.67) == pytest.approx(0.8024, abs=1e-4)  # GRAZPEDWRI-DX's ~0.80 baseline


def test_operating_point_uses_ge_threshold_and_wilson_cis() -> None:
    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([0.9, 0.5, 0.2, 0.5, 0.1, 0.0])
    op = metrics.operating_point(y, p, 0.5, 0.95)
    assert (op["tp"], op["fp"], op["tn"], op["fn"]) == (2, 1, 2, 1)  # 0.5 >= 0.5 is positive
    assert op["sensitivity"] == pytest.approx(2 / 3)
    assert (op["sensitivity_ci_low"], op["sensitivity_ci_high"]) == metrics.wilson_interval(2, 3, 0.95)
    assert op["sensitivity_ci_low"] < op["sensitivity"] < op["sensitivity_ci_high"]


@pytest.mark.parametrize("seed", SEEDS)
def test_tune_thresholds_meet_their_definitions(seed: int) -> None:
    y, s = _sample(seed, ties=True)
    t = tune_thresholds(y, s, target_sensitivity=0.9)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    assert t["youden"] == pytest.approx(thr[np.argmax(tpr - fpr)])
    assert metrics.binary_rates(**metrics.confusion_counts(y, s >= t["target_sensitivity"]))["sensitivity"] >= 0.9
    f1_at = {c: f1_score(y, s >= c) for c in np.unique(s)}
    assert f1_score(y, s >= t["f1_max"]) == pytest.approx(max(f1_at.values()))
    assert t["fixed"] == 0.5
