"""The one verdict schema (fracture/contracts/verdict.py): combination rule, round trip, and clear errors."""

import json

import pytest

from fracture.contracts.verdict import Check, Verdict, VerdictError, combine, read_verdict, write_verdict


def test_combine_failed_beats_undecidable_beats_passed():
    ok = Check("test.auroc", "passed", 0.8, 0.7)
    unsure = Check("n_patients", "undecidable", n_needed=120, n_observed=40, note="n too small: 40 < 120")
    bad = Check("test.sens", "failed", 0.5, 0.8)
    assert combine("evaluate", [ok]).status == "passed"
    assert combine("evaluate", [ok, unsure]).status == "undecidable"
    verdict = combine("evaluate", [ok, unsure, bad])
    assert verdict.status == "failed" and not verdict.passed
    assert verdict.reasons == ("test.sens 0.5000 < 0.8", "n_patients: n too small: 40 < 120")


def test_round_trip_and_summary(tmp_path):
    verdict = combine("infravalidate", [Check("latency_ms", "failed", 900.0, 500.0)])
    path = write_verdict(verdict, tmp_path / "verdict.json")
    assert read_verdict(path) == verdict
    assert verdict.summary() == "infravalidate: failed: latency_ms 900.0000 < 500.0"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"schema": "other"}, "schema is 'other'"),
        (
            {"schema": "fracture.verdict/1", "gate": "g", "status": "maybe", "reasons": [], "checks": []},
            "maybe",
        ),
        ({"schema": "fracture.verdict/1", "gate": "g"}, "missing status, reasons, checks"),
    ],
)
def test_bad_verdicts_name_the_file_and_the_reason(tmp_path, payload, message):
    path = tmp_path / "gate.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(VerdictError, match=message) as err:
        read_verdict(path)
    assert str(path) in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(VerdictError, match="no verdict file"):
        read_verdict(tmp_path / "absent.json")


def test_status_is_checked_on_construction():
    with pytest.raises(VerdictError):
        Verdict("g", "ok")  # type: ignore[arg-type]
