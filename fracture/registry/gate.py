"""The promotion gate, pure: a candidate version's tags against the champion's, and the comparison table."""

from __future__ import annotations

from typing import Any

from fracture.base.errors import InputError
from fracture.config import PromoteParams
from fracture.registry.compare import DELONG_NOTE, paired_checks, reuse_check, same_test_set_check
from fracture.registry.lineage import run_metric_name
from fracture.registry.names import AUROC, HEADLINE_METRICS, SENSITIVITY
from fracture.tracking import sig4

_EPS = 1e-9  # tolerance for float comparisons against gate limits (0.85 - 0.84 > 0.01 in binary floats)


def _metric_tag(tags: dict[str, str], key: str, version: str | None) -> float:
    try:
        return float(tags[key])
    except (KeyError, TypeError, ValueError):
        raise InputError(
            f"version {version} has no numeric tag {key!r}; was it registered by `fracture register`?"
        ) from None


def exact_gate_tags(tags: dict[str, str], run_metrics: dict[str, float]) -> dict[str, str]:
    """The version's tags with each headline number at full precision, from its run's metrics where they agree.

    Version tags show 4 significant digits; gating on them would pass a sensitivity of 0.59996 against a minimum of
    0.6. The run holds the exact value as the metric `test/...` (registry.lineage.run_metric_name); it is used when
    it rounds to the tag (the run may have been registered again with another evaluation: then the tag stands).
    """
    exact = dict(tags)
    for key in HEADLINE_METRICS:
        value = run_metrics.get(run_metric_name(key))
        if key in tags and value is not None and sig4(value) == tags[key]:
            exact[key] = repr(float(value))
    return exact


def gate_status(tags: dict[str, str]) -> str:
    """A version's evaluation verdict: its `gate.status` tag (versions registered before verdicts: `gate.passed`)."""
    if tags.get("gate.status") in ("passed", "failed", "undecidable"):
        return tags["gate.status"]
    return "passed" if tags.get("gate.passed") == "true" else "failed"


def _check(name: str, candidate: Any, champion: Any, limit: Any, passed: bool | None, why: str = "") -> dict:
    return {"check": name, "candidate": candidate, "champion": champion, "limit": limit, "passed": passed, "why": why}


def _absolute_checks(
    candidate: dict[str, str], champion: dict[str, str] | None, promote: PromoteParams, versions: tuple[str, str | None]
) -> list[dict]:
    cand_v, champ_v = versions
    status = gate_status(candidate)
    gate_ok = status == "passed"
    gate_why = (
        f"version {cand_v}'s evaluation gate was undecidable (n too small); promoting it needs --force --reason"
        if status == "undecidable"
        else f"version {cand_v} was registered although its evaluation gate failed"
    )
    sens = _metric_tag(candidate, SENSITIVITY, cand_v)
    champ_sens = None if champion is None else _metric_tag(champion, SENSITIVITY, champ_v)
    sens_ok = sens + _EPS >= promote.min_sensitivity
    sens_why = f"{SENSITIVITY} {sens:.6g} < min_sensitivity {promote.min_sensitivity:.6g}"  # 0.59996 < 0.6
    return [
        _check("evaluation gate at registration", status, None, "passed", gate_ok, gate_why),
        _check(f"{SENSITIVITY} >= min", sens, champ_sens, promote.min_sensitivity, sens_ok, sens_why),
    ]


def _auroc_check(
    candidate: dict[str, str], champion: dict[str, str] | None, promote: PromoteParams, versions: tuple[str, str | None]
) -> dict:
    cand_v, champ_v = versions
    auroc = _metric_tag(candidate, AUROC, cand_v)
    if champion is None:
        return _check(f"{AUROC} (no champion: absolute gates only)", auroc, None, None, None)
    ref = _metric_tag(champion, AUROC, champ_v)
    limit = ref - promote.max_auroc_drop
    why = (
        f"{AUROC} {auroc:.4f} is {ref - auroc:.4f} below champion v{champ_v} ({ref:.4f}); "
        f"max_auroc_drop {promote.max_auroc_drop:.4f}"
    )
    return _check(f"{AUROC} drop <= max_auroc_drop", auroc, ref, limit, auroc + _EPS >= limit, why)


def _relative_checks(
    candidate: dict[str, str],
    champion: dict[str, str] | None,
    promote: PromoteParams,
    versions: tuple[str, str | None],
    evidence: dict | None,
) -> list[dict]:
    """Against the champion: the paired AUROC difference on one test set (registry.compare), or the point drop.

    The point drop is used without evidence (tags only) and, unpaired, when a different test set was allowed.
    """
    if champion is None or evidence is None:
        return [_auroc_check(candidate, champion, promote, versions)]
    checks = [same_test_set_check(evidence, versions), *paired_checks(evidence, promote, versions)]
    if evidence["test_set_differences"]:
        unpaired = _auroc_check(candidate, champion, promote, versions)
        unpaired["check"] += " (unpaired: different test sets)"
        if not evidence.get("allowed_different"):
            unpaired["passed"] = None  # the test-set row refuses already; the point numbers are for information
        checks.append(unpaired)
    return checks


def compare_versions(
    candidate: dict[str, str],
    champion: dict[str, str] | None,
    promote: PromoteParams,
    versions: tuple[str, str | None],
    evidence: dict | None = None,
) -> dict:
    """Gate a candidate against the champion (absolute gates only when there is none).

    Args:
        candidate: the candidate version's tags.
        champion: the current champion's tags, or None before the first promotion.
        promote: `register.promote` params (max_auroc_drop, min_sensitivity).
        versions: (candidate version, champion version or None), for the messages.
        evidence: from `registry.evidence.gather_evidence` (test-set check, paired comparison, test-set reuse);
            None compares the tags' point AUROCs only.

    Returns:
        {"candidate_version", "champion_version", "passed", "reasons", "checks": [...], "paired"}; a check's
        `passed` is None for rows shown for information only; "paired" is the paired comparison, if any.
    """
    checks = _absolute_checks(candidate, champion, promote, versions)
    checks += _relative_checks(candidate, champion, promote, versions, evidence)
    checks += reuse_check(evidence or {}, promote.max_test_reuse)
    for key in ("test.frozen.specificity", "threshold"):
        if key in candidate:
            checks.append(_check(key, candidate[key], (champion or {}).get(key), None, None))
    reasons = [c["why"] for c in checks if c["passed"] is False]
    for c in checks:
        del c["why"]
    return {
        "candidate_version": versions[0],
        "champion_version": versions[1],
        "passed": not reasons,
        "reasons": reasons,
        "checks": checks,
        "paired": (evidence or {}).get("paired") if champion is not None else None,
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return str(value)


def format_comparison(comparison: dict) -> str:
    """The comparison as a plain-text table (logged at INFO)."""
    champ = comparison["champion_version"]
    head = ("check", f"candidate v{comparison['candidate_version']}", f"champion v{champ}" if champ else "champion")
    rows = [(*head, "limit", "result")]
    for c in comparison["checks"]:
        result = {True: "pass", False: "FAIL", None: "info"}[c["passed"]]
        rows.append((c["check"], _cell(c["candidate"]), _cell(c["champion"]), _cell(c["limit"]), result))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    verdict = "PASSED" if comparison["passed"] else "FAILED: " + "; ".join(comparison["reasons"])
    note = [f"note: {DELONG_NOTE}; the gate uses the cluster-bootstrap CI"] if comparison.get("paired") else []
    return "\n".join([*lines, *note, f"gate {verdict}"])
