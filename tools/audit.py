"""`make audit`: known vulnerabilities in the lock file's pins, where a skipped audit is not a pass.

pip-audit lists a package it could not ask the advisory service about as "skipped" and still exits 0 and prints
"No known vulnerabilities found" when every package was skipped (no network). This runs pip-audit, counts what
was really checked, and says it in one line:

- exit 0: every package checked, none vulnerable;
- exit 1: a vulnerable package;
- exit 3 (without `--offline`): any package not checked, so the audit did not (fully) happen; `.ci/run` then says
  in capitals that this is not a pass, and fails unless the runner cannot reach the advisory service at all;
- `--offline`: for machines without the advisory service, exit 0 but log plainly that nothing (or how little)
  was audited.

Usage: python -m tools.audit requirements.lock [--offline]
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("tools.audit")


@dataclass(frozen=True)
class AuditSummary:
    """What pip-audit checked: package names, split by outcome."""

    checked: tuple[str, ...]
    skipped: tuple[str, ...]
    vulnerable: tuple[str, ...]

    @property
    def total(self) -> int:
        """Every package pip-audit was asked about."""
        return len(self.checked) + len(self.skipped)


def summarize(report: dict) -> AuditSummary:
    """Split pip-audit's JSON report (`-f json`) into checked, skipped and vulnerable packages."""
    deps = report.get("dependencies", [])
    skipped = tuple(d["name"] for d in deps if "skip_reason" in d)
    checked = tuple(d["name"] for d in deps if "skip_reason" not in d)
    vulnerable = tuple(f"{d['name']}=={d.get('version')}" for d in deps if d.get("vulns"))
    return AuditSummary(checked, skipped, vulnerable)


NOT_AUDITED = 3  # exit code: some or all packages could not be checked (never a pass)


def verdict(summary: AuditSummary, offline: bool) -> tuple[int, str]:
    """The exit code and the one line to log."""
    if summary.vulnerable:
        return 1, f"audit FAILED: known vulnerabilities in {', '.join(summary.vulnerable)}"
    if summary.total == 0 or not summary.checked:
        line = f"NOTHING WAS AUDITED: 0 of {summary.total} packages could be checked (advisory service unreachable?)"
        return (0, f"{line}; --offline: not a pass, run `make audit` online") if offline else (NOT_AUDITED, line)
    if summary.skipped:
        line = f"audit INCOMPLETE: {len(summary.skipped)} of {summary.total} packages not checked: "
        line += ", ".join(summary.skipped[:10]) + (" ..." if len(summary.skipped) > 10 else "")
        return (0, f"{line}; --offline: not a pass") if offline else (NOT_AUDITED, line)
    return 0, f"audit passed: {len(summary.checked)} packages checked, no known vulnerabilities"


def run_pip_audit(lock_path: Path) -> dict:
    """pip-audit's JSON report for the lock file's exact pins (no resolution, no local environment)."""
    cmd = [sys.executable, "-m", "pip_audit", "-r", str(lock_path), "--no-deps", "--disable-pip"]
    cmd += ["--progress-spinner", "off", "-f", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        detail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"pip-audit failed (exit {out.returncode}): {detail}") from None


def main(argv: list[str]) -> int:
    """Run the audit; returns the exit code."""
    from fracture.base.logs import setup_logging

    setup_logging(False)
    args = [a for a in argv if a != "--offline"]
    if len(args) != 1 or not Path(args[0]).is_file():
        log.error("usage: python -m tools.audit LOCK_FILE [--offline]")
        return 2
    code, line = verdict(summarize(run_pip_audit(Path(args[0]))), offline="--offline" in argv)
    (log.error if code else log.warning if "not a pass" in line else log.info)("%s", line)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
