"""Metric tables of a prediction frame: split headline, study level, subgroups, per source, spectrum, primary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fracture.config import EvaluateParams, PrimaryParams
from fracture.evaluate import intervals
from fracture.evaluate.cohort import EVAL_SPLITS, SUBGROUPS, cluster_ids, level_names, population_rows
from fracture.evaluate.intervals import Resampled, resample_frame
from fracture.stats import metrics

STUDY_COLUMNS = ("split", "study_id", "prob", "label", "patient_id", "cluster_id", "n_images", "excluded_positive_view")


def prefixed(prefix: str, values: dict) -> dict:
    """`values` with every key under `prefix.`."""
    return {f"{prefix}.{k}": v for k, v in values.items()}


def counts(frame: pd.DataFrame) -> dict[str, float]:
    """Images, positives, patients, bootstrap clusters, clusters with a positive / a negative row, prevalence."""
    y = frame["label"].to_numpy()
    by_cluster = frame.groupby(frame["cluster_id"].astype("string"), dropna=False)["label"]
    return {
        "n": len(frame),
        "n_pos": int(y.sum()),
        "n_patients": int(frame["patient_id"].nunique(dropna=True)),
        "n_clusters": int(by_cluster.ngroups),
        "n_pos_clusters": int((by_cluster.max() == 1).sum()),
        "n_neg_clusters": int((by_cluster.min() == 0).sum()),
        "prevalence": float(y.mean()) if y.size else float("nan"),
    }


def discrimination(frame: pd.DataFrame, r: Resampled) -> dict:
    """Counts, prevalence, the trivial F1, AUROC and AUPRC, with their cluster-bootstrap CIs."""
    out = counts(frame)
    out.update(
        {
            "trivial_f1": metrics.trivial_f1(out["prevalence"]),
            "auroc": metrics.auroc(r.y, r.p),
            "auprc": metrics.average_precision(r.y, r.p),
        }
    )
    return {**out, **intervals.ranking_cis(r)}


def calibration(r: Resampled, n_bins: int) -> dict:
    """Brier score, ECE, calibration slope / intercept (with CIs) and calibration-in-the-large."""
    fit = metrics.calibration_fit(r.y, r.p)
    out = {
        "brier": metrics.brier_score(r.y, r.p),
        "ece": metrics.expected_calibration_error(metrics.reliability_curve(r.y, r.p, n_bins)),
        "calibration_slope": fit["slope"],
        "calibration_intercept": fit["intercept"],
        "calibration_in_the_large": fit["citl"],
    }
    return {**out, **intervals.calibration_cis(r, n_bins)}


def point_metrics(r: Resampled, points: dict[str, float], trivial: float) -> dict:
    """Operating-point metrics at every named threshold, each proportion and F1 with its clustered CI."""
    out = {}
    for name, threshold in points.items():
        op = metrics.operating_point(r.y, r.p, threshold, r.level)
        op = {k: v for k, v in op.items() if "_ci_" not in k}  # image-level Wilson: replaced below
        op.update(intervals.operating_point_cis(r, threshold))
        out.update(prefixed(name, {**op, "trivial_f1": trivial}))
    return out


def split_metrics(frame: pd.DataFrame, points: dict[str, float], ep: EvaluateParams, seed: int) -> dict:
    """All image-level metrics of one split (keys without the split prefix)."""
    r = resample_frame(frame, ep, seed)
    out = discrimination(frame, r)
    out.update(calibration(r, ep.calibration_bins))
    out.update(point_metrics(r, points, out["trivial_f1"]))
    return out


# ------------------------------------------------------------------------------------------------ study level
def study_frame(frame: pd.DataFrame, dropped: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (split, study): max probability over its views and label = max label.

    An image without a study_id is its own study. `dropped` holds views not scored (excluded by the cohort
    policy, or not decodable) with study_id and label: a study with a dropped positive view is flagged
    `excluded_positive_view`, since its scored views alone would turn it negative.
    """
    study = frame["study_id"].astype("string").fillna("image:" + frame["image_id"].astype("string"))
    work = frame.assign(study_id=study, cluster_id=cluster_ids(frame))
    studies = work.groupby(["split", "study_id"], sort=True).agg(
        prob=("prob", "max"),
        label=("label", "max"),
        patient_id=("patient_id", "first"),
        cluster_id=("cluster_id", "first"),
        n_images=("image_id", "size"),
    )
    studies = studies.reset_index()
    positive = set()
    if dropped is not None and len(dropped):
        positive = set(dropped.loc[dropped["label"] == 1, "study_id"].dropna().astype(str))
    studies["excluded_positive_view"] = studies["study_id"].astype(str).isin(positive)
    return studies[list(STUDY_COLUMNS)]


def study_metrics(studies: pd.DataFrame, points: dict[str, float], ep: EvaluateParams, seed: int) -> dict:
    """Study-level discrimination and operating points (keys under `study.`); flagged studies are left out."""
    kept = studies[~studies["excluded_positive_view"]]
    r = resample_frame(kept, ep, seed)
    out = discrimination(kept, r)
    out.update(point_metrics(r, points, out["trivial_f1"]))
    out["n_excluded_positive_view"] = int(studies["excluded_positive_view"].sum())
    return prefixed("study", out)


# ------------------------------------------------------------------------------------------ subgroups, sources
def reliability_notes(c: dict, ep: EvaluateParams) -> list[str]:
    """Why a subgroup's figures are not reliable (empty when they are)."""
    notes = ["n too small"] if c["n"] < ep.min_subgroup_n else []
    if c["n_pos"] in (0, c["n"]):
        return [*notes, "one class only"]
    for side in ("pos", "neg"):
        if c[f"n_{side}_clusters"] < ep.min_subgroup_patients:
            word = "positive" if side == "pos" else "negative"
            notes.append(f"{c[f'n_{side}_clusters']} {word} patients < {ep.min_subgroup_patients}")
    return notes


def subgroup_row(sub: pd.DataFrame, threshold: float, ep: EvaluateParams, seed: int) -> dict:
    """Counts, AUROC and the frozen-threshold rates (clustered CIs, method, valid resamples) of one subgroup.

    Reliable only with at least `evaluate.min_subgroup_patients` positive and negative patients (clusters) and
    `evaluate.min_subgroup_n` images; AUROC is left undefined otherwise.
    """
    c = counts(sub)
    notes = reliability_notes(c, ep)
    r = resample_frame(sub, ep, seed)
    row = {**c, "auroc": np.nan, "auroc_ci_low": np.nan, "auroc_ci_high": np.nan}
    if not notes:
        row.update({"auroc": metrics.auroc(r.y, r.p), **intervals.ranking_cis(r)})
        row = {k: v for k, v in row.items() if not k.startswith("auprc")}
    op = metrics.operating_point(r.y, r.p, threshold, ep.ci_level)
    row.update({k: op[k] for k in (*intervals.PROPORTIONS, "f1")})
    row.update(intervals.operating_point_cis(r, threshold))
    row["trivial_f1"] = metrics.trivial_f1(c["prevalence"])
    shares = [intervals.undefined_share(v, ep.n_bootstrap) for k, v in row.items() if k.endswith("_ci_valid")]
    row["ci_undefined_share_max"] = max(shares, default=0.0)
    row["ci_flagged"] = bool(row["ci_undefined_share_max"] > intervals.MAX_UNDEFINED_SHARE)
    row.update({"reliable": not notes, "note": "; ".join(notes)})
    return row


def subgroup_table(frame: pd.DataFrame, threshold: float, ep: EvaluateParams, seed: int) -> pd.DataFrame:
    """Per split, per subgroup column, per level: `subgroup_row` at the frozen threshold."""
    rows = []
    for split in EVAL_SPLITS:
        part = frame[frame["split"] == split]
        for column in SUBGROUPS:
            names = level_names(part, column)
            for level in sorted(names.unique()):
                if column == "clinically_relevant" and level != "yes":
                    continue  # the subset itself; its complement mixes sources and is not a subgroup of interest
                row = subgroup_row(part[(names == level).to_numpy()], threshold, ep, seed)
                rows.append({"split": split, "subgroup": column, "level": level, **row})
    return pd.DataFrame(rows)


def per_source_table(frame: pd.DataFrame, threshold: float, ep: EvaluateParams, seed: int) -> pd.DataFrame:
    """per_source.csv: per split, every source beside the pooled figure ("all"), AUROC and rates with CIs.

    Pooled AUROC across sources mixes their score scales and prevalences and can exceed every per-source AUROC.
    """
    rows = []
    for split in EVAL_SPLITS:
        part = frame[frame["split"] == split]
        if part.empty:
            continue
        sources = level_names(part, "source")
        for source in ["all", *sorted(sources.unique())]:
            sub = part if source == "all" else part[(sources == source).to_numpy()]
            rows.append({"split": split, "source": source, **subgroup_row(sub, threshold, ep, seed)})
    return pd.DataFrame(rows)


def spectrum_table(spectrum: pd.DataFrame, threshold: float, ep: EvaluateParams, seed: int) -> pd.DataFrame:
    """spectrum.csv: cases the cohort policy excluded, per reason and per split of their cluster, never headline.

    A case with several reasons counts under each; "any" pools them.
    """
    if spectrum.empty:
        return pd.DataFrame(columns=["cluster_split", "reason"])
    exploded = spectrum.assign(reason=spectrum["reason"].str.split("; ")).explode("reason")
    rows = []
    for split in sorted(spectrum["cluster_split"].unique()):
        part = spectrum[spectrum["cluster_split"] == split]
        by_reason = exploded[exploded["cluster_split"] == split]
        groups = [
            ("any", part),
            *((r, by_reason[by_reason["reason"] == r]) for r in sorted(by_reason["reason"].unique())),
        ]
        for reason, sub in groups:
            rows.append({"cluster_split": split, "reason": reason, **subgroup_row(sub, threshold, ep, seed)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- primary endpoint
def primary_endpoint(
    test: pd.DataFrame, pp: PrimaryParams, population: str, threshold: float, ep: EvaluateParams, seed: int
) -> dict:
    """The pre-specified primary endpoint on test: `primary.*` keys (population and metric are strings).

    Returns:
        primary.population, .metric, .value, .ci_low, .ci_high, .ci_valid, .ci_method, .n_images, .n_patients,
        .n_pos, .threshold (for sensitivity / specificity).
    """
    rows = population_rows(test, population)
    r = resample_frame(rows, ep, seed)
    if pp.metric in ("auroc", "auprc"):
        value = metrics.auroc(r.y, r.p) if pp.metric == "auroc" else metrics.average_precision(r.y, r.p)
        cis = intervals.ranking_cis(r)
    else:
        value = metrics.operating_point(r.y, r.p, threshold, ep.ci_level)[pp.metric]
        cis = intervals.operating_point_cis(r, threshold)
    c = counts(rows)
    out = {"population": population, "metric": pp.metric, "value": value}
    out.update({k[len(pp.metric) + 1 :]: v for k, v in cis.items() if k.startswith(f"{pp.metric}_ci_")})
    out.update({"n_images": c["n"], "n_patients": c["n_patients"], "n_clusters": c["n_clusters"], "n_pos": c["n_pos"]})
    if pp.metric not in ("auroc", "auprc"):
        out["threshold"] = float(threshold)
    return prefixed("primary", out)
