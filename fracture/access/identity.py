"""The client side of access: who the tracking server says we are, and whether we may make a registry change.

Credentials come from the environment as MLflow reads them: `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`
(or `MLFLOW_TRACKING_TOKEN`, or `~/.mlflow/credentials`). The audit's "who" is the user the server authenticated;
on a server without authentication (a local sqlite store, a test server) it is `$FRACTURE_USER` or the login name,
marked `(unauthenticated)` so nobody mistakes it for a checked identity.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

from fracture.access.names import PIPELINE_ROLE, REVIEWER_ROLE, at_least
from fracture.base.errors import AccessError
from fracture.tracking import redact

# MLflow basic-auth REST endpoints (mlflow.server.auth.routes), called directly: importing mlflow.server's client
# loads the whole server app, warnings included, into every `fracture promote`.
CURRENT_USER_ENDPOINT = "/api/2.0/mlflow/users/current"
USER_PERMISSION_ENDPOINT = "/api/3.0/mlflow/users/permissions/get"
ROLE_FOR = {"MANAGE": REVIEWER_ROLE, "EDIT": PIPELINE_ROLE}


@dataclass(frozen=True)
class Identity:
    """The user registry changes are made as."""

    name: str
    authenticated: bool
    is_admin: bool = False

    @property
    def audit_name(self) -> str:
        """The value of the audit `*_by` tags."""
        return self.name if self.authenticated else f"{self.name} (unauthenticated)"


def local_user() -> str:
    """`FRACTURE_USER`, else the login name, else "unknown" (no passwd entry in some containers)."""
    try:
        return os.environ.get("FRACTURE_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def claimed_user() -> str:
    """The user name in the environment's MLflow credentials, for messages ("anonymous" without one)."""
    from mlflow.utils.credentials import read_mlflow_creds

    return read_mlflow_creds().username or ("token holder" if os.environ.get("MLFLOW_TRACKING_TOKEN") else "anonymous")


def whoami(uri: str) -> Identity:
    """The authenticated user on the tracking server at `uri`.

    Returns:
        The server's user when it runs MLflow authentication; a local, unauthenticated identity for a
        non-HTTP store or a server without authentication (its users endpoint answers 404).

    Raises:
        AccessError: the server refused the credentials (401), naming the user that was tried.
    """
    if not uri.startswith(("http://", "https://")):
        return Identity(local_user(), authenticated=False)
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    resp = http_request(get_default_host_creds(uri), CURRENT_USER_ENDPOINT, "GET", max_retries=0, timeout=30)
    if resp.status_code == 404:
        return Identity(local_user(), authenticated=False)
    if resp.status_code == 401:
        raise AccessError(unauthenticated_message(uri))
    resp.raise_for_status()
    try:
        user = resp.json()["user"]
        return Identity(str(user["username"]), authenticated=True, is_admin=bool(user.get("is_admin")))
    except (ValueError, KeyError, TypeError):  # something else answers that path (a proxy page): no MLflow auth
        return Identity(local_user(), authenticated=False)


def unauthenticated_message(uri: str) -> str:
    """The one line for a 401: which user was tried (or none) and how to log in."""
    who = claimed_user()
    if who == "anonymous":
        return (
            f"401 not authenticated: MLflow at {redact(uri)} needs credentials; set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
        )
    return f"401 not authenticated: MLflow at {redact(uri)} refused the credentials of {who!r}"


def require_permission(uri: str, model: str, needed: str, action: str) -> Identity:
    """Check before a change that the authenticated user holds `needed` on registered model `model`.

    Nothing is checked on a server without authentication (it enforces nothing either). The model must exist:
    for a new one, creating it is MLflow's own check.

    Args:
        uri: the tracking URI.
        model: the registered model's name.
        needed: the MLflow permission the change needs (`EDIT`, `MANAGE`).
        action: what is refused, for the message ("move 'champion' of").

    Returns:
        The identity the change will be made as.

    Raises:
        AccessError: 401 (no or wrong credentials) or 403 (the user lacks `needed`), one line naming who and what.
    """
    identity = whoami(uri)
    if not identity.authenticated or identity.is_admin:
        return identity
    held = _permission(uri, identity.name, model)
    if not at_least(held, needed):
        role = ROLE_FOR.get(needed, needed)
        raise AccessError(
            f"403 permission denied: user {identity.name!r} may not {action} registered model {model!r} on "
            f"{redact(uri)}: needs {needed} (role {role}), has {held}; nothing was changed"
        )
    return identity


def _permission(uri: str, user: str, model: str) -> str:
    """`user`'s effective MLflow permission on registered model `model`, as the server resolves it."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    params = {"username": user, "resource_type": "registered_model", "resource_id": model}
    resp = http_request(
        get_default_host_creds(uri), USER_PERMISSION_ENDPOINT, "GET", max_retries=0, timeout=30, params=params
    )
    resp.raise_for_status()
    return str(resp.json()["permission"])


def forbidden_message(uri: str, detail: str) -> str:
    """The one line for a 403 the server returned mid-command: who was refused, and the server's reason."""
    return f"403 permission denied: MLflow at {redact(uri)} refused user {claimed_user()!r}: {detail}"
