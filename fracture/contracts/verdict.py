"""One verdict schema for every gate: evaluation, infra validation, promotion and the clinical review sign-off.

A verdict is an artifact (TFX's "blessing"): the step that judges writes it, the steps that act on it (register,
promote, the KFP pipeline) receive it and record what it says, so "not registered, because ..." reads the same
under DVC and on the cluster. JSON form (`Verdict.to_dict`, validated by `Verdict.from_dict`):

    {"schema": "fracture.verdict/1", "gate": "evaluate", "status": "passed" | "failed" | "undecidable",
     "reasons": ["..."], "checks": [{"name", "status", "observed", "required", "n_needed", "n_observed", "note"}]}

`undecidable` means the evidence cannot support either answer (for example a test set with fewer patients than the
configured precision needs); it is neither a pass nor a failure, and acting on it needs an explicit override.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SCHEMA = "fracture.verdict/1"
Status = Literal["passed", "failed", "undecidable"]
STATUSES: tuple[str, ...] = ("passed", "failed", "undecidable")


class VerdictError(ValueError):
    """A verdict file or mapping that does not follow the schema."""


@dataclass(frozen=True)
class Check:
    """One criterion of a gate: what was observed against what was required, and the sample size behind it."""

    name: str
    status: Status
    observed: float | str | None = None
    required: float | str | None = None
    n_needed: int | None = None
    n_observed: int | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise VerdictError(f"check {self.name!r}: status {self.status!r} is not one of {', '.join(STATUSES)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (every key present, None where unknown)."""
        return {
            "name": self.name,
            "status": self.status,
            "observed": self.observed,
            "required": self.required,
            "n_needed": self.n_needed,
            "n_observed": self.n_observed,
            "note": self.note,
        }


@dataclass(frozen=True)
class Verdict:
    """A gate's decision: its status, the reasons a reader needs, and the checks behind it."""

    gate: str
    status: Status
    reasons: tuple[str, ...] = ()
    checks: tuple[Check, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise VerdictError(f"gate {self.gate!r}: status {self.status!r} is not one of {', '.join(STATUSES)}")

    @property
    def passed(self) -> bool:
        """True only for `passed` (an undecidable gate is not a pass)."""
        return self.status == "passed"

    def summary(self) -> str:
        """One line for logs and registry tags: `<gate>: <status>[: reason; reason]`."""
        text = f"{self.gate}: {self.status}"
        return f"{text}: {'; '.join(self.reasons)}" if self.reasons else text

    def to_dict(self) -> dict[str, Any]:
        """JSON form (see the module docstring)."""
        return {
            "schema": SCHEMA,
            "gate": self.gate,
            "status": self.status,
            "reasons": list(self.reasons),
            "checks": [c.to_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "verdict") -> Verdict:
        """Parse and validate; raises VerdictError naming `source` and what is wrong."""
        if not isinstance(data, Mapping):
            raise VerdictError(f"{source}: a verdict is a JSON object, got {type(data).__name__}")
        if data.get("schema") != SCHEMA:
            raise VerdictError(f"{source}: schema is {data.get('schema')!r}, expected {SCHEMA!r}")
        missing = [k for k in ("gate", "status", "reasons", "checks") if k not in data]
        if missing:
            raise VerdictError(f"{source}: missing {', '.join(missing)}")
        try:
            checks = tuple(Check(**dict(c)) for c in data["checks"])
            return cls(str(data["gate"]), data["status"], tuple(str(r) for r in data["reasons"]), checks)
        except (TypeError, VerdictError) as exc:
            raise VerdictError(f"{source}: {exc}") from None


def combine(gate: str, checks: Iterable[Check], extra_reasons: Iterable[str] = ()) -> Verdict:
    """The verdict of several checks: failed if any failed, else undecidable if any was, else passed.

    Reasons list every check that did not pass (failures first), each as `<name>: <note or observed vs required>`.
    """
    checks = tuple(checks)
    failed = [c for c in checks if c.status == "failed"]
    undecidable = [c for c in checks if c.status == "undecidable"]
    status: Status = "failed" if failed else "undecidable" if undecidable else "passed"
    reasons = [_reason(c) for c in failed + undecidable]
    return Verdict(gate, status, tuple([*reasons, *extra_reasons]), checks)


def _reason(check: Check) -> str:
    if check.note:
        return f"{check.name}: {check.note}"
    if check.observed is None:
        return f"{check.name} is undefined"
    observed = f"{check.observed:.4f}" if isinstance(check.observed, float) else str(check.observed)
    return f"{check.name} {observed} < {check.required}"


def write_verdict(verdict: Verdict, path: Path) -> Path:
    """Write the verdict as JSON (sorted keys, deterministic bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(verdict.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def read_verdict(path: Path) -> Verdict:
    """Read and validate a verdict file; errors name the file and the reason."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise VerdictError(f"{path}: no verdict file (did the gate's step run?)") from None
    except json.JSONDecodeError as exc:
        raise VerdictError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
    return Verdict.from_dict(data, source=str(path))
