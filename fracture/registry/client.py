"""The MLflow client and the values every registry write shares: errors, tag text, time and user."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from fracture.base.errors import AccessError, InputError
from fracture.tracking import redact, tracking_uri

MAX_TAG_CHARS = 8000
_ENDPOINT_RE = re.compile(r"endpoint (\S+) failed with error code 403")

F = TypeVar("F", bound=Callable[..., Any])


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second (the `*_at` tags)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def current_user() -> str:
    """The `*_by` tags' value: the user the tracking server authenticated, else the local user marked unauthenticated.

    Raises:
        AccessError: the server refused the environment's credentials (401).
    """
    from fracture.access.identity import whoami

    return whoami(tracking_uri()).audit_name


def mlflow_client() -> Any:
    """An MlflowClient on the explicitly resolved tracking URI (also set globally for log_model)."""
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def first_line(err: BaseException, limit: int = 400) -> str:
    """The first non-blank line of an error's message, redacted and cut to `limit` characters."""
    text = getattr(err, "message", None) or str(err) or type(err).__name__
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return redact(lines[0] if lines else type(err).__name__)[:limit]


def registry_errors(fn: F) -> F:
    """Turn MLflow / connection errors into InputError naming the tracking server (no traceback, no secrets)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from mlflow.exceptions import MlflowException
        from requests.exceptions import RequestException

        try:
            return fn(*args, **kwargs)
        except MlflowException as err:
            raise access_error(err) or InputError(
                f"MLflow registry at {redact(tracking_uri())}: {first_line(err)}"
            ) from None
        except RequestException as err:
            raise InputError(f"MLflow registry at {redact(tracking_uri())}: {first_line(err)}") from None

    return wrapper  # type: ignore[return-value]


def access_error(err: BaseException) -> AccessError | None:
    """A 401 / 403 from the tracking server as one line naming the user and the refused request, else None."""
    from fracture.access.identity import forbidden_message, unauthenticated_message

    code, text = getattr(err, "error_code", None), first_line(err)
    if code == "UNAUTHENTICATED" or "error code 401" in text:
        return AccessError(unauthenticated_message(tracking_uri()))
    if code == "PERMISSION_DENIED" or "error code 403" in text:
        endpoint = _ENDPOINT_RE.search(text)
        return AccessError(forbidden_message(tracking_uri(), f"no permission for {endpoint[1]}" if endpoint else text))
    return None


def tag_text(value: Any) -> str:
    """A tag value: strings as they are, anything else as compact JSON; cut to MAX_TAG_CHARS."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    return text[:MAX_TAG_CHARS]
