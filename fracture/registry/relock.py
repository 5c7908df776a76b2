"""`fracture relock`: record a deliberate change of a model's locked analysis plan (fracture.contracts.plan).

The record names every changed key (old and new value), the reason, whether test results had been seen before the
change, who and when; it is appended to the model dir's `relocks.json`, and the report prints it. Nothing is
re-locked silently: a reason is required, and a plan that did not change is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fracture.base.errors import InputError
from fracture.config import Params, load_params
from fracture.contracts.plan import RELOCKS_FILE, analysis_plan, changed_keys, locked_plan, plan_hash, read_relocks


def run_relock(params: Params, model_dir: Path, reason: str, seen_test: bool, by: str, at: str) -> dict[str, Any]:
    """Append a re-lock of the model's plan to `params`' plan; returns the record.

    Raises:
        InputError: no reason, no locked plan in the model dir, or nothing changed.
    """
    from fracture.base.io import atomic_write_text

    if not (reason or "").strip():
        raise InputError("relock needs --reason TEXT: say why the analysis plan changes (it is recorded)")
    locked = locked_plan(Path(model_dir))
    if locked is None:
        raise InputError(f"{model_dir}: no locked analysis plan to change (re-train to lock one)")
    plan = analysis_plan(params)
    changes = changed_keys(locked, plan)
    if not changes:
        raise InputError(f"{model_dir}: the params' analysis plan is the locked one; nothing to re-lock")
    record = {"keys": plan, "sha256": plan_hash(plan), "changed": changes, "reason": reason.strip(),
              "seen_test": bool(seen_test), "by": by, "at": at}  # fmt: skip
    relocks = [*read_relocks(Path(model_dir)), record]
    atomic_write_text(Path(model_dir) / RELOCKS_FILE, json.dumps(relocks, indent=2, sort_keys=True) + "\n")
    return record


def relock(
    model: Annotated[Path, typer.Option(help="Model dir from train (its locked plan changes).")],
    reason: Annotated[str, typer.Option(help="Why the plan changes (recorded, printed by the report).")],
    seen_test: Annotated[
        bool, typer.Option("--seen-test/--no-seen-test", help="Whether test results had been seen (required).")
    ],
    params: Annotated[Path, typer.Option("--params", help="params.yaml with the new plan.", dir_okay=False)] = Path(
        "params.yaml"
    ),
) -> None:
    """Re-lock the model's analysis plan to the params' one, recording the change, the reason and seen-test."""
    from fracture.registry.client import current_user, now_iso

    record = run_relock(load_params(params), model, reason, seen_test, current_user(), now_iso())
    typer.echo(f"re-locked {model}: {', '.join(record['changed'])} (seen test: {record['seen_test']})")
