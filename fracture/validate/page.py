"""validation.html: the validate step's results as one plain page, built from validation.json alone.

The page is deterministic (no times, no absolute paths: the same validation.json gives the same bytes), so DVC can
hash it, and it is offline (no scripts, no external stylesheets or fonts), so a browser without network shows
everything. The Great Expectations Data Docs in `data_docs/` stay beside it as the GX-rendered view; their run
time is in their paths and contents, which is why they are not a DVC output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

TEMPLATE = "validation.html.j2"
MAX_LIST_ITEMS = 12  # list-valued observations (columns present) are cut after this many items
ROW_KEYS = ("image_id", "source", "path", "label", "reason")  # shown for each failing row (sha256 is too long)


def status_of(entry: Mapping[str, Any]) -> str:
    """PASS, FAIL, or ERROR (the check itself raised: its result says nothing about the data)."""
    if entry.get("details", {}).get("error"):
        return "ERROR"
    return "PASS" if entry["success"] else "FAIL"


def column_of(entry: Mapping[str, Any]) -> str:
    """The column(s) an expectation checks, or `(table)` for table-level checks."""
    kwargs = entry.get("details", {}).get("kwargs", {})
    return kwargs.get("column") or ", ".join(kwargs.get("column_list") or []) or "(table)"


def summarise_value(value: Any) -> str:
    """A short plain-text form of an observed or expected value."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {summarise_value(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        shown = ", ".join(summarise_value(v) for v in value[:MAX_LIST_ITEMS])
        more = f" (+{len(value) - MAX_LIST_ITEMS} more)" if len(value) > MAX_LIST_ITEMS else ""
        return f"[{shown}{more}]"
    if isinstance(value, bool):
        return "true" if value else "false"  # as validation.json spells them
    if isinstance(value, float):
        return f"{value:.6g}"
    return "null" if value is None else str(value)


def expected_of(entry: Mapping[str, Any]) -> str:
    """What the check expects: its arguments without the column, plus a plain `where` for a row condition."""
    details = entry.get("details", {})
    if details.get("engine") == "python":
        return details.get("note", "")
    kwargs = {k: v for k, v in details.get("kwargs", {}).items() if k not in ("column", "column_list")}
    cond = kwargs.pop("row_condition", None)
    text = summarise_value(kwargs) if kwargs else ""
    if isinstance(cond, Mapping) and {"column", "operator", "parameter"} <= set(cond):
        name = cond["column"].get("name") if isinstance(cond["column"], Mapping) else cond["column"]
        text += f" where {name} {cond['operator']} {summarise_value(cond['parameter'])}"
    elif cond is not None:
        text += f" where {json.dumps(cond, sort_keys=True)}"
    return text.strip()


def failing_rows(entry: Mapping[str, Any]) -> list[dict[str, str]]:
    """The reported failing rows (at most `validate.MAX_ROWS_REPORTED`), with their identifying columns."""
    rows = entry.get("details", {}).get("rows") or []
    return [{k: summarise_value(row[k]) for k in ROW_KEYS if k in row} for row in rows if isinstance(row, Mapping)]


def page_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One expectation as a table row: name, check, column, severity, status, observed, expected, failing rows."""
    details = entry.get("details", {})
    rows = failing_rows(entry)
    return {
        "name": entry["name"],
        "check": details.get("expectation") or "python check",
        "column": column_of(entry),
        "severity": entry["severity"],
        "status": status_of(entry),
        "observed": summarise_value(entry.get("observed")),
        "expected": expected_of(entry),
        "error": details.get("error"),
        "rows": rows,
        "row_keys": [k for k in ROW_KEYS if any(k in r for r in rows)],
    }


def page_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Expectations in total, passed, failed by severity, errored."""
    failed = [r for r in rows if r["status"] == "FAIL"]
    return {
        "total": len(rows),
        "passed": sum(r["status"] == "PASS" for r in rows),
        "failed_blocking": sum(r["severity"] == "blocking" for r in failed),
        "failed_warning": sum(r["severity"] == "warning" for r in failed),
        "errors": sum(r["status"] == "ERROR" for r in rows),
    }


def render_results_page(report: Mapping[str, Any]) -> str:
    """validation.html for a validation.json (`validate.summarise`'s dict): header with counts, one row each."""
    from fracture.templates.pages import environment

    env = environment(keep_trailing_newline=True)
    rows = [page_row(e) for e in report["results"]]
    return env.get_template(TEMPLATE).render(
        report=report, rows=rows, counts=page_counts(rows), data_docs=report.get("data_docs")
    )
