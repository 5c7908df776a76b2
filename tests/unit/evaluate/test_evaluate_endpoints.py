"""Planted structure for evaluate's endpoints: reliable subgroups, primary endpoint, conservative and study-level
operating points, excluded views and cases, per source, decision curve, reliability table, gate on the CI bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fracture.config import EvaluateParams, GateParams, PrimaryParams, load_params
from fracture.evaluate import core, curves, tables
from fracture.stats import bootstrap, metrics
from fracture.stats.operating_points import tune_thresholds
from tests.unit.evaluate.test_evaluate import scored_frame, val_tuned

EP = load_params(Path(__file__).resolve().parents[3] / "params.yaml").evaluate.model_copy(
    update={"n_bootstrap": 200, "min_subgroup_n": 20, "min_subgroup_patients": 5}
)


def _assemble(frame: pd.DataFrame, ep: EvaluateParams = EP, **kwargs) -> core.Evaluation:
    tuned = val_tuned(frame, ep)
    return core.assemble_evaluation(frame, tuned["youden"], "youden", tuned, ep, seed=42, **kwargs)


def _subgroup(n_patients: int, pos_patients: int, images: int = 4, seed: int = 0) -> pd.DataFrame:
    """`n_patients` patients of `images` images each; all images of the first `pos_patients` patients positive."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(n_patients), images)
    y = (patient < pos_patients).astype(int)
    return pd.DataFrame(
        {
            "label": y,
            "prob": np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, y.size), 0, 1),
            "patient_id": [f"p{p}" for p in patient],
            "cluster_id": [f"p{p}" for p in patient],
        }
    )


# ---------------------------------------------------------------------------------------------- subgroups
def test_a_subgroup_whose_positives_come_from_one_patient_is_unreliable() -> None:
    one = tables.subgroup_row(_subgroup(10, pos_patients=1, images=8), 0.5, EP, seed=0)
    assert one["n"] == 80 and one["n_pos"] == 8 and one["n_pos_clusters"] == 1  # 80 images pass the old n >= 30
    assert not one["reliable"] and "1 positive patients < 5" in one["note"] and np.isnan(one["auroc"])
    enough = tables.subgroup_row(_subgroup(12, pos_patients=6, images=8), 0.5, EP, seed=0)
    assert enough["reliable"] and enough["note"] == "" and enough["auroc_ci_low"] <= enough["auroc"]
    assert enough["sensitivity_ci_method"] == "cluster_bootstrap" and enough["sensitivity_ci_valid"] == 200


def test_a_ci_whose_resamples_are_often_undefined_is_flagged() -> None:
    row = tables.subgroup_row(_subgroup(30, pos_patients=1, images=2), 0.5, EP, seed=0)
    # one positive patient: about e^-1 of the resamples draw no positive, so sensitivity is undefined there
    assert 0.2 < 1 - row["sensitivity_ci_valid"] / EP.n_bootstrap < 0.5
    assert row["ci_flagged"] and row["ci_undefined_share_max"] > 0.01


def test_every_rate_ci_resamples_the_split_cluster_not_the_image() -> None:
    frame = scored_frame()
    copies = frame.assign(patient_id=frame["image_id"])  # patient ids that separate copies; cluster_id still groups
    ev = _assemble(copies)
    methods = ev.intervals.set_index("key")["method"]
    for key in ("test.frozen.sensitivity", "test.frozen.npv", "test.youden.accuracy", "val.frozen.ppv"):
        assert methods[key] == "cluster_bootstrap", key
    single = _assemble(frame.assign(cluster_id=frame["image_id"])).intervals.set_index("key")["method"]
    assert single["test.frozen.sensitivity"] == "wilson"  # one image per cluster: independent units
    width = {
        name: e.metrics["test.frozen.sensitivity_ci_high"] - e.metrics["test.frozen.sensitivity_ci_low"]
        for name, e in (("cluster", ev), ("image", _assemble(frame.assign(cluster_id=frame["image_id"]))))
    }
    assert width["cluster"] > width["image"]


def test_headline_holds_calibration_cis_with_their_method() -> None:
    ev = _assemble(scored_frame())
    rows = ev.intervals.set_index("key")
    for name in ("brier", "ece", "calibration_slope", "calibration_intercept"):
        key = f"test.{name}"
        assert ev.metrics[f"{key}_ci_low"] <= ev.metrics[key] <= ev.metrics[f"{key}_ci_high"], key
        assert rows.loc[key, "method"] == "cluster_bootstrap" and rows.loc[key, "n_resamples"] == EP.n_bootstrap
    assert set(ev.intervals.columns) >= {"n_valid", "undefined_share", "flagged"}


# ------------------------------------------------------------------------------------------ primary endpoint
def test_primary_endpoint_is_the_clinically_relevant_subset_of_a_kaggle_test_set() -> None:
    frame = scored_frame()
    ev = _assemble(frame)
    test = ev.predictions[ev.predictions["split"] == "test"]
    relevant = test[test["clinically_relevant"]]
    assert ev.primary["primary.population"] == "clinically_relevant" and ev.primary["primary.metric"] == "auroc"
    assert ev.metrics["primary.n_images"] == len(relevant) < len(test)
    assert ev.metrics["primary.n_patients"] == relevant["patient_id"].nunique()
    assert ev.metrics["primary.value"] == pytest.approx(metrics.auroc(relevant["label"], relevant["prob"]))
    assert ev.metrics["primary.ci_low"] <= ev.metrics["primary.value"] <= ev.metrics["primary.ci_high"]


def test_primary_endpoint_is_every_image_of_another_test_source_and_follows_params() -> None:
    frame = scored_frame()
    frame["split"] = np.where(frame["source"] == "mura", "test", "val")  # a MURA test set
    ev = _assemble(frame)
    assert ev.primary["primary.population"] == "all"
    assert ev.metrics["primary.n_images"] == ev.metrics["test.n"]
    assert ev.metrics["primary.value"] == pytest.approx(ev.metrics["test.auroc"])
    ep = EP.model_copy(update={"primary": PrimaryParams(population="all", metric="sensitivity")})
    ev = _assemble(scored_frame(), ep=ep)
    assert ev.primary["primary.population"] == "all" and ev.primary["primary.metric"] == "sensitivity"
    assert ev.metrics["primary.value"] == pytest.approx(ev.metrics["test.frozen.sensitivity"])
    assert ev.metrics["primary.ci_low"] == pytest.approx(ev.metrics["test.frozen.sensitivity_ci_low"])


def test_gate_can_use_the_lower_ci_bound_of_the_primary_endpoint() -> None:
    from tests.unit.evaluate.test_evaluate import gate_values

    values = gate_values(**{"primary.value": 0.82, "primary.ci_low": 0.74})
    gate = GateParams(min_auroc=0.7, min_sensitivity=0.7, min_specificity=0.5, precision=0.1, min_primary=0.8,
                      primary_bound="point")  # fmt: skip
    point = core.evaluate_gate(values, gate)
    assert point.status == "passed" and point.checks[-1].name == "primary (point)"
    failed = core.evaluate_gate(values, gate.model_copy(update={"primary_bound": "ci_low"}))
    assert failed.status == "failed" and failed.reasons == ("primary (lower bound): primary.ci_low 0.7400 < 0.8",)


# ---------------------------------------------------------------------------------------- operating points
def test_conservative_threshold_puts_the_val_sensitivity_lower_bound_at_the_target() -> None:
    frame = scored_frame(n=1500, seed=3)
    val = frame[frame["split"] == "val"]
    y, p, groups = val["label"].to_numpy(), val["prob"].to_numpy(), val["cluster_id"]
    tuned = tune_thresholds(y, p, 0.85, groups, n_resamples=500, seed=7)
    conservative = tuned["target_sensitivity_conservative"]
    rs = bootstrap.draw_resamples(groups, 500, 7)  # the same draws the rule used
    low, _ = bootstrap.percentile_interval(bootstrap.rate_replicates(rs, y, p, conservative)["sensitivity"], 0.95)
    assert low >= 0.85
    above = p[(y == 1) & (p > conservative)].min()  # the next stricter candidate misses the target
    low_above, _ = bootstrap.percentile_interval(bootstrap.rate_replicates(rs, y, p, above)["sensitivity"], 0.95)
    assert low_above < 0.85
    assert conservative < tuned["target_sensitivity"]  # the plain rule stops at the point estimate
    ev = _assemble(frame, ep=EP.model_copy(update={"target_sensitivity": 0.85}))
    assert ev.metrics["target_sensitivity"] == 0.85  # achieved test sensitivity reported beside the target
    assert "test.target_sensitivity_conservative.sensitivity" in ev.metrics
    assert (
        ev.metrics["test.target_sensitivity_conservative.threshold"] <= ev.metrics["test.target_sensitivity.threshold"]
    )


def test_study_threshold_is_tuned_on_val_studies_and_never_reads_test() -> None:
    frame = scored_frame()
    ev = _assemble(frame)
    studies = tables.study_frame(ev.predictions)
    val = studies[studies["split"] == "val"]
    expected = tune_thresholds(val["label"], val["prob"], EP.target_sensitivity, val["cluster_id"], 200, 42)
    assert ev.thresholds["study"]["threshold"] == pytest.approx(expected["youden"])
    assert ev.metrics["test.study.frozen.threshold"] == pytest.approx(expected["youden"])
    assert ev.metrics["test.study.image_threshold.threshold"] == ev.thresholds["frozen"]
    shuffled = frame.copy()
    test = shuffled["split"] == "test"
    shuffled.loc[test, "prob"] = np.random.default_rng(2).permutation(shuffled.loc[test, "prob"].to_numpy())
    assert _assemble(shuffled).thresholds["study"] == ev.thresholds["study"]


def test_a_study_with_an_excluded_positive_view_is_left_out_at_study_level() -> None:
    frame = scored_frame()
    test = frame[frame["split"] == "test"]
    negative_study = test.loc[test.groupby("study_id")["label"].transform("max") == 0, "study_id"].iloc[0]
    dropped = pd.DataFrame({"image_id": ["gone"], "study_id": [negative_study], "label": [1]})  # its metal view
    base, ev = _assemble(frame), _assemble(frame, dropped=dropped)
    assert ev.metrics["test.study.n_excluded_positive_view"] == 1
    assert ev.metrics["test.study.n"] == base.metrics["test.study.n"] - 1
    assert ev.metrics["test.n"] == base.metrics["test.n"]  # the image level is unchanged


# --------------------------------------------------------------------------------- spectrum, per source
def test_cohort_excluded_cases_are_scored_in_the_spectrum_only() -> None:
    frame = scored_frame()
    spectrum = scored_frame(n=60, seed=9).assign(
        image_id=lambda d: "x" + d["image_id"],
        reason=np.where(np.arange(60) % 2, "metal", "metal; sex O"),
        cluster_split="test",
    )
    base, ev = _assemble(frame), _assemble(frame, spectrum=spectrum)
    assert {k: v for k, v in ev.metrics.items() if k != "ci.n_flagged"} == {
        k: v for k, v in base.metrics.items() if k != "ci.n_flagged"
    }  # never in the headline
    table = ev.spectrum.set_index("reason")
    assert table.loc["any", "n"] == 60 and table.loc["metal", "n"] == 60 and table.loc["sex O", "n"] == 30
    assert len(ev.spectrum_predictions) == 60 and set(ev.spectrum_predictions["image_id"]).isdisjoint(frame["image_id"])


def test_per_source_table_puts_every_source_beside_the_pooled_figure() -> None:
    ev = _assemble(scored_frame())
    table = ev.per_source.set_index(["split", "source"])
    assert set(table.index) == {
        ("val", "all"),
        ("val", "hospital"),
        ("val", "mura"),
        ("test", "all"),
        ("test", "kaggle"),
    }
    assert table.loc[("val", "all"), "n"] == table.loc[("val", "hospital"), "n"] + table.loc[("val", "mura"), "n"]
    assert table.loc[("test", "all"), "auroc"] == pytest.approx(ev.metrics["test.auroc"])
    for column in ("auroc_ci_low", "sensitivity_ci_high", "specificity_ci_method", "sensitivity_ci_valid"):
        assert column in table.columns


# --------------------------------------------------------------------------------- decision curve, reliability
def test_decision_curve_equals_the_net_benefit_formula_by_hand() -> None:
    y = np.array([1, 1, 0, 0, 0, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.3, 0.25, 0.1, 0.6, 0.05, 0.2, 0.45, 0.04, 0.3])
    curve = curves.net_benefit(y, p, np.array([0.1, 0.3, 0.5])).set_index("threshold")
    # t = 0.3: treated 0.9, 0.3, 0.6, 0.45, 0.3 -> TP 2, FP 3 of 10; odds 0.3 / 0.7
    assert curve.loc[0.3, "net_benefit"] == pytest.approx(2 / 10 - 3 / 10 * 0.3 / 0.7)
    assert curve.loc[0.3, "treat_all"] == pytest.approx(0.3 - 0.7 * 0.3 / 0.7)
    assert curve.loc[0.5, "net_benefit"] == pytest.approx(1 / 10 - 1 / 10 * 1.0)
    assert curve.loc[0.1, "net_benefit"] == pytest.approx(2 / 10 - 6 / 10 * 0.1 / 0.9)  # 0.1 itself is treated
    assert (curve["treat_none"] == 0).all()


def test_decision_curve_and_reliability_tables_cover_val_and_test() -> None:
    ev = _assemble(scored_frame())
    dc = ev.plots["decision_curve"]
    assert set(dc["split"]) == {"val", "test"} and dc["threshold"].min() == 0.05 and dc["threshold"].max() == 0.5
    assert list(ev.decision.loc[ev.decision["split"] == "test", "threshold"]) == pytest.approx(
        np.round(np.arange(0.05, 0.51, 0.05), 2)
    )
    rel = ev.reliability
    assert rel.loc[rel["split"] == "test", "count"].sum() == ev.metrics["test.n"]
    defined = rel.dropna(subset=["frac_pos_ci_low"])
    assert len(defined) and (defined["frac_pos_ci_low"] <= defined["frac_pos"] + 1e-12).all()
    assert (defined["frac_pos"] <= defined["frac_pos_ci_high"] + 1e-12).all()
    assert set(rel["ci_method"].dropna()) == {"cluster_bootstrap"}
