"""The vectorised patient-level bootstrap against a slow per-resample reference on the same draws."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from fracture.stats import bootstrap

log = logging.getLogger(__name__)


def _clustered(seed: int, n_patients: int, max_images: int = 4, ties: bool = False):
    """Patients with 1..max_images images; a per-patient effect makes images of a patient alike."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_images + 1, n_patients)
    patient = np.repeat(np.arange(n_patients), sizes)
    effect = rng.normal(size=n_patients)[patient]
    y = (rng.random(patient.size) < 1 / (1 + np.exp(-effect))).astype(int)
    probs = 1 / (1 + np.exp(-(0.8 * effect + rng.normal(size=patient.size) + y)))
    if ties:
        probs = np.round(probs, 1)
    groups = np.array([f"p{i:04d}" for i in patient], dtype=object)
    return y, probs, groups


def _reference(y, probs, groups, threshold, counts):
    """Slow loop: materialise each resample by concatenating the drawn patients' images, score with sklearn."""
    codes, n_clusters = bootstrap.cluster_codes(groups)
    members = [np.flatnonzero(codes == g) for g in range(n_clusters)]
    out = {"auroc": [], "auprc": [], "f1": []}
    for row in counts:
        drawn = np.repeat(np.arange(n_clusters), row)
        idx = np.concatenate([members[g] for g in drawn])
        yy, pp = y[idx], probs[idx]
        both = 0 < yy.sum() < yy.size
        out["auroc"].append(roc_auc_score(yy, pp) if both else np.nan)
        out["auprc"].append(average_precision_score(yy, pp) if yy.sum() else np.nan)
        out["f1"].append(f1_score(yy, pp >= threshold, zero_division=np.nan))
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_vectorised_bootstrap_equals_per_resample_loop(seed: int, ties: bool) -> None:
    y, probs, groups = _clustered(seed, n_patients=60, ties=ties)
    n_resamples = 150  # more than one block of the [B, N] weight matrix
    fast = bootstrap.cluster_bootstrap(y, probs, groups, 0.5, n_resamples, seed=seed)
    _, n_clusters = bootstrap.cluster_codes(groups)
    counts = bootstrap.resample_counts(n_clusters, n_resamples, np.random.default_rng(seed))
    slow = _reference(y, probs, groups, 0.5, counts)
    for name in ("auroc", "auprc", "f1"):
        np.testing.assert_allclose(fast[name], slow[name], rtol=0, atol=1e-9, err_msg=name)


def test_resamples_draw_patients_not_images() -> None:
    counts = bootstrap.resample_counts(7, 300, np.random.default_rng(0))
    assert counts.shape == (300, 7)
    assert (counts.sum(axis=1) == 7).all()  # G draws of G patients per resample
    again = bootstrap.resample_counts(7, 300, np.random.default_rng(0))
    np.testing.assert_array_equal(counts, again)  # seeded: reproducible
    codes = np.array([0, 0, 0, 1, 2, 2])
    weights = bootstrap.image_weights(counts[:, :3], codes)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 1] == weights[:, 2]).all()  # a patient moves whole
    assert (weights[:, 4] == weights[:, 5]).all()


def test_missing_patient_ids_become_singleton_clusters() -> None:
    codes, n = bootstrap.cluster_codes(pd.Series(["a", None, "a", None, "b"], dtype="string"))
    assert n == 4
    assert codes[0] == codes[2] and codes[1] != codes[3]
    assert bootstrap.cluster_codes(np.array([3, None, 3, 7], dtype=object))[1] == 3  # integer ids work too


def test_patient_bootstrap_is_wider_than_a_naive_image_bootstrap_on_clustered_data() -> None:
    rng = np.random.default_rng(3)
    patient = np.repeat(np.arange(80), 10)  # 10 near-identical images per patient
    y = np.repeat(rng.integers(0, 2, 80), 10)
    probs = np.clip(np.repeat(rng.normal(0.5 + 0.15 * (y[::10] - 0.5), 0.2), 10) + rng.normal(0, 0.01, 800), 0, 1)
    by_patient = bootstrap.cluster_bootstrap(y, probs, patient, 0.5, 1000, seed=1)["auroc"]
    by_image = bootstrap.cluster_bootstrap(y, probs, np.arange(800), 0.5, 1000, seed=1)["auroc"]
    width = {
        k: np.subtract(*bootstrap.percentile_interval(v, 0.95)[::-1]) for k, v in [("p", by_patient), ("i", by_image)]
    }
    assert width["p"] > 2 * width["i"]


def test_percentile_interval_ignores_undefined_resamples() -> None:
    values = np.r_[np.linspace(0, 1, 101), [np.nan] * 50]
    low, high = bootstrap.percentile_interval(values, 0.9)
    assert low == pytest.approx(0.05) and high == pytest.approx(0.95)
    assert all(np.isnan(bootstrap.percentile_interval(np.array([np.nan, 0.5]), 0.95)))


def test_resamples_missing_a_class_are_nan() -> None:
    y = np.array([1, 0, 0, 0])
    probs = np.array([0.9, 0.2, 0.3, 0.4])
    reps = bootstrap.cluster_bootstrap(y, probs, np.array(["a", "b", "c", "d"]), 0.5, 200, seed=0)
    no_positive = np.isnan(reps["auprc"])
    assert no_positive.any() and np.isnan(reps["auroc"][no_positive]).all()
    assert np.nanmin(reps["auroc"]) == 1.0  # whenever defined, the one positive outranks every negative


def test_timing_sanity_2000_resamples_over_30k_predictions() -> None:
    """No timed assert: this should finish in a few seconds; the measured time goes to the log."""
    y, probs, groups = _clustered(4, n_patients=10_900, max_images=5)
    y, probs, groups = y[:30_000], probs[:30_000], groups[:30_000]
    start = time.perf_counter()
    reps = bootstrap.cluster_bootstrap(y, probs, groups, 0.5, 2000, seed=0)
    log.info("2000 resamples x %d predictions: %.2f s", y.size, time.perf_counter() - start)
    assert np.isfinite(reps["auroc"]).all() and reps["auroc"].shape == (2000,)
    low, high = bootstrap.percentile_interval(reps["auroc"], 0.95)
    assert low < roc_auc_score(y, probs) < high


# ------------------------------------------------------------------------------ operating-point and calibration CIs
def _reference_resample(y, probs, groups, counts_row):
    """Materialise one resample by concatenating the drawn patients' images."""
    codes, n_clusters = bootstrap.cluster_codes(groups)
    drawn = np.repeat(np.arange(n_clusters), counts_row)
    idx = np.concatenate([np.flatnonzero(codes == g) for g in drawn])
    return y[idx], probs[idx]


def test_rate_and_calibration_replicates_equal_a_per_resample_loop() -> None:
    from fracture.stats import metrics

    y, probs, groups = _clustered(5, n_patients=50)
    rs = bootstrap.draw_resamples(groups, 40, seed=5)
    rates = bootstrap.rate_replicates(rs, y, probs, 0.5)
    cal = bootstrap.calibration_replicates(rs, y, probs, 10)
    for b in range(rs.n_resamples):
        yy, pp = _reference_resample(y, probs, groups, rs.counts[b])
        op = metrics.operating_point(yy, pp, 0.5, 0.95)
        for name in ("sensitivity", "specificity", "ppv", "npv", "accuracy", "f1"):
            np.testing.assert_allclose(rates[name][b], op[name], atol=1e-12, err_msg=name)
        fit = metrics.calibration_fit(yy, pp)
        assert cal["brier"][b] == pytest.approx(metrics.brier_score(yy, pp), abs=1e-12)
        ece = metrics.expected_calibration_error(metrics.reliability_curve(yy, pp, 10))
        assert cal["ece"][b] == pytest.approx(ece, abs=1e-12)
        assert cal["calibration_slope"][b] == pytest.approx(fit["slope"], abs=1e-6)
        assert cal["calibration_intercept"][b] == pytest.approx(fit["intercept"], abs=1e-6)


def test_calibration_replicates_are_nan_where_a_resample_is_separated_or_one_class() -> None:
    y = np.array([0, 0, 1, 1])
    probs = np.array([0.1, 0.2, 0.8, 0.9])  # perfectly separated: the slope is infinite
    cal = bootstrap.calibration_replicates(bootstrap.draw_resamples(np.arange(4), 50, 0), y, probs, 10)
    assert np.isnan(cal["calibration_slope"]).all() and np.isnan(cal["calibration_intercept"]).all()
    assert np.isfinite(cal["brier"]).all()


def _clustered_sensitivity_study(seed: int, n_patients: int = 120, sd: float = 1.5):
    """Patients with 2-8 images; one patient-level random effect decides how detectable all their images are."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(n_patients), rng.integers(2, 9, n_patients))
    y = (rng.random(n_patients) < 0.4)[patient].astype(int)
    detected = rng.random(patient.size) < 1 / (1 + np.exp(-(1.0 + rng.normal(0, sd, n_patients)[patient])))
    return y, np.where(detected, 0.75, 0.25), patient


def test_coverage_wilson_under_covers_clustered_data_and_the_cluster_bootstrap_covers() -> None:
    """200 simulated studies of 120 patients: how often does a 95 % CI of sensitivity hold the true value?

    Measured with these seeds: Wilson 0.755, cluster bootstrap 0.935 (1000 repetitions: 0.82 vs 0.944).
    """
    from fracture.stats import metrics

    truth = float(np.mean(1 / (1 + np.exp(-(1.0 + np.random.default_rng(123).normal(0, 1.5, 2_000_000))))))
    covered = {"wilson": 0, "bootstrap": 0}
    repetitions = 200
    for rep in range(repetitions):
        y, probs, patient = _clustered_sensitivity_study(1000 + rep)
        tp, n_pos = int(((probs >= 0.5) & (y == 1)).sum()), int(y.sum())
        low, high = metrics.wilson_interval(tp, n_pos, 0.95)
        covered["wilson"] += low <= truth <= high
        reps = bootstrap.rate_replicates(bootstrap.draw_resamples(patient, 500, rep), y, probs, 0.5)
        low, high = bootstrap.percentile_interval(reps["sensitivity"], 0.95)
        covered["bootstrap"] += low <= truth <= high
    coverage = {k: v / repetitions for k, v in covered.items()}
    log.info("coverage of 95 %% CIs of sensitivity: %s", coverage)
    assert coverage["wilson"] < 0.88
    assert coverage["bootstrap"] > 0.90
