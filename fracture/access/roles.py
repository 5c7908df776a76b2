"""`fracture registry setup-roles`: the project's roles on an MLflow basic-auth server, set up idempotently.

- `fracture-pipeline`: workspace USE, EDIT on the train experiment and on the registered model; it logs runs,
  registers versions and moves `challenger`.
- `fracture-reviewer`: MANAGE on the registered model; moves `champion`, rolls back, writes the promotion audit.
- everyone else: the server's `default_permission = READ`; reads.

EDIT on a registered model would also let the pipeline move `champion`; the server's guard
(`fracture.access.guard`) keeps that, and the promotion audit tags, to MANAGE. The command runs as an MLflow
admin, creates the registered model and the experiment when missing (so the pipeline never becomes their
creator, which MLflow rewards with MANAGE) and removes a direct MANAGE grant a pipeline user holds on the model.
"""

from __future__ import annotations

import logging
from typing import Any

from fracture.access.identity import whoami
from fracture.access.names import PIPELINE_ROLE, REVIEW_PERMISSION, REVIEWER_ROLE, at_least
from fracture.base.errors import AccessError, InputError
from fracture.config import Params
from fracture.registry.client import mlflow_client, registry_errors
from fracture.tracking import redact, tracking_uri

log = logging.getLogger(__name__)

WORKSPACE = "default"  # MLflow's workspace when workspaces are off


def role_grants(model: str, experiment_id: str) -> dict[str, list[tuple[str, str, str]]]:
    """Each role's grants as (resource type, resource pattern, permission)."""
    return {
        PIPELINE_ROLE: [
            ("workspace", "*", "USE"),
            ("experiment", experiment_id, "EDIT"),
            ("registered_model", model, "EDIT"),
        ],
        REVIEWER_ROLE: [("registered_model", model, REVIEW_PERMISSION)],
    }


def _ensure_resources(client: Any, model: str, experiment: str) -> str:
    """Create the registered model and the experiment as the admin when missing; returns the experiment id."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model)
    except MlflowException:
        client.create_registered_model(model, description="Wrist fracture classifier (fracture-mlops).")
        log.info("created registered model %s", model)
    exp = client.get_experiment_by_name(experiment)
    return exp.experiment_id if exp is not None else client.create_experiment(experiment)


def _ensure_role(auth: Any, name: str, grants: list[tuple[str, str, str]]) -> Any:
    """The role `name` with exactly these grants on their resources (added or updated, never duplicated)."""
    role = next((r for r in auth.list_roles(WORKSPACE) if r.name == name), None)
    if role is None:
        role = auth.create_role(WORKSPACE, name, description="fracture-mlops (fracture registry setup-roles)")
    have = {(p.resource_type, p.resource_pattern): p for p in auth.list_role_permissions(role.id)}
    for rtype, pattern, permission in grants:
        current = have.get((rtype, pattern))
        if current is None:
            auth.add_role_permission(role.id, rtype, pattern, permission)
        elif current.permission != permission:
            auth.update_role_permission(current.id, permission)
    return role


def _check_users(auth: Any, users: list[str]) -> None:
    from mlflow.exceptions import MlflowException

    missing = []
    for user in users:
        try:
            auth.get_user(user)
        except MlflowException:
            missing.append(user)
    if missing:
        raise InputError(
            f"no such MLflow user(s) {missing} on {redact(tracking_uri())}: create them first "
            "(mlflow.server.get_app_client('basic-auth', URI).create_user(NAME, PASSWORD))"
        )


def _assign(auth: Any, role: Any, users: list[str]) -> None:
    for user in users:
        if all(r.id != role.id for r in auth.list_user_roles(user)):
            auth.assign_role(user, role.id)
            log.info("assigned %s to role %s", user, role.name)


def _permission(auth: Any, user: str, model: str) -> str:
    return auth.get_user_permission(user, "registered_model", model).permission


def _drop_pipeline_manage(auth: Any, users: list[str], model: str) -> None:
    """A pipeline user must not hold MANAGE on the model (MLflow grants it to whoever created the model)."""
    from mlflow.exceptions import MlflowException

    for user in users:
        if at_least(_permission(auth, user, model), REVIEW_PERMISSION):
            try:
                auth.revoke_user_permission(user, "registered_model", model)
            except MlflowException:
                pass  # no direct grant: the MANAGE comes from another role, reported below
            if at_least(_permission(auth, user, model), REVIEW_PERMISSION):
                raise InputError(
                    f"pipeline user {user!r} still holds MANAGE on {model!r} (an admin, a reviewer, or another "
                    "role): give the pipeline a user of its own"
                )


@registry_errors
def run_setup_roles(params: Params, name: str | None, pipeline_users: list[str], reviewers: list[str]) -> dict:
    """Set up the pipeline and reviewer roles on the tracking server and assign the users to them.

    Args:
        params: resolved params (`register.model_name`, `train.experiment`).
        name: registered model name (default: params).
        pipeline_users: MLflow users the pipeline runs as (they log runs and register versions).
        reviewers: MLflow users who may promote and roll back.

    Returns:
        {"tracking_uri", "model", "experiment_id", "roles": {role: grants}, "permissions": {user: permission}}.

    Raises:
        AccessError: not logged in as an MLflow admin. InputError: not an HTTP tracking server, unknown users,
            or a user in both roles.
    """
    from mlflow.server import get_app_client

    uri, model = tracking_uri(), name or params.registered_model_name
    if not uri.startswith(("http://", "https://")):
        raise InputError(f"MLFLOW_TRACKING_URI={redact(uri)}: roles need an MLflow server with --app-name basic-auth")
    identity = whoami(uri)
    if not (identity.authenticated and identity.is_admin):
        raise AccessError(f"403 permission denied: setup-roles needs an MLflow admin, not {identity.audit_name!r}")
    if set(pipeline_users) & set(reviewers):
        raise InputError(f"users {sorted(set(pipeline_users) & set(reviewers))} cannot be pipeline and reviewer")
    auth = get_app_client("basic-auth", tracking_uri=uri)
    _check_users(auth, [*pipeline_users, *reviewers])
    experiment_id = _ensure_resources(mlflow_client(), model, params.train.experiment)
    grants = role_grants(model, experiment_id)
    for role_name, users in ((PIPELINE_ROLE, pipeline_users), (REVIEWER_ROLE, reviewers)):
        _assign(auth, _ensure_role(auth, role_name, grants[role_name]), users)
    _drop_pipeline_manage(auth, pipeline_users, model)
    permissions = {user: _permission(auth, user, model) for user in [*pipeline_users, *reviewers]}
    log.info("roles on %s for %s: %s", redact(uri), model, permissions)
    return {"tracking_uri": redact(uri), "model": model, "experiment_id": experiment_id,
            "roles": grants, "permissions": permissions}  # fmt: skip
