"""The tracking server's `authorization_function`: MLflow basic auth plus the promotion-only writes.

MLflow's basic-auth app calls the configured `authorization_function` for every request before it checks
MLflow's own per-resource permissions. This one authenticates with MLflow's basic auth, then refuses (403, a
JSON error naming the user and the write) what MLflow's EDIT permission would otherwise allow the pipeline:

- moving `champion` or `previous-champion`, writing or deleting the promotion / rollback audit tags, or renaming
  a registered model, without MANAGE on that registered model;
- an audit `*_by` tag (`registered_by`, `promoted_by`, `rolled_back_by`) that names anyone but the authenticated
  user, so the audit trail names who was logged in.

Everything else falls through to MLflow's own checks. Admins pass (they hold every permission anyway).
Configure it in the basic-auth ini (`authorization_function = fracture.access.guard:authenticate`), which
`mlflow server --app-name basic-auth` reads from `MLFLOW_AUTH_CONFIG_PATH`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fracture.access.names import BY_TAGS, PROTECTED_ALIASES, REVIEW_PERMISSION, at_least, is_review_tag

log = logging.getLogger(__name__)

_ALIAS = "/mlflow/registered-models/alias"
_VERSION_SET_TAG, _VERSION_DELETE_TAG = "/mlflow/model-versions/set-tag", "/mlflow/model-versions/delete-tag"
_MODEL_SET_TAG, _MODEL_DELETE_TAG = "/mlflow/registered-models/set-tag", "/mlflow/registered-models/delete-tag"
_RENAME, _CREATE_VERSION = "/mlflow/registered-models/rename", "/mlflow/model-versions/create"
_WATCHED = (_ALIAS, _VERSION_SET_TAG, _VERSION_DELETE_TAG, _MODEL_SET_TAG, _MODEL_DELETE_TAG, _RENAME, _CREATE_VERSION)


@dataclass(frozen=True)
class Refusal:
    """A write the guard refuses unless the user holds `needed` on registered model `model`."""

    model: str
    what: str
    needed: str = REVIEW_PERMISSION


def watched(path: str) -> bool:
    """Whether `path` is a registry write the guard looks at (REST and the UI's ajax prefix alike)."""
    return path.rstrip("/").endswith(_WATCHED)


def _tags(args: dict) -> list[tuple[str, str]]:
    tags = args.get("tags") or []
    return [(str(t.get("key", "")), str(t.get("value", ""))) for t in tags if isinstance(t, dict)]


def review_write(path: str, args: dict) -> Refusal | None:
    """The promotion-only write this request makes, if any (pure: path and request arguments in).

    Args:
        path: the request path (`/api/2.0/mlflow/...` or `/ajax-api/2.0/mlflow/...`).
        args: the request's parameters (JSON body, or query string for GET / DELETE without a body).
    """
    path, name = path.rstrip("/"), str(args.get("name", ""))
    if path.endswith(_ALIAS) and args.get("alias") in PROTECTED_ALIASES:
        return Refusal(name, f"move alias {args['alias']!r} of")
    if path.endswith((_VERSION_SET_TAG, _VERSION_DELETE_TAG, _MODEL_SET_TAG, _MODEL_DELETE_TAG)):
        key = str(args.get("key", ""))
        return Refusal(name, f"write the review tag {key!r} on") if is_review_tag(key) else None
    if path.endswith(_RENAME):
        return Refusal(name, "rename")
    if path.endswith(_CREATE_VERSION):
        keys = sorted(k for k, _ in _tags(args) if is_review_tag(k))
        return Refusal(name, f"create a version with review tags {keys} on") if keys else None
    return None


def foreign_by_tag(path: str, args: dict, username: str) -> str | None:
    """The audit `*_by` tag in this request that names someone other than `username`, if any."""
    path = path.rstrip("/")
    if path.endswith(_VERSION_SET_TAG):
        pairs = [(str(args.get("key", "")), str(args.get("value", "")))]
    elif path.endswith(_CREATE_VERSION):
        pairs = _tags(args)
    else:
        return None
    for key, value in pairs:
        if key in BY_TAGS and value != username:
            return f"tag {key}={value!r}"
    return None


def _request_args(request: Any) -> dict | None:
    """The request's parameters as MLflow's handlers read them; None when a body was expected but unreadable."""
    if request.method == "GET" or (request.method == "DELETE" and not request.is_json):
        return dict(request.args)
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else None


def _forbidden(message: str) -> Any:
    from flask import jsonify, make_response

    log.warning("refused: %s", message)
    return make_response(jsonify({"error_code": "PERMISSION_DENIED", "message": message}), 403)


def check_request(request: Any, username: str) -> Any | None:
    """A 403 response for a refused registry write by `username`, else None (MLflow's own checks follow)."""
    from mlflow.server import auth as mlflow_auth

    if not watched(request.path) or mlflow_auth.store.get_user(username).is_admin:
        return None
    args = _request_args(request)
    if args is None:  # fail closed: a watched write whose arguments cannot be read
        return _forbidden(f"user {username!r}: {request.method} {request.path} without a readable JSON body")
    refusal = review_write(request.path, args)
    if refusal is not None:
        # The same resolver MLflow's runtime checks and its get_user_permission endpoint use.
        held = mlflow_auth._resolve_user_permission_for_resource(username, "registered_model", refusal.model).name
        if not at_least(held, refusal.needed):
            return _forbidden(
                f"user {username!r} may not {refusal.what} registered model {refusal.model!r}: "
                f"needs {refusal.needed} (a reviewer), has {held}"
            )
    foreign = foreign_by_tag(request.path, args, username)
    if foreign is not None:
        return _forbidden(f"user {username!r} may not record {foreign}: an audit tag must name the logged-in user")
    return None


def authenticate() -> Any:
    """MLflow basic auth, then the guard; the decision is kept for the request (MLflow calls this repeatedly).

    Returns:
        MLflow's `Authorization` when the request may go on, else a 401 / 403 response.
    """
    from flask import g, request
    from mlflow.server.auth import authenticate_request_basic_auth

    if "fracture_guard" in g:
        return g.fracture_guard
    result = authenticate_request_basic_auth()
    if not hasattr(result, "username"):  # a 401 response: no or wrong credentials
        return result
    refused = check_request(request, result.username)
    g.fracture_guard = refused if refused is not None else result
    return g.fracture_guard
