"""Pure checks of a served model's answers against the offline evaluation (no I/O, no processes)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fracture.contracts.artifacts import PREDICTIONS
from fracture.contracts.verdict import Check, Verdict

OUTPUT_KEYS = ("probability", "decision", "threshold")
TAG_PREFIX = "infra_validation."
MAX_NAMES = 5  # offending cases named per failed check


@dataclass(frozen=True)
class Case:
    """One request of the request set.

    Attributes:
        name: what is sent, e.g. `test:kaggle-0001/png16/image`.
        body: the JSON request body for `/invocations`.
        expected: the offline probability (None for a bad input).
        reference: where `expected` comes from: `predictions.parquet` or `offline model` (re-encoded variants).
        expect_error: for a bad input, a fragment the error answer must contain ("" = any 4xx answer).
    """

    name: str
    body: dict
    expected: float | None = None
    reference: str = PREDICTIONS
    expect_error: str | None = None

    @property
    def bad(self) -> bool:
        """Whether this case is a bad input that must be refused."""
        return self.expect_error is not None


@dataclass(frozen=True)
class Answer:
    """The server's answer to one request: HTTP status (0 = no answer), parsed body or text, seconds."""

    status: int
    body: Any
    seconds: float


def _check(name: str, passed: bool, detail: str) -> dict:
    return {"check": name, "passed": bool(passed), "detail": detail}


def _names(names: Sequence[str]) -> str:
    more = f" (+{len(names) - MAX_NAMES} more)" if len(names) > MAX_NAMES else ""
    return ", ".join(names[:MAX_NAMES]) + more


def prediction(answer: Answer) -> dict | None:
    """The single prediction of a 200 answer, or None when the answer is not one well-formed prediction."""
    if answer.status != 200 or not isinstance(answer.body, dict):
        return None
    preds = answer.body.get("predictions")
    if not isinstance(preds, list) or len(preds) != 1 or not isinstance(preds[0], dict):
        return None
    pred = preds[0]
    return pred if all(isinstance(pred.get(k), int | float) for k in OUTPUT_KEYS) else None


def check_answered(cases: Sequence[Case], answers: Sequence[Answer]) -> dict:
    """Every good request got a 200 answer holding exactly one prediction with the three output fields."""
    missing = [c.name + f" (HTTP {a.status})" for c, a in zip(cases, answers, strict=True) if prediction(a) is None]
    detail = f"{len(cases) - len(missing)}/{len(cases)} answered" + (
        f"; no answer: {_names(missing)}" if missing else ""
    )
    return _check("every request answered", not missing and bool(cases), detail)


def probability_differences(cases: Sequence[Case], answers: Sequence[Answer]) -> dict[str, float]:
    """|served - offline| probability per answered good case."""
    out = {}
    for case, answer in zip(cases, answers, strict=True):
        pred = prediction(answer)
        if pred is not None and case.expected is not None:
            out[case.name] = abs(float(pred["probability"]) - float(case.expected))
    return out


def check_probabilities(cases: Sequence[Case], answers: Sequence[Answer], tolerance: float) -> dict:
    """Served probabilities equal the offline ones within `tolerance`."""
    diffs = probability_differences(cases, answers)
    worst = max(diffs.values(), default=float("nan"))
    off = [f"{name} (|diff| {d:.2e})" for name, d in diffs.items() if not d <= tolerance]
    detail = f"max |served - offline| {worst:.2e} over {len(diffs)} answers; tolerance {tolerance:.1e}"
    return _check(
        "probabilities equal offline", bool(diffs) and not off, detail + (f"; off: {_names(off)}" if off else "")
    )


def check_threshold(cases: Sequence[Case], answers: Sequence[Answer], threshold: float) -> dict:
    """Each answer carries the frozen threshold and its decision is `probability >= threshold`."""
    wrong = []
    for case, answer in zip(cases, answers, strict=True):
        pred = prediction(answer)
        if pred is None:
            continue
        prob, decision, served_t = float(pred["probability"]), int(pred["decision"]), float(pred["threshold"])
        if abs(served_t - threshold) > 1e-9 or decision != int(prob >= threshold):
            wrong.append(f"{case.name} (threshold {served_t:.6f}, p {prob:.6f}, decision {decision})")
    detail = f"frozen threshold {threshold:.6f}" + (f"; wrong: {_names(wrong)}" if wrong else "")
    return _check("decision at the frozen threshold", not wrong, detail)


def _answer_text(answer: Answer) -> str:
    return answer.body if isinstance(answer.body, str) else json.dumps(answer.body)


def check_bad_inputs(cases: Sequence[Case], answers: Sequence[Answer]) -> dict:
    """Each bad input got a 4xx answer that names the problem (the expected fragment)."""
    wrong = []
    for case, answer in zip(cases, answers, strict=True):
        if not 400 <= answer.status < 500:
            wrong.append(f"{case.name} (HTTP {answer.status})")
        elif case.expect_error and case.expect_error.lower() not in _answer_text(answer).lower():
            wrong.append(f"{case.name} (HTTP {answer.status} without {case.expect_error!r})")
    detail = f"{len(cases) - len(wrong)}/{len(cases)} refused with a 4xx naming the problem"
    return _check(
        "bad inputs refused clearly", bool(cases) and not wrong, detail + (f"; {_names(wrong)}" if wrong else "")
    )


def check_still_serving(ping_status: int, before: Answer, after: Answer) -> dict:
    """After the bad inputs, /ping answers and the same good request gives the same probability."""
    first, second = prediction(before), prediction(after)
    same = first is not None and second is not None and first["probability"] == second["probability"]
    detail = f"/ping {ping_status}; repeat request HTTP {after.status}" + (
        "" if same else " (answer changed or missing)"
    )
    return _check("serving after bad inputs", ping_status == 200 and same, detail)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / max of request latencies, s."""
    arr = np.asarray(seconds, dtype=np.float64)
    if arr.size == 0:
        return {"p50_latency_s": float("nan"), "p95_latency_s": float("nan"), "max_latency_s": float("nan")}
    p50, p95 = np.percentile(arr, [50, 95])
    return {"p50_latency_s": float(p50), "p95_latency_s": float(p95), "max_latency_s": float(arr.max())}


def check_latency(seconds: Sequence[float], limit_s: float) -> dict:
    """p95 latency of single-image requests under the limit."""
    stats = latency_summary(seconds)
    p95 = stats["p95_latency_s"]
    detail = f"p95 {p95:.3f} s over {len(seconds)} requests (p50 {stats['p50_latency_s']:.3f} s); limit {limit_s:.3f} s"
    return _check("p95 latency", len(seconds) > 0 and p95 <= limit_s, detail)


def summarise(checks: Sequence[dict], **facts: Any) -> dict:
    """The infra validation result: passed, the reasons of failed checks, the checks, and measured facts."""
    reasons = [f"{c['check']}: {c['detail']}" for c in checks if not c["passed"]]
    return {"passed": not reasons and bool(checks), "reasons": reasons, "checks": list(checks), **facts}


def failed_result(reason: str, **facts: Any) -> dict:
    """A result for a validation that could not run to the end (the server did not start, no request set)."""
    return {"passed": False, "reasons": [reason], "checks": [_check("infra validation ran", False, reason)], **facts}


def not_run_result(reason: str, **facts: Any) -> dict:
    """A result for a validation that was not run (the evaluation gate refused the model first): undecidable."""
    return {"passed": False, "not_run": True, "reasons": [reason], "checks": [], **facts}


def to_verdict(result: dict) -> Verdict:
    """The result in the shared verdict schema (gate `infravalidate`): what `register` acts on."""
    if result.get("not_run"):
        return Verdict("infravalidate", "undecidable", tuple(result["reasons"]))
    found = tuple(
        Check(c["check"], "passed" if c["passed"] else "failed", note="" if c["passed"] else str(c["detail"]))
        for c in result.get("checks", [])
    )
    return Verdict("infravalidate", "passed" if result["passed"] else "failed", tuple(result["reasons"]), found)


def result_tags(result: dict, at: str) -> dict[str, str]:
    """Model version tags recording a result (`infra_validation.*`)."""

    def num(key: str) -> str:
        value = result.get(key)
        return repr(float(value)) if isinstance(value, int | float) else "none"

    summary = [{k: c[k] for k in ("check", "passed", "detail")} for c in result.get("checks", [])]
    return {
        f"{TAG_PREFIX}passed": "true" if result.get("passed") else "false",
        f"{TAG_PREFIX}reasons": json.dumps(result.get("reasons", []))[:8000],
        f"{TAG_PREFIX}max_abs_diff": num("max_abs_diff"),
        f"{TAG_PREFIX}p95_latency_s": num("p95_latency_s"),
        f"{TAG_PREFIX}n_requests": str(int(result.get("n_requests") or 0)),
        f"{TAG_PREFIX}checks": json.dumps(summary, separators=(",", ":"))[:8000],
        f"{TAG_PREFIX}at": at,
    }
