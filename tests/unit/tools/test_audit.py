"""`make audit`: a skipped audit is not a pass."""

from __future__ import annotations

from tools.audit import summarize, verdict

SKIPPED = {"name": "torch", "skip_reason": "Dependency not found on PyPI and could not be audited: torch (2.14.1)"}
CLEAN = {"name": "numpy", "version": "2.3.0", "vulns": []}
VULNERABLE = {"name": "jinja2", "version": "3.1.0", "vulns": [{"id": "GHSA-xxxx", "fix_versions": ["3.1.6"]}]}


def test_an_unreachable_advisory_service_fails_the_audit_unless_offline_is_said():
    everything_skipped = summarize({"dependencies": [SKIPPED, {**SKIPPED, "name": "timm"}]})
    code, line = verdict(everything_skipped, offline=False)
    assert code == 3 and line.startswith("NOTHING WAS AUDITED: 0 of 2 packages")
    code, line = verdict(everything_skipped, offline=True)
    assert code == 0 and "NOTHING WAS AUDITED" in line and "not a pass" in line


def test_a_partial_audit_is_incomplete_and_a_finding_always_fails():
    partial = summarize({"dependencies": [CLEAN, SKIPPED]})
    assert verdict(partial, offline=False) == (3, "audit INCOMPLETE: 1 of 2 packages not checked: torch")
    assert verdict(partial, offline=True)[0] == 0
    found = summarize({"dependencies": [CLEAN, VULNERABLE, SKIPPED]})
    assert found.vulnerable == ("jinja2==3.1.0",)
    assert verdict(found, offline=True)[0] == 1 and "jinja2==3.1.0" in verdict(found, offline=True)[1]


def test_a_complete_clean_audit_passes():
    assert verdict(summarize({"dependencies": [CLEAN]}), offline=False) == (
        0,
        "audit passed: 1 packages checked, no known vulnerabilities",
    )
    assert verdict(summarize({"dependencies": []}), offline=False)[0] == 3  # an empty report audited nothing
