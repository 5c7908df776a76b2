"""Clinical-study style evaluation: frozen operating point, clustered CIs, calibration, study level, subgroups.

The operating point is chosen on VAL only: train froze it into the model's config.json; here the val
thresholds are recomputed for the report (and checked against config.json) and the frozen one is applied
unchanged to test. The study-level point is tuned on val studies. Test labels never influence a threshold.
Units are stated: image level (the model's unit) and study level (max probability over a study's views,
MURA's official unit). Every confidence interval resamples the split's clusters (`cluster_id` from split: a
patient with every augmented copy of its images); Wilson intervals only where a cluster holds one unit.

Modules, pure first and I/O last: `cohort` (rows, clusters, populations), `thresholds` (val-only operating
points), `intervals` (CIs), `tables` (headline, study, subgroups, per source, spectrum, primary endpoint),
`curves` (DVC plots, decision curve, reliability table), `core` (`assemble_evaluation`, gate) and `run`
(`run_evaluate`: load, score, write the eval dir).
"""

from __future__ import annotations

import pandas as pd

from fracture.config import EvaluateParams
from fracture.evaluate.cohort import (
    EVAL_SPLITS,
    MANIFEST_FIELDS,
    PREDICTION_COLUMNS,
    SUBGROUPS,
    age_bands,
    clinically_relevant,
    prepare_predictions,
    resolve_population,
)
from fracture.evaluate.core import (
    HEADLINE_KEYS,
    Evaluation,
    assemble_evaluation,
    evaluate_gate,
    finite_metrics,
    headline_record,
)
from fracture.evaluate.curves import decision_table, net_benefit, plot_tables, reliability_table
from fracture.evaluate.intervals import interval_table, ranking_cis, resample_frame
from fracture.evaluate.run import load_eval_rows, load_excluded_rows, run_evaluate, split_plot_files, write_evaluation
from fracture.evaluate.tables import per_source_table, primary_endpoint, study_frame, subgroup_row, subgroup_table
from fracture.evaluate.thresholds import TUNED, compare_thresholds, study_threshold, tune_on_val

__all__ = [
    "EVAL_SPLITS", "HEADLINE_KEYS", "MANIFEST_FIELDS", "PREDICTION_COLUMNS", "SUBGROUPS", "TUNED", "Evaluation",
    "age_bands", "assemble_evaluation", "bootstrap_cis", "clinically_relevant", "compare_thresholds",
    "decision_table", "evaluate_gate", "finite_metrics", "headline_record", "interval_table", "load_eval_rows",
    "load_excluded_rows", "net_benefit", "per_source_table", "plot_tables", "prepare_predictions", "primary_endpoint",
    "reliability_table", "resolve_population", "run_evaluate", "split_plot_files", "study_frame", "study_threshold",
    "subgroup_row", "subgroup_table", "tune_on_val", "write_evaluation",
]  # fmt: skip


def bootstrap_cis(frame: pd.DataFrame, threshold: float, ep: EvaluateParams, seed: int) -> dict[str, float]:
    """Cluster-bootstrap percentile CIs of AUROC, AUPRC and F1 at `threshold` ({} when n_bootstrap is 0).

    Clusters are `cluster_id` (patient_id when the frame has none). Kept for the bootstrap benchmark.

    Returns:
        {"auroc_ci_low", "auroc_ci_high", "auprc_ci_low", ..., "f1_ci_high"}.
    """
    from fracture.evaluate.cohort import cluster_ids
    from fracture.evaluate.intervals import operating_point_cis

    r = resample_frame(frame.assign(cluster_id=cluster_ids(frame)), ep, seed)
    if r.resamples is None:
        return {}
    cis = {**ranking_cis(r), **operating_point_cis(r, threshold)}
    keys = [f"{name}_ci_{end}" for name in ("auroc", "auprc", "f1") for end in ("low", "high")]
    return {k: float(cis[k]) for k in keys}
