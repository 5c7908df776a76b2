"""Pure table builders: artifacts in, template rows out, and the display format of a value."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

PROVENANCE_KEYS = ("candidates", "total", "fracture", "normal", "quarantined", "patients", "studies")
POINTS = ("frozen", "youden", "f1_max", "target_sensitivity", "target_sensitivity_conservative", "fixed")
# (metrics.json suffix, label, has a CI) of the headline table, image and study level alike.
HEADLINE = (
    ("auroc", "AUROC", True),
    ("auprc", "AUPRC", True),
    ("frozen.sensitivity", "Sensitivity at the frozen threshold", True),
    ("frozen.specificity", "Specificity at the frozen threshold", True),
    ("frozen.ppv", "PPV", True),
    ("frozen.npv", "NPV", True),
    ("frozen.f1", "F1", True),
    ("trivial_f1", "Trivial F1 (everything called a fracture)", False),
    ("prevalence", "Prevalence", False),
    ("brier", "Brier score", True),
    ("ece", "Expected calibration error", True),
    ("calibration_slope", "Calibration slope", True),
    ("calibration_intercept", "Calibration intercept", True),
    ("n", "Images", False),
    ("n_pos", "Positive images", False),
    ("n_patients", "Patients", False),
)
STUDY_HEADLINE = (
    ("study.auroc", "AUROC", True),
    ("study.auprc", "AUPRC", True),
    ("study.frozen.sensitivity", "Sensitivity at the frozen threshold", True),
    ("study.frozen.specificity", "Specificity at the frozen threshold", True),
    ("study.frozen.f1", "F1", True),
    ("study.trivial_f1", "Trivial F1", False),
    ("study.prevalence", "Prevalence", False),
    ("study.n", "Studies", False),
    ("study.n_patients", "Patients", False),
)


def is_number(value: Any) -> bool:
    """A finite int or float (bools excluded)."""
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and (math.isfinite(float(value)))
    )


def fmt(value: Any, digits: int = 3) -> str:
    """Display text of a value: integers as integers, floats to `digits` decimals, missing as 'n/a'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.{digits}f}"
    return str(value)


def metric_row(metrics: dict, split: str, suffix: str, label: str, with_ci: bool) -> dict:
    """One metric cell: key, value and (when present) its CI keys, for the template's `metric` macro."""
    key = f"{split}.{suffix}"
    row = {"label": label, "key": key, "value": metrics.get(key), "ci": None}
    if with_ci and f"{key}_ci_low" in metrics and f"{key}_ci_high" in metrics:
        row |= {"ci": (f"{key}_ci_low", f"{key}_ci_high")}
    return row


def headline_rows(metrics: dict, splits: tuple[str, ...] = ("test", "val"), spec: tuple = HEADLINE) -> list[dict]:
    """Rows of the headline table: one per metric, one cell per split (test first: it is the claim)."""
    return [
        {"label": label, "cells": [metric_row(metrics, s, suffix, label, ci) for s in splits]}
        for suffix, label, ci in spec
        if any(f"{s}.{suffix}" in metrics for s in splits)
    ]


def operating_point_rows(metrics: dict, split: str) -> list[dict]:
    """Per operating point (frozen first): threshold and the metrics at it, from metrics.json."""
    rows = []
    for point in POINTS:
        if f"{split}.{point}.threshold" not in metrics:
            continue
        cells = [
            metric_row(metrics, split, f"{point}.{m}", m, True)
            for m in ("threshold", "sensitivity", "specificity", "ppv", "npv", "f1", "trivial_f1")
        ]
        rows.append({"point": point, "frozen": point == "frozen", "cells": cells})
    return rows


def confusion_cells(metrics: dict, prefix: str) -> dict | None:
    """The 2 x 2 confusion matrix keys at the frozen threshold (`prefix` e.g. "test" or "test.study")."""
    keys = {c: f"{prefix}.frozen.{c}" for c in ("tp", "fp", "tn", "fn")}
    return keys if all(k in metrics for k in keys.values()) else None


def other_metric_keys(metrics: dict) -> list[str]:
    """Every metrics.json key, sorted, for the complete table (CI bounds stay next to their metric)."""
    return sorted(metrics, key=lambda k: (k.split(".")[0] != "test", k))


def subgroup_rows(subgroups: pd.DataFrame, split: str, min_n: int) -> list[dict]:
    """Subgroup table rows of one split; `tiny` marks rows evaluate flagged or with n < min_n."""
    part = subgroups[subgroups["split"].astype(str) == split]
    rows = []
    for rec in part.to_dict("records"):
        reliable = rec.get("reliable")
        reliable = bool(reliable) if reliable is not None and not pd.isna(reliable) else rec["n"] >= min_n
        tiny = not reliable or int(rec["n"]) < min_n
        note = rec.get("note") if isinstance(rec.get("note"), str) else ""
        if int(rec["n"]) < min_n and "small" not in note:
            note = "; ".join(filter(None, [note, f"n < {min_n}"]))
        rows.append({**rec, "tiny": tiny, "note": note, "id": f"{split}/{rec['subgroup']}/{rec['level']}"})
    return rows


UNKNOWN_LEVELS = ("unknown", "", "nan", "<NA>", "None")


def _is_unknown(level: Any) -> bool:
    return level is None or (isinstance(level, float) and math.isnan(level)) or str(level).strip() in UNKNOWN_LEVELS


def _same_numbers(a: dict, b: dict) -> bool:
    """Every field but the attribute name, level and id equal (NaN equal to NaN)."""
    keys = (set(a) | set(b)) - {"subgroup", "level", "id", "merged"}
    return all(a.get(k) == b.get(k) or (pd.isna(a.get(k)) and pd.isna(b.get(k))) for k in keys)


def merge_unknown_rows(rows: list[dict]) -> list[dict]:
    """One row for the "unknown" levels of several attributes when their numbers are identical.

    A source that records neither age nor sex gives an "unknown" row under each attribute, all over the same
    images; the merged row names the attributes ("age_band, sex") at the first one's place and lists them in
    `merged`. Rows of known levels, and unknown rows whose numbers differ, are kept as they are.
    """
    out: list[dict] = []
    for row in rows:
        if not _is_unknown(row.get("level")):
            out.append(row)
            continue
        twin = next((r for r in out if r.get("merged") is not None and _same_numbers(r, row)), None)
        if twin is None:
            out.append({**row, "level": "unknown", "merged": [str(row["subgroup"])]})
        else:
            twin["merged"].append(str(row["subgroup"]))
    for row in out:
        if row.get("merged") is not None and len(row["merged"]) > 1:
            row["subgroup"] = ", ".join(row["merged"])
            row["id"] = f"{row['id'].split('/', 1)[0]}/{'+'.join(row['merged'])}/unknown"
    return out


def training_rows(history: pd.DataFrame | None, metadata: dict) -> list[dict]:
    """Epochs run, the chosen epoch with its val AUROC and val loss, and the wall time (from history.csv)."""
    if history is None or history.empty:
        return []
    best = metadata.get("best_epoch")
    at_best = history[history["epoch"] == best] if best is not None else history.iloc[0:0]
    rows = [("epochs run", len(history)), ("chosen epoch (best val AUROC)", best)]
    for col in ("val_auroc", "val_loss", "train_loss"):
        if col in history and len(at_best):
            rows.append((f"{col.replace('_', ' ')} at the chosen epoch", float(at_best[col].iloc[0])))
    if "seconds" in history:
        rows.append(("training wall time, s", float(history["seconds"].sum())))
    return [{"label": label, "value": value} for label, value in rows]


def quarantine_counts(quarantine: pd.DataFrame | None) -> dict[str, int]:
    """Rows of quarantine.csv per source (counted only: its paths and messages may carry identifiers)."""
    if quarantine is None or quarantine.empty or "source" not in quarantine:
        return {}
    return {str(k): int(v) for k, v in quarantine["source"].value_counts().sort_index().items()}


def provenance_rows(summary: dict | None) -> list[dict]:
    """Per source (then "all"): ingest's counts, its other counters, and quarantine reason codes."""
    sources = summary.get("sources") if isinstance(summary, dict) else None
    if not isinstance(sources, dict):
        return []
    entries = [*sources.items(), *([("all", summary["totals"])] if isinstance(summary.get("totals"), dict) else [])]
    rows = []
    for name, entry in entries:
        extra = {k: v for k, v in entry.items() if k not in PROVENANCE_KEYS and is_number(v)}
        reasons = entry.get("quarantine_reasons") if isinstance(entry.get("quarantine_reasons"), dict) else {}
        rows.append(
            {"source": name, "counts": {k: entry.get(k) for k in PROVENANCE_KEYS}, "extra": extra, "reasons": reasons}
        )
    return rows


def summary_rows(summary: dict | None) -> list[dict]:
    """Scalar leaves of ingest's summary.json as (key, value) rows, nested keys joined with dots."""
    rows: list[dict] = []

    def walk(obj: Any, prefix: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                walk(v, f"{prefix}[{i}]")
        elif is_number(obj) or isinstance(obj, str | bool) or obj is None:
            rows.append({"key": prefix, "value": obj})

    walk(summary or {}, "")
    return rows


def validation_rows(validation: dict | None) -> list[dict]:
    """One row per expectation: name, severity, passed, and the observed value when it is a number."""
    rows = []
    for r in (validation or {}).get("results", []):
        observed = r.get("observed")
        if isinstance(observed, dict):
            observed = ", ".join(f"{k} {fmt(v)}" for k, v in observed.items() if is_number(v)) or None
        else:  # free text or value lists stay in Data Docs
            observed = fmt(observed) if is_number(observed) else None
        rows.append(
            {
                "name": r.get("name"),
                "severity": r.get("severity"),
                "success": bool(r.get("success")),
                "observed": observed,
            }
        )
    return rows


def lineage_rows(metadata: dict, config: dict, fingerprints: dict[str, str]) -> list[dict]:
    """Lineage of the model and of this report's inputs."""
    keys = (
        "git_commit",
        "manifest_hash",
        "splits_hash",
        "params_hash",
        "split_strategy",
        "best_epoch",
        "val_auroc",
        "epochs_run",
    )
    rows = [{"key": k, "value": metadata.get(k)} for k in keys if k in metadata]
    rows += [{"key": k, "value": config.get(k)} for k in ("backbone", "img_size", "threshold", "threshold_method")]
    rows += [{"key": f"sha256({name})", "value": digest} for name, digest in fingerprints.items()]
    return rows
