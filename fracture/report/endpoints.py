"""Pure builders of the endpoint tables, artifacts in and template rows out.

Primary endpoint, CI methods, per source, reliability, spectrum, decision curve, target sensitivity, flow and
baseline characteristics.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fracture.report.tables import fmt, is_number

METHOD_LABELS = {"cluster_bootstrap": "patient-cluster bootstrap", "wilson": "Wilson"}
POPULATION_LABELS = {
    "clinically_relevant": "GRAZPEDWRI-DX clinically relevant subset of test (initial exam, no cast, no metal)",
    "all": "every scored test image",
}
METRIC_NAMES = {
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "sensitivity": "Sensitivity at the frozen threshold",
    "specificity": "Specificity at the frozen threshold",
}
RATE_COLUMNS = ("auroc", "sensitivity", "specificity", "ppv", "npv")
TARGET_POINTS = ("target_sensitivity", "target_sensitivity_conservative")


def _clean(value: Any) -> Any:
    """A CSV cell as the template shows it: NaN -> None, numpy scalars -> Python."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def ci_lookup(intervals: pd.DataFrame | None) -> dict[str, dict]:
    """intervals.csv by metric key: method, valid and total resamples, undefined share, flagged."""
    if intervals is None or intervals.empty or "key" not in intervals:
        return {}
    return {str(rec["key"]): {k: _clean(v) for k, v in rec.items()} for rec in intervals.to_dict("records")}


def n_resamples(intervals: pd.DataFrame | None, eval_params: dict) -> int | None:
    """Bootstrap resamples evaluate drew: intervals.csv's `n_resamples`, else the eval dir's params."""
    if intervals is not None and "n_resamples" in intervals and intervals["n_resamples"].notna().any():
        return int(intervals["n_resamples"].dropna().iloc[0])
    value = (eval_params.get("evaluate") or {}).get("n_bootstrap")
    return int(value) if is_number(value) else None


def primary_view(primary: dict | None, eval_params: dict, resamples: int | None) -> dict | None:
    """The primary endpoint as the report leads with it (None without primary.json).

    Returns:
        population / metric names and their description, the pre-specified params, the CI method (primary.json's
        `primary.ci_method`; a record without it resampled when it counts valid resamples), the undefined share.
    """
    if not primary:
        return None
    spec = ((eval_params.get("evaluate") or {}).get("primary")) or {}
    population = str(primary.get("primary.population", "unknown"))
    method = primary.get("primary.ci_method")
    if method is None and "primary.ci_low" in primary:
        method = "cluster_bootstrap" if "primary.ci_valid" in primary else "wilson"
    valid = primary.get("primary.ci_valid")
    share = 1.0 - valid / resamples if is_number(valid) and resamples else None
    return {
        "population": population,
        "population_text": POPULATION_LABELS.get(population, population),
        "metric": str(primary.get("primary.metric", "unknown")),
        "spec_population": spec.get("population"),
        "spec_metric": spec.get("metric"),
        "method": method,
        "method_text": METHOD_LABELS.get(str(method), "not recorded"),
        "undefined_share": share,
        "flagged": bool(share is not None and share > 0.01),
        "values": {k.split(".", 1)[1]: v for k, v in primary.items()},
    }


def stat_cells(rec: dict, names: tuple[str, ...] = RATE_COLUMNS) -> list[dict]:
    """One cell per metric of a per_source / subgroup / spectrum row: value, CI, CI method, valid resamples."""
    return [
        {
            "name": name,
            "value": _clean(rec.get(name)),
            "low": _clean(rec.get(f"{name}_ci_low")),
            "high": _clean(rec.get(f"{name}_ci_high")),
            "method": _clean(rec.get(f"{name}_ci_method")),
            "valid": _clean(rec.get(f"{name}_ci_valid")),
        }
        for name in names
    ]


def table_rows(table: pd.DataFrame | None, column: str, value: str, key: str) -> list[dict]:
    """Rows of per_source.csv / spectrum.csv where `column == value`, each with its cells and its flag."""
    if table is None or table.empty or column not in table:
        return []
    rows = []
    for rec in table[table[column].astype(str) == value].to_dict("records"):
        rec = {k: _clean(v) for k, v in rec.items()}
        rows.append(
            {
                **rec,
                "id": f"{value}/{rec[key]}",
                "cells": stat_cells(rec),
                "flagged": bool(rec.get("ci_flagged")),
                "reliable": bool(rec.get("reliable")),
                "note": rec.get("note") or "",
            }
        )
    return rows


def split_values(table: pd.DataFrame | None, column: str = "split") -> list[str]:
    """The splits (or cluster splits) a table holds, test first."""
    if table is None or table.empty or column not in table:
        return []
    return sorted(table[column].astype(str).unique(), key=lambda s: (s != "test", s != "val", s))


def records(table: pd.DataFrame | None, split: str) -> list[dict]:
    """Rows of one split of reliability.csv / decision_curve.csv, NaN as None."""
    if table is None or table.empty or "split" not in table:
        return []
    part = table[table["split"].astype(str) == split]
    return [{k: _clean(v) for k, v in rec.items()} for rec in part.to_dict("records")]


def target_rows(metrics: dict) -> list[dict]:
    """Per target-sensitivity rule: the metrics.json keys of the target, its val threshold and what it achieved."""
    if "target_sensitivity" not in metrics:
        return []
    return [
        {
            "point": point,
            "threshold": f"test.{point}.threshold",
            "val": f"val.{point}.sensitivity",
            "test": f"test.{point}.sensitivity",
            "ci": (f"test.{point}.sensitivity_ci_low", f"test.{point}.sensitivity_ci_high"),
            "met": metrics.get(f"test.{point}.sensitivity", -1.0) >= metrics["target_sensitivity"],
        }
        for point in TARGET_POINTS
        if f"test.{point}.sensitivity" in metrics
    ]


def flow_split_rows(flow: dict | None) -> list[dict]:
    """flow.json's per-split counts, one row per split (train, val, test)."""
    splits = (flow or {}).get("splits") or {}
    return [
        {
            "split": name,
            **entry,
            "reasons": "; ".join(f"{k}: {v}" for k, v in entry.get("excluded_by_reason", {}).items()),
        }
        for name, entry in splits.items()
    ]


def flow_source_rows(flow: dict | None) -> list[dict]:
    """flow.json's per-source stages (then the total): candidates, quarantined, accepted, excluded, included."""
    if not flow:
        return []
    entries = [*(flow.get("sources") or {}).items(), ("all", flow.get("total") or {})]
    return [{"source": name, **entry} for name, entry in entries]


AGE_STATS = ("mean", "sd", "median", "q1", "q3", "min", "max")
AGE_LABELS = ("mean (sd)", "median (IQR)", "range")
BASELINE_ORDER = ("test", "val", "train", "excluded")


def _count_text(rec: dict) -> str:
    percent = _clean(rec.get("percent"))
    return f"{int(rec['n'])} ({fmt(float(percent), 1)} %)" if percent is not None else str(int(rec["n"]))


def _age_cells(stats: dict[str, Any]) -> list[tuple[str, str]]:
    """Age summary lines of one unit: mean (sd), median (IQR), range, in years."""
    if not stats:
        return []
    texts = (
        f"{fmt(stats.get('mean'), 1)} ({fmt(stats.get('sd'), 1)})",
        f"{fmt(stats.get('median'), 1)} ({fmt(stats.get('q1'), 1)}-{fmt(stats.get('q3'), 1)})",
        f"{fmt(stats.get('min'), 1)}-{fmt(stats.get('max'), 1)}",
    )
    return list(zip(AGE_LABELS, texts, strict=True))


def baseline_cells(sub: pd.DataFrame) -> dict[tuple[str, str, str], str]:
    """One split and source of baseline.csv: (characteristic, level, unit) -> display text, in file order."""
    cells: dict[tuple[str, str, str], str] = {}
    ages: dict[str, dict] = {}
    for rec in sub.to_dict("records"):
        characteristic, level, unit = str(rec["characteristic"]), str(rec["level"]), str(rec["unit"])
        if characteristic == "age" and level in AGE_STATS:
            if unit not in ages:  # the summary lines take the place of the first statistic
                cells.update({("age, years", label, unit): "" for label in AGE_LABELS})
            ages.setdefault(unit, {})[level] = _clean(rec.get("value"))
            continue
        cells[(characteristic, level, unit)] = _count_text(rec)
    for unit, stats in ages.items():
        for label, text in _age_cells(stats):
            cells[("age, years", label, unit)] = text
    return cells


def baseline_tables(baseline: pd.DataFrame | None) -> list[dict]:
    """Per split: sources as columns ("all" first) and one row per characteristic level (age summarised)."""
    if baseline is None or baseline.empty:
        return []
    tables = []
    splits = sorted(
        baseline["split"].astype(str).unique(), key=lambda s: BASELINE_ORDER.index(s) if s in BASELINE_ORDER else 9
    )
    for split in splits:
        part = baseline[baseline["split"].astype(str) == split]
        sources = sorted(part["source"].astype(str).unique(), key=lambda s: (s != "all", s))
        by_source = {s: baseline_cells(part[part["source"].astype(str) == s]) for s in sources}
        keys = list(dict.fromkeys(k for s in sources for k in by_source[s]))
        rows = [{"key": k, "cells": [by_source[s].get(k, "-") for s in sources]} for k in keys]
        tables.append({"split": split, "sources": sources, "rows": rows})
    return tables
