"""The evaluate step: thresholds from val only, flat finite metrics, subgroups, study level, gate, eval dir."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fracture import evaluate
from fracture.base.errors import InputError
from fracture.config import EvaluateParams, GateParams, load_params
from fracture.stats.operating_points import tune_thresholds

EP = load_params(Path(__file__).resolve().parents[3] / "params.yaml").evaluate.model_copy(
    update={"n_bootstrap": 200, "min_subgroup_n": 20}
)


def scored_frame(n: int = 900, seed: int = 0) -> pd.DataFrame:
    """Scored val (mura, hospital) and test (kaggle) rows with the manifest fields evaluate joins."""
    rng = np.random.default_rng(seed)
    patient = rng.integers(0, n // 3, n)
    source = np.array(["kaggle", "mura", "hospital"])[patient % 3]
    y = rng.integers(0, 2, n)
    kaggle = source == "kaggle"
    flags = {
        c: pd.array(np.where(kaggle, rng.random(n) < f, None), dtype="boolean")
        for c, f in (("initial_exam", 0.6), ("cast", 0.2), ("metal", 0.05))
    }
    return pd.DataFrame(
        {
            "image_id": [f"{i:016x}" for i in range(n)],
            "split": np.where(kaggle, "test", "val"),
            "prob": 1 / (1 + np.exp(-(rng.normal(size=n) + 2.0 * (y - 0.5)))),
            "label": y.astype("int8"),
            "patient_id": pd.array([f"{s}:{p}" for s, p in zip(source, patient, strict=True)], dtype="string"),
            "cluster_id": pd.array([f"{s}:{p}" for s, p in zip(source, patient, strict=True)], dtype="string"),
            "study_id": pd.array(
                [f"{s}:{p}_{i % 2}" for i, (s, p) in enumerate(zip(source, patient, strict=True))], dtype="string"
            ),
            "source": pd.array(source, dtype="string"),
            "age": pd.array(np.where(rng.random(n) < 0.1, np.nan, rng.uniform(1, 90, n)), dtype="Float64"),
            "sex": pd.array(rng.choice(["M", "F"], n), dtype="string"),
            "body_part": pd.array(np.where(source == "hospital", "radius", "wrist"), dtype="string"),
            "projection": pd.array(np.where(kaggle, rng.choice(["ap_pa", "lateral"], n), None), dtype="string"),
            **flags,
        }
    )


def val_tuned(frame: pd.DataFrame, ep: EvaluateParams = EP, seed: int = 42) -> dict[str, float]:
    """The thresholds train stores in config.json: tuned on val, the conservative rule resampling val clusters."""
    val = frame[frame["split"] == "val"]
    y, p = val["label"].to_numpy(), val["prob"].to_numpy()
    return tune_thresholds(y, p, ep.target_sensitivity, val["cluster_id"], ep.n_bootstrap, seed)


def _assemble(frame: pd.DataFrame, ep: EvaluateParams = EP, config_thresholds: dict | None = None, **kwargs):
    tuned = val_tuned(frame, ep)
    stored = tuned if config_thresholds is None else config_thresholds
    return evaluate.assemble_evaluation(frame, tuned["youden"], "youden", stored, ep, seed=42, **kwargs)


# ------------------------------------------------------------------------------------------------ thresholds
def test_thresholds_never_read_test_labels() -> None:
    frame = scored_frame()
    base = _assemble(frame)
    permuted = frame.copy()
    test = permuted["split"] == "test"
    permuted.loc[test, "label"] = np.random.default_rng(1).permutation(permuted.loc[test, "label"].to_numpy())
    shuffled = _assemble(permuted)
    assert shuffled.thresholds == base.thresholds  # frozen point and every val-tuned threshold unchanged
    assert shuffled.metrics["threshold"] == base.metrics["threshold"]
    assert shuffled.metrics["test.youden.threshold"] == base.metrics["test.youden.threshold"]
    assert shuffled.metrics["test.auroc"] != base.metrics["test.auroc"]  # the labels did change


def test_frozen_threshold_is_applied_unchanged_to_test() -> None:
    frame = scored_frame()
    ev = evaluate.assemble_evaluation(frame, 0.7312, "youden", None, EP, seed=0)
    assert ev.thresholds["frozen"] == 0.7312 and ev.metrics["test.frozen.threshold"] == 0.7312
    test = ev.predictions[ev.predictions["split"] == "test"]
    assert ev.metrics["test.frozen.tp"] == int(((test["prob"] >= 0.7312) & (test["label"] == 1)).sum())
    assert (test["pred"] == (test["prob"] >= 0.7312)).all()


def test_val_thresholds_are_checked_against_config_json(caplog: pytest.LogCaptureFixture) -> None:
    frame = scored_frame()
    assert _assemble(frame).thresholds["matches_config"] is True
    stored = val_tuned(frame)
    stored["youden"] += 0.05
    with caplog.at_level(logging.WARNING, logger="fracture.evaluate"):
        ev = _assemble(frame, config_thresholds=stored)
    assert ev.thresholds["matches_config"] is False
    assert any("youden" in m for m in ev.thresholds["mismatches"])
    assert "differ from the model's config.json" in caplog.text


# ---------------------------------------------------------------------------------------------- metrics.json
def test_metrics_are_flat_finite_and_hold_the_headline_keys(tmp_path, make_params) -> None:
    frame = scored_frame()
    stored = val_tuned(frame, seed=0)
    frame.loc[frame["split"] == "val", "label"] = 1  # val has one class: val AUROC and more are undefined
    ev = evaluate.assemble_evaluation(frame, stored["youden"], "youden", stored, EP, seed=0)
    assert ev.metrics["test.f1_max.threshold"] == stored["f1_max"]  # not re-tunable here: config.json's are shown
    evaluate.write_evaluation(ev, tmp_path, make_params())
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert all(isinstance(k, str) for k in written)
    assert all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in written.values())
    primary = json.loads((tmp_path / "primary.json").read_text())
    assert primary["primary.population"] == "clinically_relevant" and primary["primary.metric"] == "auroc"
    assert primary["primary.value"] == written["primary.value"] and primary["primary.n_images"] > 0
    assert "val.auroc" not in written and "val.prevalence" in written  # undefined values are left out, not NaN
    for key in (
        "test.auroc",
        "test.auroc_ci_low",
        "test.auroc_ci_high",
        "test.auprc",
        "test.auprc_ci_low",
        "test.frozen.sensitivity",
        "test.frozen.sensitivity_ci_low",
        "test.frozen.specificity_ci_high",
        "test.frozen.f1",
        "test.frozen.f1_ci_low",
        "test.youden.f1",
        "test.f1_max.kappa",
        "test.target_sensitivity.npv",
        "test.fixed.ppv",
        "test.trivial_f1",
        "test.prevalence",
        "test.brier",
        "test.brier_ci_low",
        "test.ece_ci_high",
        "test.calibration_slope",
        "test.calibration_slope_ci_low",
        "test.calibration_intercept_ci_high",
        "test.frozen.sensitivity_ci_valid",
        "test.auroc_ci_valid",
        "test.n_clusters",
        "test.target_sensitivity_conservative.sensitivity",
        "target_sensitivity",
        "test.study.image_threshold.sensitivity",
        "study_threshold",
        "primary.value",
        "primary.ci_low",
        "primary.ci_high",
        "primary.n_images",
        "primary.n_patients",
        "ci.n_flagged",
        "test.study.auroc",
        "test.study.frozen.sensitivity",
        "val.frozen.fp",
        "threshold",
        "gate.passed",
    ):
        assert key in written, key
    assert written["test.auroc_ci_low"] <= written["test.auroc"] <= written["test.auroc_ci_high"]
    headline = json.loads((tmp_path / "headline.json").read_text())  # THE DVC metric: about ten numbers
    assert list(headline) == list(evaluate.HEADLINE_KEYS)
    assert {short: written[key] for short, key in evaluate.HEADLINE_KEYS.items()} == headline
    assert headline["auroc_lo"] <= headline["auroc"] <= headline["auroc_hi"] and headline["gate_passed"] in (0, 1)
    p = written["test.prevalence"]
    assert written["test.trivial_f1"] == pytest.approx(2 * p / (1 + p))


def test_no_bootstrap_means_no_bootstrap_cis() -> None:
    frame = scored_frame()
    no_bootstrap = EP.model_copy(update={"n_bootstrap": 0})
    ev = _assemble(frame, ep=no_bootstrap)
    assert "test.auroc" in ev.metrics and "test.auroc_ci_low" not in ev.metrics
    assert "test.frozen.f1_ci_low" not in ev.metrics
    # several images per patient: an image-level Wilson interval would overstate precision, so there is none
    assert "test.frozen.sensitivity" in ev.metrics and "test.frozen.sensitivity_ci_low" not in ev.metrics
    single = frame.assign(
        cluster_id=frame["image_id"]
    )  # one image per cluster: Wilson is valid and needs no resampling
    ev = _assemble(single, ep=no_bootstrap)
    assert "test.frozen.sensitivity_ci_low" in ev.metrics
    methods = ev.intervals.set_index("key")["method"]
    assert methods["test.frozen.sensitivity"] == "wilson"


def test_bootstrap_is_seeded() -> None:
    frame = scored_frame()
    val = frame[frame["split"] == "val"]
    tuned = tune_thresholds(val["label"].to_numpy(), val["prob"].to_numpy(), EP.target_sensitivity)

    def cis(seed: int) -> dict:
        ev = evaluate.assemble_evaluation(frame, tuned["youden"], "youden", tuned, EP, seed=seed)
        return {k: v for k, v in ev.metrics.items() if "_ci_" in k}

    assert cis(7) == cis(7)  # the same seed gives the same intervals
    assert cis(7) != cis(8)  # and the seed is used: another one moves at least one bound


# --------------------------------------------------------------------------------------- study and subgroups
def test_study_level_takes_the_max_over_views() -> None:
    frame = pd.DataFrame(
        {
            "split": ["test"] * 4,
            "image_id": ["a", "b", "c", "d"],
            "study_id": pd.array(["s1", "s1", "s2", None], dtype="string"),
            "patient_id": pd.array(["p1", "p1", "p2", "p3"], dtype="string"),
            "prob": [0.2, 0.9, 0.4, 0.6],
            "label": [0, 1, 0, 1],
        }
    )
    studies = evaluate.study_frame(frame).set_index("study_id")
    assert len(studies) == 3  # the image without a study is its own study
    assert studies.loc["s1", "prob"] == 0.9 and studies.loc["s1", "label"] == 1 and studies.loc["s1", "n_images"] == 2


def test_tiny_and_one_class_subgroups_are_flagged_not_reported_as_confident() -> None:
    frame = scored_frame()
    test_rows = frame.index[frame["split"] == "test"]
    frame.loc[test_rows[:5], "sex"] = "O"  # 5 images < min_subgroup_n
    frame.loc[test_rows, "metal"] = False
    frame.loc[test_rows[10:40], "metal"] = True
    frame.loc[test_rows[10:40], "label"] = 1  # 30 images, positives only
    table = _assemble(frame).subgroups.set_index(["split", "subgroup", "level"])
    tiny = table.loc[("test", "sex", "O")]
    assert tiny["n"] == 5 and not tiny["reliable"] and "n too small" in tiny["note"] and math.isnan(tiny["auroc"])
    one_class = table.loc[("test", "metal", "yes")]
    assert one_class["n"] == 30 and not one_class["reliable"] and one_class["note"] == "one class only"
    assert math.isnan(one_class["auroc"]) and one_class["sensitivity"] == pytest.approx(
        (frame.loc[test_rows[10:40], "prob"] >= _assemble(frame).thresholds["frozen"]).mean()
    )
    big = table.loc[("test", "sex", "M")]
    assert big["reliable"] and big["note"] == "" and big["auroc_ci_low"] <= big["auroc"] <= big["auroc_ci_high"]


def test_subgroups_cover_every_dimension_and_the_clinically_relevant_subset() -> None:
    frame = scored_frame()
    table = _assemble(frame).subgroups
    assert set(table["subgroup"]) == set(evaluate.SUBGROUPS)
    test = table[table["split"] == "test"]
    assert set(test.loc[test["subgroup"] == "initial_exam", "level"]) == {"initial", "follow-up"}
    relevant = test[test["subgroup"] == "clinically_relevant"]
    assert list(relevant["level"]) == ["yes"]
    kaggle = frame[frame["split"] == "test"]
    expected = kaggle["initial_exam"].fillna(False) & ~kaggle["cast"].fillna(False) & ~kaggle["metal"].fillna(False)
    assert relevant["n"].iloc[0] == expected.sum()
    for column in ("prevalence", "sensitivity_ci_low", "specificity_ci_high", "f1", "trivial_f1", "n_patients"):
        assert column in table.columns


def test_age_bands() -> None:
    ages = pd.Series([0.2, 5.99, 6.0, 11.9, 12, 19.5, 20, 39, 40, 64.9, 65, 101, None], dtype="Float64")
    bands = evaluate.age_bands(ages, (6, 12, 20, 40, 65)).tolist()
    assert bands == [
        "<6",
        "<6",
        "6-11",
        "6-11",
        "12-19",
        "12-19",
        "20-39",
        "20-39",
        "40-64",
        "40-64",
        "65+",
        "65+",
        "unknown",
    ]


# ----------------------------------------------------------------------------------------------- plots, gate
def test_plot_tables_follow_the_dvc_formats() -> None:
    ev = _assemble(scored_frame())
    n_test = int((ev.predictions["split"] == "test").sum())
    assert list(ev.plots["confusion"].columns) == ["actual", "predicted"] and len(ev.plots["confusion"]) == n_test
    assert ev.plots["confusion"]["predicted"].sum() == ev.metrics["test.frozen.tp"] + ev.metrics["test.frozen.fp"]
    roc = ev.plots["roc"]
    assert {"split", "fpr", "tpr", "threshold"} <= set(roc.columns) and set(roc["split"]) == {"val", "test"}
    assert {"recall", "precision"} <= set(ev.plots["pr"].columns)
    cal = ev.plots["calibration"]
    assert {"bin", "mean_pred", "frac_pos", "count"} <= set(cal.columns)
    assert cal.loc[cal["split"] == "test", "count"].sum() == n_test


def gate_values(**over: float) -> dict:
    """Flat `coprimary.*` values of a test set with enough patients (100 of each class, 93 and 97 needed)."""
    values = {
        "coprimary.n_pos_patients": 100, "coprimary.n_neg_patients": 100, "coprimary.precision": 0.1,
        "coprimary.sensitivity_n_needed": 93, "coprimary.specificity_n_needed": 97,
        "coprimary.auroc": 0.88, "coprimary.auroc_bound": 0.85,
        "coprimary.sensitivity": 0.8, "coprimary.sensitivity_bound": 0.75,
        "coprimary.specificity": 0.8, "coprimary.specificity_bound": 0.72,
    }  # fmt: skip
    return {**values, **over}


def test_gate_passes_fails_and_treats_undefined_as_failed() -> None:
    gate = GateParams(min_auroc=0.8, min_sensitivity=0.7, min_specificity=0.5, precision=0.1, min_primary=None,
                      primary_bound="ci_low")  # fmt: skip
    passed = evaluate.evaluate_gate(gate_values(), gate)
    assert passed.status == "passed" and passed.reasons == () and all(c.status == "passed" for c in passed.checks)
    failed = evaluate.evaluate_gate(gate_values(**{"coprimary.sensitivity_bound": 0.65}), gate)
    assert failed.status == "failed"
    assert failed.reasons == ("coprimary.sensitivity (lower bound): coprimary.sensitivity_bound 0.6500 < 0.7",)
    undefined = evaluate.evaluate_gate(gate_values(**{"coprimary.auroc_bound": float("nan")}), gate)
    assert undefined.status == "failed" and "coprimary.auroc_bound is undefined" in undefined.reasons[0]
    point = evaluate.evaluate_gate(gate_values(**{"coprimary.sensitivity_bound": 0.65}),
                                   gate.model_copy(update={"primary_bound": "point"}))  # fmt: skip
    assert point.status == "passed"  # the point 0.8 clears 0.7; the default reads the lower bound


# ------------------------------------------------------------------------------------- run_evaluate (eval dir)
@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory, make_params):
    """manifest + splits + cache + a tiny real model dir, written by hand (no upstream step needed).

    The cache holds no image of the train rows: scoring one would fail, so the run proves they are not read.
    """
    import torch

    from fracture.base.io import write_manifest
    from fracture.contracts.schema import MANIFEST_COLUMNS, coerce_manifest
    from fracture.model.core import build_model, input_contract, model_config, predict_proba

    root = tmp_path_factory.mktemp("evalrun")
    params = make_params({"evaluate": {"n_bootstrap": 50, "min_subgroup_n": 5}})
    frame = scored_frame(n=90, seed=5).drop(columns=["prob", "split"])
    split = np.array(["train", "val", "test"])[np.arange(90) % 3]
    manifest = frame.assign(
        path=frame["image_id"] + ".png",
        label_source="fracture_visible",
        ao_code=None,
        ao_codes=None,
        ao_status=None,
        physeal=None,
        salter_harris=None,
        diagnosis_uncertain=False,
        osteopenia=False,
        source_split=None,
        group_id=frame["image_id"],
        augmented_from=None,
        width=64,
        height=64,
        bit_depth=8,
        sha256="0" * 64,
    )
    write_manifest(coerce_manifest(manifest[list(MANIFEST_COLUMNS)]), root / "manifest.parquet", {})
    pd.DataFrame(
        {
            "image_id": frame["image_id"],
            "split": split,
            "fold": pd.array([None] * 90, dtype="Int8"),
            "reason": pd.array([None] * 90, dtype="string"),
            "cluster_id": frame["patient_id"],
        }
    ).to_parquet(root / "splits.parquet")
    cached = frame.loc[split != "train", "image_id"].to_numpy()
    images = np.random.default_rng(0).integers(0, 256, (cached.size, 64, 64), dtype=np.uint8)
    (root / "cache").mkdir()
    np.save(root / "cache" / "images.npy", images)
    pd.DataFrame({"image_id": cached, "row": np.arange(cached.size), "sha256": "0" * 64}).to_parquet(
        root / "cache" / "index.parquet"
    )
    meta = {"image_size": 64, "count": int(cached.size), "window_percentiles": [0.5, 99.5], "format": 1}
    (root / "cache" / "meta.json").write_text(json.dumps(meta))
    torch.manual_seed(0)
    model = build_model(params.model, 64, pretrained=False).eval()
    is_val = split[split != "train"] == "val"
    val_probs = predict_proba(model, images[is_val], params.model.mean, params.model.std, 16)
    tuned = tune_thresholds(frame.loc[split == "val", "label"].to_numpy(), val_probs, 0.9)
    (root / "model").mkdir()
    torch.save(model.state_dict(), root / "model" / "model.pt")
    config = {**model_config(params.model, 64, tuned, "youden"), "input": input_contract(params, 64).to_dict()}
    (root / "model" / "config.json").write_text(json.dumps(config))
    return root, params, config


def test_run_evaluate_writes_the_eval_dir_contract(eval_inputs, tmp_path, monkeypatch) -> None:
    import fracture.model.core

    root, params, config = eval_inputs
    scored = []
    real = fracture.model.core.predict_proba
    monkeypatch.setattr(
        fracture.model.core, "predict_proba", lambda m, x, *a, **k: scored.append(len(x)) or real(m, x, *a, **k)
    )
    params = params.model_copy(
        update={
            "evaluate": params.evaluate.model_copy(
                update={"gate": params.evaluate.gate.model_copy(update={"min_auroc": 1.0})}
            )
        }
    )
    out = tmp_path / "eval"
    result = evaluate.run_evaluate(
        params, root / "model", root / "manifest.parquet", root / "splits.parquet", root / "cache", out
    )
    assert sum(scored) == 60  # val + test only; train rows are never scored
    for name in (
        "metrics.json",
        "primary.json",
        "headline.json",
        "predictions.parquet",
        "thresholds.json",
        "subgroups.csv",
        "gate.json",
        "params.yaml",
        "plots/roc.csv",
        "plots/pr.csv",
        "plots/calibration.csv",
        "plots/confusion.csv",
        "plots/chance.csv",
        "plots/val/roc.csv",
    ):
        assert (out / name).is_file(), name
    preds = pd.read_parquet(out / "predictions.parquet")
    assert list(preds.columns) == list(evaluate.PREDICTION_COLUMNS)
    assert set(preds["split"]) == {"val", "test"} and len(preds) == 60
    thresholds = json.loads((out / "thresholds.json").read_text())
    assert thresholds["frozen"] == config["threshold"] and thresholds["method"] == "youden"
    assert thresholds["matches_config"] is True  # recomputed on val from the same model: same thresholds
    gate = json.loads((out / "gate.json").read_text())
    # 30 test images: too few patients to decide; reported (a verdict), not raised
    assert gate["status"] == "undecidable" and result["gate.passed"] == 0 and result["gate.undecidable"] == 1
    assert gate["reasons"][0] == "undecidable: n too small"
    assert json.loads((out / "metrics.json").read_text()) == result
    confusion = pd.read_csv(out / "plots" / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == 30
    # one curve per file: DVC draws plots/<name>.csv as a single line, so val lives in plots/val/
    for name in ("roc", "pr", "calibration"):
        assert set(pd.read_csv(out / "plots" / f"{name}.csv")["split"]) == {"test"}
        assert set(pd.read_csv(out / "plots" / "val" / f"{name}.csv")["split"]) == {"val"}


def test_run_evaluate_refuses_a_model_without_a_frozen_threshold(eval_inputs, tmp_path) -> None:
    import shutil

    root, params, config = eval_inputs
    model_dir = tmp_path / "model"
    shutil.copytree(root / "model", model_dir)
    (model_dir / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "threshold"}))
    with pytest.raises(InputError, match=r"config\.json.*threshold"):
        evaluate.run_evaluate(
            params, model_dir, root / "manifest.parquet", root / "splits.parquet", root / "cache", tmp_path / "eval"
        )
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_run_evaluate_refuses_splits_from_another_manifest(eval_inputs, tmp_path) -> None:
    root, params, _ = eval_inputs
    splits = pd.read_parquet(root / "splits.parquet")
    splits.loc[splits["split"] == "test", "image_id"] = "ffffffffffffffff"
    splits = splits.drop_duplicates("image_id")
    splits.to_parquet(tmp_path / "splits.parquet")
    with pytest.raises(InputError, match="not in .*manifest.parquet"):
        evaluate.run_evaluate(
            params,
            root / "model",
            root / "manifest.parquet",
            tmp_path / "splits.parquet",
            root / "cache",
            tmp_path / "eval",
        )


@pytest.mark.slow
def test_demo_chain_eval_dir(request: pytest.FixtureRequest) -> None:
    """The real chain (synth -> ... -> train -> evaluate) produces a contract-conform eval dir."""
    for step in ("synth", "ingest", "split", "preprocess", "train"):
        pytest.importorskip(f"fracture.{step}", reason=f"fracture/{step}.py not there yet")
    demo_eval = request.getfixturevalue("demo_eval")
    written = json.loads((demo_eval / "metrics.json").read_text())
    assert all(isinstance(v, int | float) and math.isfinite(v) for v in written.values())
    assert {"test.auroc", "test.frozen.sensitivity", "threshold", "primary.value", "primary.ci_low"} <= set(written)
    for name in (
        "primary.json",
        "intervals.csv",
        "per_source.csv",
        "spectrum.csv",
        "reliability.csv",
        "plots/decision_curve.csv",
    ):
        assert (demo_eval / name).is_file(), name
    gate = json.loads((demo_eval / "gate.json").read_text())
    assert set(gate) == {"schema", "gate", "status", "reasons", "checks"}
    preds = pd.read_parquet(demo_eval / "predictions.parquet")
    assert set(preds["split"]) <= {"val", "test"} and preds["prob"].between(0, 1).all()


def test_run_evaluate_scores_cohort_exclusions_as_spectrum_only(eval_inputs, tmp_path) -> None:
    root, params, _ = eval_inputs
    splits = pd.read_parquet(root / "splits.parquet")
    test_rows = splits.index[splits["split"] == "test"]
    splits.loc[test_rows[:6], ["split", "reason"]] = ["excluded", "metal"]
    splits.loc[test_rows[6:9], ["split", "reason"]] = ["excluded", "source kaggle not in split.test_sources"]
    splits["cluster_id"] = splits["image_id"]  # no excluded case shares a cluster with train
    splits.to_parquet(tmp_path / "splits.parquet")
    out = tmp_path / "eval"
    result = evaluate.run_evaluate(
        params, root / "model", root / "manifest.parquet", tmp_path / "splits.parquet", root / "cache", out
    )
    spectrum = pd.read_parquet(out / "spectrum_predictions.parquet")
    assert sorted(spectrum["image_id"]) == sorted(splits.loc[test_rows[:6], "image_id"])  # cohort reasons only
    assert set(spectrum["reason"]) == {"metal"} and spectrum["prob"].between(0, 1).all()
    assert result["spectrum.n"] == 6 and result["test.n"] == 21  # 30 test rows less 9 excluded
    assert set(pd.read_parquet(out / "predictions.parquet")["image_id"]).isdisjoint(spectrum["image_id"])
    table = pd.read_csv(out / "spectrum.csv")
    assert table.loc[table["reason"] == "any", "n"].iloc[0] == 6
    for name in (
        "intervals.csv",
        "per_source.csv",
        "reliability.csv",
        "decision_curve.csv",
        "plots/decision_curve.csv",
    ):
        assert (out / name).is_file(), name


def test_run_evaluate_refuses_splits_without_cluster_ids(eval_inputs, tmp_path) -> None:
    root, params, _ = eval_inputs
    pd.read_parquet(root / "splits.parquet").drop(columns="cluster_id").to_parquet(tmp_path / "splits.parquet")
    with pytest.raises(InputError, match=r"splits\.parquet: missing columns cluster_id"):
        evaluate.run_evaluate(
            params, root / "model", root / "manifest.parquet", tmp_path / "splits.parquet", root / "cache", tmp_path
        )


def test_gate_log_line_rounds_to_4_significant_digits(caplog: pytest.LogCaptureFixture) -> None:
    from fracture.contracts.verdict import Check, Verdict
    from fracture.evaluate.run import log_gate

    check = Check("test.auroc", "passed", 0.9450856291883842, 0.7)
    with caplog.at_level(logging.INFO, logger="fracture.evaluate"):
        log_gate(Verdict("evaluate", "passed", (), (check,)))
    assert "test.auroc = 0.9451 (min 0.7)" in caplog.text and "0.94508" not in caplog.text
