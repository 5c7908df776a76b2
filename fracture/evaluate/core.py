"""The whole evaluation from scored rows, in memory: operating points, metrics, tables, gate."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fracture.config import EvaluateParams
from fracture.contracts.verdict import Verdict
from fracture.evaluate import curves, tables
from fracture.evaluate.certify import certify_target, exact_lower_bounds
from fracture.evaluate.cohort import EVAL_SPLITS, cluster_ids, prepare_predictions, resolve_population
from fracture.evaluate.decision import coprimary_endpoints, evaluate_gate, gate_metrics
from fracture.evaluate.intervals import interval_table
from fracture.evaluate.thresholds import report_points, study_threshold, threshold_report, tune_on_val

log = logging.getLogger(__name__)

# The primary endpoint's names and its CI method: strings, so they live in primary.json (a DVC metrics file beside
# metrics.json, which stays numeric for every consumer that reads its values as numbers).
STRING_METRICS = ("primary.population", "primary.metric", "primary.ci_method", "coprimary.population")
SPECTRUM_COLUMNS = (
    "image_id",
    "cluster_split",
    "reason",
    "prob",
    "label",
    "pred",
    "patient_id",
    "cluster_id",
    "source",
)


@dataclass(frozen=True)
class Evaluation:
    """Everything the eval dir holds, in memory."""

    predictions: pd.DataFrame
    metrics: dict[str, float]
    thresholds: dict
    subgroups: pd.DataFrame
    plots: dict[str, pd.DataFrame]
    gate: Verdict
    intervals: pd.DataFrame = field(default_factory=pd.DataFrame)
    per_source: pd.DataFrame = field(default_factory=pd.DataFrame)
    spectrum: pd.DataFrame = field(default_factory=pd.DataFrame)
    spectrum_predictions: pd.DataFrame = field(default_factory=pd.DataFrame)
    reliability: pd.DataFrame = field(default_factory=pd.DataFrame)
    decision: pd.DataFrame = field(default_factory=pd.DataFrame)
    primary: dict = field(default_factory=dict)


def finite_metrics(values: dict) -> dict[str, float | int]:
    """metrics.json content: flat keys, finite numbers only (undefined values are left out, never NaN).

    Strings are left out too: CI methods go to intervals.csv, the primary endpoint's names to primary.json.
    """
    out: dict[str, float | int] = {}
    for key, value in values.items():
        if isinstance(value, bool | np.bool_):
            out[key] = int(value)
        elif isinstance(value, int | np.integer):
            out[key] = int(value)
        elif isinstance(value, float | np.floating) and math.isfinite(value):
            out[key] = float(value)
    return out


def primary_record(values: dict) -> dict:
    """primary.json: the pre-specified primary and co-primary endpoints (`primary.*`, `coprimary.*` keys, flat)."""
    numbers = finite_metrics({k: v for k, v in values.items() if k.startswith(("primary.", "coprimary."))})
    return {**{k: values[k] for k in STRING_METRICS if k in values}, **numbers}


# headline.json, THE DVC metric (`dvc metrics diff`, `dvc exp show`): key -> metrics.json key. Short names keep
# `dvc exp show` (CI bounds dropped, tools.demo.EXP_SHOW_FLAGS) within 120 columns; metrics.json (every number)
# stays an output beside it.
HEADLINE_KEYS = {
    "primary": "primary.value",
    "primary_lo": "primary.ci_low",
    "primary_hi": "primary.ci_high",
    "auroc": "test.auroc",
    "auroc_lo": "test.auroc_ci_low",
    "auroc_hi": "test.auroc_ci_high",
    "sens": "test.frozen.sensitivity",
    "spec": "test.frozen.specificity",
    "threshold": "threshold",
    "gate_passed": "gate.passed",
}


def headline_record(metrics: dict) -> dict[str, float | int]:
    """headline.json: about ten numbers a team compares across revisions and experiments.

    The primary endpoint and test AUROC with their CI bounds, test sensitivity and specificity at the frozen
    threshold, the threshold, and the gate (1 passed, 0 failed). A value metrics.json lacks (undefined) is left out.
    """
    return {short: metrics[key] for short, key in HEADLINE_KEYS.items() if key in metrics}


def _operating_points(preds, studies, frozen, method, config_thresholds, ep, seed) -> tuple[dict, dict, float]:
    """(thresholds.json, image points, study threshold): every one tuned on val rows / val studies only."""
    val_thresholds = tune_on_val(preds[preds["split"] == "val"], ep, seed)
    points = {"frozen": float(frozen), **report_points(val_thresholds, config_thresholds, ep.reference_threshold)}
    val_studies = studies[(studies["split"] == "val") & ~studies["excluded_positive_view"]]
    study_point, how = study_threshold(val_studies, method, frozen, ep, seed)
    report = {**threshold_report(frozen, method, val_thresholds, config_thresholds), "points": points}
    report["study"] = {"threshold": study_point, "method": how, "image_threshold": float(frozen)}
    report["certification"] = certification(preds[preds["split"] == "val"], frozen, ep)
    if report["certification"]["certified"]:
        points["target_sensitivity_certified"] = report["certification"]["threshold"]
    return report, points, study_point


def certification(val: pd.DataFrame, frozen: float, ep: EvaluateParams) -> dict:
    """thresholds.json "certification": the exact-bound target rule on val, and the frozen threshold's exact bound."""
    y, p = val["label"].to_numpy().astype(bool), val["prob"].to_numpy()
    cert = certify_target(y, p, val["cluster_id"].astype("string").to_numpy(), ep.target_sensitivity, ep.ci_level)
    n = cert["n_pos_patients"]
    sens = float((p[y] >= frozen).mean()) if y.any() else None
    frozen_low = float(exact_lower_bounds(np.array([sens * n]), n, ep.ci_level)[0]) if sens is not None else None
    return {**cert, "frozen": {"threshold": float(frozen), "sensitivity": sens, "exact_lower_bound": frozen_low},
            "data": "val (selection data: it also chose the epoch and the thresholds)"}  # fmt: skip


def _headline(preds, studies, points, study_point, ep, seed) -> dict:
    """Image- and study-level metrics of every split, the primary endpoint, and the target beside its result."""
    values: dict = {"threshold": points["frozen"], "study_threshold": study_point}
    values["target_sensitivity"] = ep.target_sensitivity
    for split in EVAL_SPLITS:
        part = preds[preds["split"] == split]
        if part.empty:
            log.warning("no scored %s rows: %s metrics left out", split, split)
            continue
        values.update(tables.prefixed(split, tables.split_metrics(part, points, ep, seed)))
        study_points = {"frozen": study_point, "image_threshold": points["frozen"]}
        values.update(
            tables.prefixed(split, tables.study_metrics(studies[studies["split"] == split], study_points, ep, seed))
        )
    test = preds[preds["split"] == "test"]
    population = resolve_population(ep.primary.population, test)
    values.update(tables.primary_endpoint(test, ep.primary, population, points["frozen"], ep, seed))
    values.update(coprimary_endpoints(test, population, points["frozen"], ep, seed))
    return values


def spectrum_predictions(spectrum: pd.DataFrame | None, threshold: float) -> pd.DataFrame:
    """spectrum_predictions.parquet: the scored cohort-excluded cases at the frozen threshold."""
    if spectrum is None or spectrum.empty:
        return pd.DataFrame(columns=list(SPECTRUM_COLUMNS))
    out = spectrum.assign(
        label=spectrum["label"].astype("int8"),
        prob=spectrum["prob"].astype("float64"),
        pred=(spectrum["prob"] >= threshold).astype("int8"),
        cluster_id=cluster_ids(spectrum),
    )
    return out.sort_values("image_id", kind="stable").reset_index(drop=True)[list(SPECTRUM_COLUMNS)]


def assemble_evaluation(
    frame: pd.DataFrame,
    frozen: float,
    method: str,
    config_thresholds: dict | None,
    ep: EvaluateParams,
    seed: int,
    spectrum: pd.DataFrame | None = None,
    dropped: pd.DataFrame | None = None,
) -> Evaluation:
    """The whole evaluation from scored val/test rows. Thresholds read val rows only.

    Args:
        frame: one row per scored image: image_id, split ("val"/"test"), prob, label, cluster_id and the manifest
            fields.
        frozen: the operating point frozen into the model (config.json "threshold"), applied unchanged.
        method: how it was chosen (config.json "threshold_method").
        config_thresholds: config.json "thresholds" (tuned on val by train), checked against a recomputation.
        ep: the evaluate section of the params.
        seed: bootstrap seed (base.seed).
        spectrum: scored cases the cohort policy excluded (reason, cluster_split, prob, label, ...), or None.
        dropped: views of scored studies that were not scored (study_id, label): a study with a dropped positive
            view is left out at study level.
    """
    preds = prepare_predictions(frame, frozen, ep.age_bands)
    studies = tables.study_frame(preds, dropped)
    thresholds, points, study_point = _operating_points(preds, studies, frozen, method, config_thresholds, ep, seed)
    values = _headline(preds, studies, points, study_point, ep, seed)
    gate = evaluate_gate(values, ep.gate)
    values.update(gate_metrics(gate))
    ci_table = interval_table(values, ep.n_bootstrap)
    values["ci.n_flagged"] = int(ci_table["flagged"].sum())
    spectrum_preds = spectrum_predictions(spectrum, frozen)
    plots = curves.plot_tables(preds, ep.calibration_bins)
    return Evaluation(
        predictions=preds,
        metrics=finite_metrics(values),
        thresholds=thresholds,
        subgroups=tables.subgroup_table(preds, frozen, ep, seed),
        plots=plots,
        gate=gate,
        intervals=ci_table,
        per_source=tables.per_source_table(preds, frozen, ep, seed),
        spectrum=tables.spectrum_table(spectrum_preds, frozen, ep, seed),
        spectrum_predictions=spectrum_preds,
        reliability=curves.reliability_table(preds, ep, seed),
        decision=curves.decision_table(plots["decision_curve"]),
        primary=primary_record(values),
    )
