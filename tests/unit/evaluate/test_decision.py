"""The evaluation gate on simulated data of known truth (benchmarks.decision_sim; the full Monte Carlo study is
`benchmarks/bench_decisions.py`): undecidable at 40 patients, decided on lower bounds at 1,000, exact bounds where
the bootstrap cannot vary, zero-width intervals flagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.decision_sim import mu_for_auroc, prob_threshold, simulate
from fracture.config import GateParams, load_params
from fracture.evaluate.certify import patients_to_certify
from fracture.evaluate.decision import (
    clopper_pearson_low,
    coprimary_endpoints,
    evaluate_gate,
    patients_needed,
)
from fracture.evaluate.intervals import interval_table

EP = load_params(Path(__file__).resolve().parents[3] / "params.yaml").evaluate.model_copy(update={"n_bootstrap": 300})
GATE = GateParams(min_auroc=0.7, min_sensitivity=0.5, min_specificity=0.5, precision=0.1, min_primary=None,
                  primary_bound="ci_low")  # fmt: skip


def _verdict(test: pd.DataFrame, auroc: float, gate: GateParams = GATE, seed: int = 0):
    ep = EP.model_copy(update={"gate": gate})
    threshold = prob_threshold(mu_for_auroc(auroc) / 2)  # sensitivity = specificity at the true midpoint
    values = coprimary_endpoints(test, "all", threshold, ep, seed)
    return evaluate_gate(values, gate), values


def test_a_40_patient_test_set_is_undecidable_and_says_how_many_patients_it_needs():
    verdict, values = _verdict(simulate(40, 0.80, np.random.default_rng(1)), 0.80)
    assert verdict.status == "undecidable" and verdict.reasons[0] == "undecidable: n too small"
    size = {c.name: c for c in verdict.checks if c.name.startswith("sample_size.")}
    pos = size["sample_size.positive_patients"]
    assert pos.n_observed == values["coprimary.n_pos_patients"] < pos.n_needed
    assert f"needs {pos.n_needed}" in " ".join(verdict.reasons)
    assert all(c.status == "undecidable" for c in verdict.checks if not c.name.startswith("sample_size."))


@pytest.mark.parametrize(("auroc", "status"), [(0.80, "passed"), (0.60, "failed")])
def test_1000_patients_decide_on_the_lower_bound(auroc, status):
    verdict, values = _verdict(simulate(1000, auroc, np.random.default_rng(2)), auroc)
    assert verdict.status == status, verdict.reasons
    assert values["coprimary.auroc_bound"] == values["coprimary.auroc_ci_low"] < values["coprimary.auroc"]
    if status == "failed":
        assert any(r.startswith("coprimary.auroc (lower bound)") for r in verdict.reasons)


def test_a_point_above_the_limit_with_a_lower_bound_below_it_fails():
    """Regression: the gate compared point estimates (primary_bound: point was the default)."""
    test = simulate(1000, 0.72, np.random.default_rng(3))
    verdict, values = _verdict(test, 0.72)
    assert values["coprimary.auroc"] > 0.7 > values["coprimary.auroc_bound"], values
    assert verdict.status == "failed"


def test_exact_bound_when_every_positive_patient_is_detected():
    """0 misses among 36 positive patients bound sensitivity at 0.9 (0.9 ** 36 < 0.025); 35 do not."""
    assert clopper_pearson_low(36, 36, 0.95) == pytest.approx(0.025 ** (1 / 36)) and 0.025 ** (1 / 36) > 0.9
    assert clopper_pearson_low(35, 35, 0.95) < 0.9
    rng = np.random.default_rng(4)
    test = simulate(200, 0.9, rng)
    positives = test[test["label"] == 1]
    keep = positives["cluster_id"].drop_duplicates().iloc[:36]
    test = pd.concat([positives[positives["cluster_id"].isin(keep)], test[test["label"] == 0]])
    values = coprimary_endpoints(test.assign(prob=np.where(test["label"] == 1, 0.99, test["prob"])), "all", 0.98,
                                 EP, 0)  # fmt: skip
    assert values["coprimary.sensitivity"] == 1.0 and values["coprimary.sensitivity_zero_width"] == 1
    assert values["coprimary.sensitivity_ci_low"] == 1.0  # the percentile bootstrap cannot vary here ...
    assert values["coprimary.sensitivity_bound"] == pytest.approx(0.025 ** (1 / 36))  # ... the exact bound can


def test_zero_width_intervals_are_flagged_in_the_interval_table():
    values = {"test.sensitivity": 1.0, "test.sensitivity_ci_low": 1.0, "test.sensitivity_ci_high": 1.0,
              "test.sensitivity_ci_valid": 300, "test.sensitivity_ci_method": "cluster_bootstrap",
              "test.auroc": 0.8, "test.auroc_ci_low": 0.7, "test.auroc_ci_high": 0.9, "test.auroc_ci_valid": 300,
              "test.auroc_ci_method": "cluster_bootstrap"}  # fmt: skip
    table = interval_table(values, 300).set_index("key")
    assert table.loc["test.sensitivity", "zero_width"] and table.loc["test.sensitivity", "flagged"]
    assert not table.loc["test.auroc", "flagged"]


def test_patients_needed_follows_the_precision_rule_and_the_design_effect():
    # Buderer: 1.96^2 * 0.6 * 0.4 / 0.1^2 = 92.2 effective units
    assert patients_needed(0.6, 0.1, 0.95, deff=3.0, images_per_patient=3.0) == 93  # each patient counts once
    assert patients_needed(0.6, 0.1, 0.95, deff=1.0, images_per_patient=3.0) == 31  # independent images
    assert patients_needed(0.3, 0.1, 0.95, deff=1.0, images_per_patient=1.0) == 97  # p is at least 0.5


def test_certification_needs_36_positive_patients_for_0_9_and_names_them_when_it_cannot():
    """Regression: with 10 val positives every resample had sensitivity 1, so the percentile rule 'met' 0.9."""
    from fracture.evaluate.certify import certify_target

    assert patients_to_certify(0.9, 0.95) == 36
    probs = np.linspace(0.5, 0.99, 10)
    few = certify_target(np.ones(10, bool), probs, np.arange(10), 0.9, 0.95)
    assert not few["certified"] and few["threshold"] is None and few["n_needed"] == 36
    assert "val has 10 positive patients" in few["note"] and "36 positive patients" in few["note"]
    enough = certify_target(np.ones(36, bool), np.linspace(0.5, 0.99, 36), np.arange(36), 0.9, 0.95)
    assert enough["certified"] and enough["threshold"] == pytest.approx(0.5)  # every positive must be caught
    assert enough["lower_bound"] == pytest.approx(0.025 ** (1 / 36))
    images = certify_target(np.ones(72, bool), np.linspace(0.5, 0.99, 72), np.arange(72) // 2, 0.9, 0.95)
    assert images["certified"] and images["n_pos_patients"] == 36  # two images a patient buy no precision


def test_a_certified_threshold_meets_its_target_on_new_data():
    """Small Monte Carlo (40 runs; bench_decisions runs 400 from 20 to 200 positive patients)."""
    from benchmarks.decision_sim import true_rates
    from fracture.evaluate.certify import certify_target

    rng, mu, met, certified = np.random.default_rng(5), mu_for_auroc(0.9), 0, 0
    for _ in range(40):
        val = simulate(160, 0.9, rng)
        cert = certify_target(val["label"].to_numpy(), val["prob"].to_numpy(), val["cluster_id"], 0.8, 0.95)
        if cert["certified"]:
            certified += 1
            t = float(np.log(cert["threshold"] / (1 - cert["threshold"])))
            met += true_rates(mu, t)[0] >= 0.8
    assert certified >= 30 and met == certified  # nominal 97.5 %: no miss expected in 40
