"""The locked analysis plan: what decides, fixed by train before any test result exists.

Train writes the plan (the primary population and metric, the gate, the threshold rule, the CI level and the
promotion margins, `PLAN_KEYS`) with its sha256 into the model dir (`metadata.json` block `analysis_plan`) and tags
the training run with the hash. Under DVC these keys are params of the train stage, so editing one retrains and
locks a new plan. Evaluate, report, register and promote compare the params they run with against the locked plan
and refuse a difference, naming the changed keys, unless `fracture relock` recorded it: the change, the reason and
whether test results had been seen (`relocks.json` in the model dir, printed by the report).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from fracture.base.errors import InputError
from fracture.config import Params
from fracture.contracts.artifacts import MODEL_METADATA

log = logging.getLogger(__name__)

PLAN_KEYS = (
    "evaluate.primary.population",
    "evaluate.primary.metric",
    "evaluate.gate.min_auroc",
    "evaluate.gate.min_sensitivity",
    "evaluate.gate.min_specificity",
    "evaluate.gate.precision",
    "evaluate.gate.min_primary",
    "evaluate.gate.primary_bound",
    "evaluate.threshold_method",
    "evaluate.target_sensitivity",
    "evaluate.ci_level",
    "register.promote.max_auroc_drop",
    "register.promote.min_sensitivity",
    "register.promote.max_test_reuse",
    "register.promote.max_sensitivity_drop",
    "register.promote.max_specificity_drop",
)
BLOCK = "analysis_plan"  # metadata.json's block
RELOCKS_FILE = "relocks.json"
PLAN_TAG = "analysis_plan.sha256"


def _get(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        data = getattr(data, "register_" if part == "register" else part)
    return data


def analysis_plan(params: Params) -> dict[str, Any]:
    """The plan's keys and values in `params` (flat, dotted keys)."""
    return {key: _get(params, key) for key in PLAN_KEYS}


def plan_hash(plan: dict[str, Any]) -> str:
    """sha256 of the plan's canonical JSON."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def plan_block(params: Params) -> dict[str, Any]:
    """metadata.json's `analysis_plan` block: {"keys": plan, "sha256": hash}."""
    plan = analysis_plan(params)
    return {"keys": plan, "sha256": plan_hash(plan)}


def changed_keys(locked: dict[str, Any], current: dict[str, Any]) -> dict[str, list]:
    """{key: [locked value, current value]} for every key that differs (or is missing on one side)."""
    keys = sorted(set(locked) | set(current))
    return {k: [locked.get(k), current.get(k)] for k in keys if locked.get(k) != current.get(k)}


def read_relocks(model_dir: Path) -> list[dict[str, Any]]:
    """The model dir's re-locks, oldest first ([] when none)."""
    path = Path(model_dir) / RELOCKS_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of re-locks")
    return data


def locked_plan(model_dir: Path) -> dict[str, Any] | None:
    """The plan in force: the last re-lock's, else the one train locked; None for a model dir without one."""
    relocks = read_relocks(model_dir)
    if relocks:
        return dict(relocks[-1]["keys"])
    path = Path(model_dir) / MODEL_METADATA
    block = json.loads(path.read_text()).get(BLOCK) if path.is_file() else None
    return dict(block["keys"]) if isinstance(block, dict) and "keys" in block else None


def describe_changes(changes: dict[str, list]) -> str:
    """`key: old -> new` for each changed key."""
    return "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())


def check_plan(model_dir: Path, params: Params, step: str) -> dict[str, Any]:
    """Refuse params whose analysis plan differs from the model's locked one.

    Returns:
        {"sha256", "relocks"} of the plan in force (sha256 None, with a warning, for a model dir from before plans
        were locked).

    Raises:
        InputError: a key differs; the message names each changed key and how to re-lock.
    """
    locked = locked_plan(model_dir)
    if locked is None:
        log.warning("%s: %s has no locked analysis plan (trained before plans were locked); not checked", step,
                    model_dir)  # fmt: skip
        return {"sha256": None, "relocks": []}
    changes = changed_keys(locked, analysis_plan(params))
    if changes:
        raise InputError(
            f"{step}: the analysis plan differs from the one locked in {model_dir} ({describe_changes(changes)}); "
            f"restore those params, or re-lock with a reason: fracture relock --model {model_dir} --reason TEXT "
            "--seen-test|--no-seen-test"
        )
    return {"sha256": plan_hash(locked), "relocks": read_relocks(model_dir)}


def plan_tags(params: Params, checked: dict[str, Any]) -> dict[str, str]:
    """Registry tags: the plan's hash, its keys (JSON) and the number of re-locks (promote compares them)."""
    plan = analysis_plan(params)
    return {
        PLAN_TAG: checked.get("sha256") or "none",
        BLOCK: json.dumps(plan, sort_keys=True),
        "analysis_plan.relocks": str(len(checked.get("relocks") or [])),
    }


def check_version_plan(tags: dict[str, str], params: Params, version: str) -> None:
    """Promote's check: the candidate version's locked plan against the params promote runs with.

    Raises:
        InputError: the plans differ (naming the changed keys); a version registered without a plan passes with a
            warning.
    """
    raw = tags.get(BLOCK)
    if not raw:
        log.warning("promote: version %s was registered without a locked analysis plan; not checked", version)
        return
    changes = changed_keys(json.loads(raw), analysis_plan(params))
    if changes:
        raise InputError(
            f"promote: the analysis plan differs from the one version {version} was registered with "
            f"({describe_changes(changes)}); promote with the params it was evaluated under, or re-train / re-lock "
            "and register again"
        )
