"""The report's first screen: the evaluation verdict and the co-primary endpoints with their lower bounds.

Beside them, the patients a decision needs and those the test set holds (fracture.evaluate.decision writes them).
"""

from __future__ import annotations

from typing import Any

from fracture.contracts.verdict import Verdict
from fracture.report.tables import is_number

COPRIMARY = (("auroc", "AUROC"), ("sensitivity", "Sensitivity"), ("specificity", "Specificity"))
PREFIX = "coprimary"


def _num(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if is_number(value) else None


def endpoint_rows(metrics: dict) -> list[dict[str, Any]]:
    """One row per co-primary endpoint: value, CI, the bound the gate reads, exact bound, zero-width flag."""
    rows = []
    for key, label in COPRIMARY:
        base = f"{PREFIX}.{key}"
        if base not in metrics:
            continue
        rows.append(
            {
                "key": key,
                "label": label,
                "value": _num(metrics, base),
                "low": _num(metrics, f"{base}_ci_low"),
                "high": _num(metrics, f"{base}_ci_high"),
                "exact_low": _num(metrics, f"{base}_exact_low"),
                "bound": _num(metrics, f"{base}_bound"),
                "deff": _num(metrics, f"{base}_deff"),
                "zero_width": bool(metrics.get(f"{base}_zero_width")),
            }
        )
    return rows


def sample_size_rows(verdict: Verdict | None) -> list[dict[str, Any]]:
    """Positive and negative patients: needed against observed, and whether enough."""
    if verdict is None:
        return []
    return [
        {
            "name": c.name.removeprefix("sample_size."),
            "needed": c.n_needed,
            "observed": c.n_observed,
            "enough": c.status == "passed",
        }  # fmt: skip
        for c in verdict.checks
        if c.name.startswith("sample_size.")
    ]


def decision_view(verdict: Verdict | None, metrics: dict, primary: dict | None) -> dict[str, Any] | None:
    """Everything the first screen shows (None without gate.json: the missing-artifacts banner says so).

    `primary` is primary.json (it holds the population's name, a string metrics.json leaves out).
    """
    if verdict is None:
        return None
    return {
        "status": verdict.status,
        "reasons": list(verdict.reasons),
        "checks": [c.to_dict() for c in verdict.checks if not c.name.startswith("sample_size.")],
        "endpoints": endpoint_rows(metrics),
        "sample_size": sample_size_rows(verdict),
        "population": (primary or {}).get(f"{PREFIX}.population"),
        "precision": _num(metrics, f"{PREFIX}.precision"),
        "css": {"passed": "ok", "failed": "fail", "undecidable": "warn"}[verdict.status],
    }
