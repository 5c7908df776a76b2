"""The access guard's decisions (pure: path and request arguments in) and the shared vocabulary."""

from __future__ import annotations

import pytest

from fracture.access.guard import foreign_by_tag, review_write, watched
from fracture.access.identity import Identity, whoami
from fracture.access.names import PROTECTED_ALIASES, at_least, is_review_tag
from fracture.registry.names import CHALLENGER, CHAMPION, PREVIOUS

REST, AJAX = "/api/2.0/mlflow", "/ajax-api/2.0/mlflow"


def test_the_guard_protects_the_registrys_own_alias_names():
    assert {CHAMPION, PREVIOUS} == PROTECTED_ALIASES and CHALLENGER not in PROTECTED_ALIASES


@pytest.mark.parametrize("prefix", [REST, AJAX])
def test_moving_champion_or_previous_needs_a_reviewer(prefix):
    for alias in (CHAMPION, PREVIOUS):
        refusal = review_write(f"{prefix}/registered-models/alias", {"name": "m", "alias": alias, "version": "1"})
        assert refusal is not None and refusal.model == "m" and refusal.needed == "MANAGE"
        assert alias in refusal.what
    assert review_write(f"{prefix}/registered-models/alias", {"name": "m", "alias": CHALLENGER}) is None


def test_review_tags_renames_and_forged_versions_need_a_reviewer():
    assert review_write(f"{REST}/model-versions/set-tag", {"name": "m", "key": "promoted_by", "value": "x"})
    assert review_write(f"{REST}/model-versions/delete-tag", {"name": "m", "key": "rolled_back_at"})
    assert review_write(f"{REST}/registered-models/set-tag", {"name": "m", "key": "history.0003", "value": "{}"})
    assert review_write(f"{REST}/registered-models/rename", {"name": "m", "new_name": "n"})
    forged = {"name": "m", "tags": [{"key": "fingerprint", "value": "f"}, {"key": "promoted_at", "value": "now"}]}
    assert "promoted_at" in review_write(f"{REST}/model-versions/create", forged).what
    assert review_write(f"{REST}/model-versions/set-tag", {"name": "m", "key": "fingerprint", "value": "f"}) is None
    assert review_write(f"{REST}/model-versions/create", {"name": "m", "tags": [{"key": "gate.passed"}]}) is None
    assert review_write(f"{REST}/registered-models/get", {"name": "m"}) is None


def test_audit_by_tags_must_name_the_logged_in_user():
    create = {"name": "m", "tags": [{"key": "registered_by", "value": "alice"}]}
    assert foreign_by_tag(f"{REST}/model-versions/create", create, "alice") is None
    assert foreign_by_tag(f"{REST}/model-versions/create", create, "bob") == "tag registered_by='alice'"
    set_tag = {"name": "m", "version": "1", "key": "promoted_by", "value": "alice (unauthenticated)"}
    assert foreign_by_tag(f"{REST}/model-versions/set-tag", set_tag, "alice") is not None
    assert foreign_by_tag(f"{REST}/runs/set-tag", {"key": "registered_by", "value": "x"}, "alice") is None


def test_watched_paths_and_permission_order():
    assert watched(f"{AJAX}/registered-models/alias") and not watched(f"{REST}/runs/create")
    assert at_least("MANAGE", "EDIT") and at_least("EDIT", "EDIT") and not at_least("EDIT", "MANAGE")
    assert not at_least("DENY", "READ") and not at_least("READ", "EDIT")
    assert is_review_tag("history.0001") and not is_review_tag("registered_by")


def test_without_a_server_the_audit_name_says_unauthenticated(monkeypatch):
    monkeypatch.setenv("FRACTURE_USER", "alice")
    identity = whoami("sqlite:///tmp/mlflow.db")
    assert identity == Identity("alice", authenticated=False)
    assert identity.audit_name == "alice (unauthenticated)"
    assert Identity("bob", authenticated=True).audit_name == "bob"


@pytest.fixture
def users_endpoint():  # noqa: ANN201
    """A loopback HTTP server answering MLflow's users/current path with a chosen status and body."""
    import http.server
    import threading

    answer = {"status": 404, "body": b""}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(answer["status"])
            self.end_headers()
            self.wfile.write(answer["body"])

        def log_message(self, *args) -> None:  # noqa: ANN002 - quiet
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", answer
    server.shutdown()


def test_whoami_reads_the_servers_answer(users_endpoint, monkeypatch):
    from fracture.base.errors import AccessError

    url, answer = users_endpoint
    monkeypatch.setenv("FRACTURE_USER", "alice")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    assert whoami(url) == Identity("alice", authenticated=False)  # 404: a server without MLflow auth
    answer.update(status=200, body=b'{"user": {"id": 3, "username": "bob", "is_admin": false}}')
    assert whoami(url) == Identity("bob", authenticated=True)
    answer.update(status=200, body=b"<html>a proxy page</html>")
    assert whoami(url) == Identity("alice", authenticated=False)
    answer.update(status=401, body=b"")
    with pytest.raises(AccessError, match="^401 not authenticated: .* needs credentials"):
        whoami(url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "carol")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(AccessError, match="refused the credentials of 'carol'"):
        whoami(url)
