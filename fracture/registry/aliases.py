"""Alias moves: `promote` (gated, keeps `previous-champion`) and `rollback`, each recorded in the history tags."""

from __future__ import annotations

import logging
from typing import Any

from fracture.base.errors import GateError, InputError, MultiLine, first_line
from fracture.config import Params
from fracture.contracts.plan import check_version_plan
from fracture.registry.client import access_error, mlflow_client, now_iso, registry_errors, tag_text
from fracture.registry.compare import check_allow_different, comparison_tags
from fracture.registry.evidence import gather_evidence, record_comparison
from fracture.registry.gate import compare_versions, exact_gate_tags, format_comparison
from fracture.registry.lineage import check_force
from fracture.registry.names import CHALLENGER, CHAMPION, PREVIOUS, REVIEW_STATUS_TAG
from fracture.tracking import redact, tracking_uri

log = logging.getLogger(__name__)


def _reviewer(name: str, action: str) -> str:
    """The audit name of a user allowed to move the champion of `name` (checked before anything changes).

    Raises:
        AccessError: 401 / 403 from the tracking server, one line naming who and what.
    """
    from fracture.access.identity import require_permission
    from fracture.access.names import REVIEW_PERMISSION

    return require_permission(tracking_uri(), name, REVIEW_PERMISSION, action).audit_name


def _aliases(client: Any, name: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        return dict(client.get_registered_model(name).aliases)
    except MlflowException as err:
        raise access_error(err) or InputError(f"no registered model {name!r} on {redact(tracking_uri())}") from None


def _candidate(client: Any, name: str, version: int | None, alias: str) -> Any:
    from mlflow.exceptions import MlflowException

    aliases = _aliases(client, name)
    if version is None:
        if alias not in aliases:
            raise InputError(f"registered model {name!r} has no alias {alias!r} (aliases: {sorted(aliases) or 'none'})")
        version = int(aliases[alias])
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as err:
        raise access_error(err) or InputError(f"registered model {name!r} has no version {version}") from None


def _verify_candidate(name: str, version: str) -> None:
    """Fetch the candidate as serving would and check it (no pickle, our model code, registered weights).

    Raises:
        InputError: the candidate fails a check; nothing is moved.
    """
    import tempfile
    from pathlib import Path

    from fracture.registry.download import fetch_model

    with tempfile.TemporaryDirectory(prefix="fracture-promote-") as tmp:
        fetch_model(f"models:/{name}/{version}", Path(tmp) / "model")


def _append_history(client: Any, name: str, event: dict) -> None:
    """Model-level history: tags `history.0001`, `history.0002`, ... (JSON), shown on the registered model."""
    tags = client.get_registered_model(name).tags
    n = 1 + sum(1 for key in tags if key.startswith("history."))
    client.set_registered_model_tag(name, f"history.{n:04d}", tag_text(event))


def _apply_promotion(client: Any, name: str, candidate: Any, champion: Any | None, event: dict) -> None:
    v = candidate.version
    for key, value in {
        "promoted_by": event["by"],
        "promoted_at": event["at"],
        "promotion_reason": event["reason"] or "",
        "promotion_forced": "true" if event["forced"] else "false",
        "promoted_from": champion.version if champion is not None else "none",
        "promotion_comparison": tag_text(event["comparison"]),
    }.items():
        client.set_model_version_tag(name, v, key, value)
    if champion is not None:
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
        client.set_model_version_tag(name, champion.version, "demoted_at", event["at"])
        client.set_model_version_tag(name, champion.version, "superseded_by", v)
    client.set_registered_model_alias(name, CHAMPION, v)
    if _aliases(client, name).get(CHALLENGER) == v:
        client.delete_registered_model_alias(name, CHALLENGER)  # the challenger has become the champion
    _append_history(client, name, {k: event[k] for k in ("event", "version", "from", "by", "at", "reason", "forced")})


@registry_errors
def check_review(params: Params, name: str, candidate: Any) -> None:
    """With `register.promote.require_review`, refuse a version no clinical reviewer signed off.

    Raises:
        GateError: the version's `review.status` tag is not `passed`.
    """
    status = (candidate.tags or {}).get(REVIEW_STATUS_TAG)
    if params.register_.promote.require_review and status != "passed":
        raise GateError(
            f"{name} version {candidate.version} not promoted: no clinical review sign-off ({REVIEW_STATUS_TAG} is "
            f"{status or 'absent'}); review it in `fracture review serve` and attach with `fracture review summary`"
        )


def _gate_tags(client: Any, version: Any) -> dict[str, str]:
    """A version's tags, headline numbers at full precision from its run's metrics (registry.gate.exact_gate_tags)."""
    try:
        metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    except Exception as err:  # a deleted run: the tags alone (4 significant digits) are what is left
        log.warning("version %s: run %s unreadable (%s); gating on its rounded tags", version.version,
                    version.run_id, first_line(err))  # fmt: skip
        metrics = {}
    return exact_gate_tags(version.tags, metrics)


def run_promote(
    params: Params,
    name: str | None,
    version: int | None = None,
    alias: str = "challenger",
    dry_run: bool = False,
    force: bool = False,
    reason: str | None = None,
    infra: Any | None = None,
    allow_different_test_set: bool = False,
) -> dict:
    """Move `champion` to the candidate when it passes the gate against the current champion and infra validation.

    The two are compared on the same test set only, paired (registry.compare); the comparison is recorded on the
    candidate as `comparison.*` tags (not in a dry run), also when the gate refuses.

    Args:
        params: resolved params (`register.promote` gates, default model name).
        name: registered model name (default: params).
        version: the candidate version; when None, the version holding `alias`.
        alias: alias of the candidate when no version is given.
        dry_run: compare and log, change nothing.
        force: promote although the gate failed (needs reason).
        reason: why (recorded on the version, required with force and with allow_different_test_set).
        infra: a `fracture.infravalidate.version.InfraData` (manifest, data root): serve the candidate and replay
            its evaluation before the alias moves (`fracture promote` always passes one); None skips the check.
        allow_different_test_set: compare although the champion was evaluated on another test set (unpaired).

    Returns:
        {"name", "candidate_version", "champion_version", "passed", "promoted", "dry_run", "forced", "comparison",
        "infra_validation" (the result, or None when not run)}.

    Raises:
        AccessError: the user may not move `champion` (401 / 403; checked before anything changes).
        GateError: the candidate fails the gate and force was not given (also in a dry run, exit 1).
        InputError: unknown model, version or alias, force / allow_different_test_set without reason, or a
            candidate that fails `fracture.registry.verify` (a pickled pyfunc, foreign model code, weights that do
            not match).
    """
    name = name or params.registered_model_name
    check_force(force, reason)
    check_allow_different(allow_different_test_set, reason)
    client = mlflow_client()
    candidate = _candidate(client, name, version, alias)
    check_review(params, name, candidate)
    check_version_plan(candidate.tags, params, candidate.version)
    by = None if dry_run else _reviewer(name, f"move {CHAMPION!r} of")
    _verify_candidate(name, candidate.version)
    champ_v = _aliases(client, name).get(CHAMPION)
    champion = client.get_model_version(name, champ_v) if champ_v else None
    record = {"name": name, "candidate_version": int(candidate.version), "dry_run": dry_run, "promoted": False}
    record["champion_version"] = int(champ_v) if champ_v else None
    if champion is not None and champion.version == candidate.version:
        log.info("%s version %s is already the champion; nothing to do", name, candidate.version)
        return {**record, "passed": True, "forced": False, "comparison": None}
    cmp = _registry_gate(params, client, name, (candidate, champion), dry_run, allow_different_test_set, reason)
    record.update(passed=cmp["passed"], forced=not cmp["passed"] and force, comparison=cmp)
    if not cmp["passed"] and not force:
        raise GateError(f"{name} version {candidate.version} not promoted: {'; '.join(cmp['reasons'])}")
    record["infra_validation"] = _infra_gate(params, client, name, candidate, infra, dry_run, force)
    record["forced"] = record["forced"] or not (record["infra_validation"] or {"passed": True})["passed"]
    if dry_run:
        log.info("dry run: would move %s of %s to version %s; nothing changed", CHAMPION, name, candidate.version)
        return record
    event = {"event": "promote", "version": candidate.version, "from": champ_v, "by": by, "at": now_iso()}
    event |= {"reason": reason, "forced": record["forced"], "comparison": cmp}
    _apply_promotion(client, name, candidate, champion, event)
    log.info("%s: %s -> version %s (previous: %s)", name, CHAMPION, candidate.version, champ_v or "none")
    return {**record, "promoted": True, "promoted_by": event["by"], "promoted_at": event["at"]}


def _registry_gate(
    params: Params,
    client: Any,
    name: str,
    versions: tuple[Any, Any | None],
    dry_run: bool,
    allow_different_test_set: bool,
    reason: str | None,
) -> dict:
    """The candidate against the champion (registry.gate), logged, and recorded on the candidate unless a dry run."""
    candidate, champion = versions
    evidence = gather_evidence(client, candidate, champion, params, allow_different_test_set, reason)
    cand_tags, champ_tags = _gate_tags(client, candidate), _gate_tags(client, champion) if champion else None
    numbers = (candidate.version, champion.version if champion else None)
    cmp = compare_versions(cand_tags, champ_tags, params.register_.promote, numbers, evidence)
    log.info("promotion gate for %s:\n%s", name, MultiLine(format_comparison(cmp)))
    if not dry_run:
        record_comparison(client, name, candidate, comparison_tags(evidence, cmp, now_iso()))
    return cmp


def _infra_gate(
    params: Params, client: Any, name: str, candidate: Any, infra: Any | None, dry_run: bool, force: bool
) -> dict | None:
    """Infra validation of the candidate (None when `infra` is None); a failure raises unless forced.

    Raises:
        GateError: the candidate failed infra validation and force was not given.
    """
    if infra is None:
        log.warning("%s version %s: infra validation not requested; promoting on the registry gate alone", name,
                    candidate.version)  # fmt: skip
        return None
    from fracture.infravalidate.version import infra_gate

    result = infra_gate(params, client, name, candidate, infra, record=not dry_run, at=now_iso())
    if not result["passed"] and not force:
        why = "; ".join(result["reasons"])
        raise GateError(f"{name} version {candidate.version} not promoted: infra validation failed: {why}")
    if not result["passed"]:
        log.warning("infra validation failed; promoting anyway (--force; the reason is recorded on the version)")
    return result


@registry_errors
def run_rollback(params: Params, name: str | None) -> dict:
    """Point `champion` back at `previous-champion`; the demoted version is tagged `rolled_back_at`.

    Returns:
        {"name", "champion_version" (restored), "rolled_back_version"}.

    Raises:
        AccessError: the user may not move `champion` (401 / 403; checked before anything changes).
        InputError: no champion, or no previous champion to return to.
    """
    name = name or params.registered_model_name
    client = mlflow_client()
    aliases = _aliases(client, name)
    if CHAMPION not in aliases:
        raise InputError(f"registered model {name!r} has no {CHAMPION}; nothing to roll back")
    if PREVIOUS not in aliases:
        raise InputError(f"registered model {name!r} has no {PREVIOUS} to roll back to")
    by = _reviewer(name, f"roll back {CHAMPION!r} of")
    current, previous, at = aliases[CHAMPION], aliases[PREVIOUS], now_iso()
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.delete_registered_model_alias(name, PREVIOUS)  # a second rollback must not bring the bad model back
    for key, value in {"rolled_back_at": at, "rolled_back_by": by, "rolled_back_to": previous}.items():
        client.set_model_version_tag(name, current, key, value)
    client.set_model_version_tag(name, previous, "restored_at", at)
    _append_history(client, name, {"event": "rollback", "version": previous, "from": current, "by": by, "at": at})
    log.info("%s: %s rolled back from version %s to version %s", name, CHAMPION, current, previous)
    return {"name": name, "champion_version": int(previous), "rolled_back_version": int(current)}
