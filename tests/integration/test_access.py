"""Who may promote, against a real `mlflow server --app-name basic-auth` with fracture's guard on loopback.

Roles come from `run_setup_roles` (the `fracture registry setup-roles` command): `pipeline` registers, `reviewer`
promotes and rolls back, `reader` only reads. Each test uses its own registered model name.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fracture.access.roles import run_setup_roles
from fracture.base.errors import AccessError
from fracture.registry.aliases import run_promote, run_rollback
from fracture.registry.register import run_register
from tests.conftest import REPO
from tests.integration.conftest import AUTH_ADMIN, BIN

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def login(auth_server, monkeypatch):  # noqa: ANN001, ANN201
    """login(user) points MLflow at the auth server as `user` (None: no credentials at all)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("FRACTURE_USER", "mallory")  # a self-declared name the audit must not take

    def as_user(user: str | None) -> None:
        if user is None:
            monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
            monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
            return
        password = AUTH_ADMIN[1] if user == AUTH_ADMIN[0] else auth_server.users[user]
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)

    yield as_user
    mlflow.set_tracking_uri(None)


@pytest.fixture
def model_name(login, params) -> str:  # noqa: ANN001
    """A fresh registered model with the roles set up by the admin: pipeline -> `pipeline`, reviewer -> `reviewer`."""
    name = f"access-{uuid.uuid4().hex[:8]}"
    login(AUTH_ADMIN[0])
    record = run_setup_roles(params, name, ["pipeline"], ["reviewer"])
    assert record["permissions"] == {"pipeline": "EDIT", "reviewer": "MANAGE"}
    return name


def _state(name: str) -> dict:
    client = MlflowClient()
    rm = client.get_registered_model(name)
    versions = {mv.version: dict(mv.tags) for mv in client.search_model_versions(f"name = '{name}'")}
    return {"aliases": dict(rm.aliases), "tags": dict(rm.tags), "versions": versions}


def test_anonymous_access_is_refused(auth_server, login, params, make_candidate):
    login(None)
    with pytest.raises(MlflowException, match="401"):
        MlflowClient().search_registered_models()
    cand = make_candidate(seed=301)
    with pytest.raises(AccessError, match=r"^401 not authenticated: .*MLFLOW_TRACKING_USERNAME"):
        run_register(params, cand.model_dir, cand.eval_dir, name="anonymous-model")
    with pytest.raises(AccessError, match=r"^401"):
        run_promote(params, "anonymous-model")


def test_pipeline_registers_but_cannot_promote(login, model_name, params, make_candidate):
    cand = make_candidate(seed=302)
    login("pipeline")
    rec = run_register(params, cand.model_dir, cand.eval_dir, name=model_name)
    tags = MlflowClient().get_model_version(model_name, str(rec["version"])).tags
    assert rec["aliases"] == ["challenger"] and tags["registered_by"] == "pipeline"
    before = _state(model_name)
    with pytest.raises(AccessError) as err:
        run_promote(params, model_name, reason="self-promotion")
    assert str(err.value).startswith("403 permission denied: user 'pipeline' may not move 'champion'")
    assert "needs MANAGE (role fracture-reviewer), has EDIT" in str(err.value)
    client = MlflowClient()  # the server refuses the same moves made through the raw API
    with pytest.raises(MlflowException, match="may not move alias 'champion'"):
        client.set_registered_model_alias(model_name, "champion", str(rec["version"]))
    with pytest.raises(MlflowException, match="may not write the review tag 'promoted_by'"):
        client.set_model_version_tag(model_name, str(rec["version"]), "promoted_by", "pipeline")
    with pytest.raises(MlflowException, match="audit tag must name the logged-in user"):
        client.set_model_version_tag(model_name, str(rec["version"]), "registered_by", "reviewer")
    assert _state(model_name) == before


def test_reader_cannot_promote_and_gets_one_line(auth_server, login, model_name, params, make_candidate, tmp_path):
    cand = make_candidate(seed=303)
    login("pipeline")
    run_register(params, cand.model_dir, cand.eval_dir, name=model_name)
    login("reader")
    before = _state(model_name)
    assert run_promote(params, model_name, dry_run=True)["passed"]  # reading and comparing is allowed
    with pytest.raises(AccessError, match=r"^403 permission denied: user 'reader' may not move 'champion'"):
        run_promote(params, model_name, reason="not mine to move")
    env = {**os.environ, "MLFLOW_TRACKING_URI": auth_server.url}
    cmd = [
        str(BIN / "fracture"),
        "promote",
        "--name",
        model_name,
        "--reason",
        "cli",
        "--params",
        str(REPO / "params.yaml"),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "403 permission denied: user 'reader' may not move 'champion'" in lines[0]
    assert _state(model_name) == before


def test_reviewer_promotes_and_rolls_back_under_their_own_name(login, model_name, params, make_candidate):
    first, second = make_candidate(seed=304, auroc=0.85), make_candidate(seed=305, auroc=0.9)
    login("pipeline")
    v1 = run_register(params, first.model_dir, first.eval_dir, name=model_name)["version"]
    login("reviewer")
    assert run_promote(params, model_name, reason="first champion")["promoted_by"] == "reviewer"
    login("pipeline")
    v2 = run_register(params, second.model_dir, second.eval_dir, name=model_name)["version"]
    login("reviewer")
    run_promote(params, model_name, reason="better AUROC")
    client = MlflowClient()
    tags = client.get_model_version(model_name, str(v2)).tags
    assert tags["promoted_by"] == "reviewer" and tags["registered_by"] == "pipeline"
    assert run_rollback(params, model_name)["champion_version"] == v1
    assert client.get_model_version(model_name, str(v2)).tags["rolled_back_by"] == "reviewer"
    history = [v for k, v in sorted(client.get_registered_model(model_name).tags.items()) if k.startswith("history.")]
    assert len(history) == 3 and all('"by":"reviewer"' in event for event in history)
    assert not any("mallory" in str(t) for t in _state(model_name)["versions"].values())


def test_setup_roles_takes_manage_from_a_pipeline_that_created_the_model(login, params, make_candidate):
    name = f"access-created-{uuid.uuid4().hex[:8]}"
    cand = make_candidate(seed=306)
    login("pipeline")
    run_register(params, cand.model_dir, cand.eval_dir, name=name)  # the creator gets MANAGE from MLflow
    login(AUTH_ADMIN[0])
    first = run_setup_roles(params, name, ["pipeline"], ["reviewer"])
    again = run_setup_roles(params, name, ["pipeline"], ["reviewer"])  # idempotent
    assert first["permissions"] == again["permissions"] == {"pipeline": "EDIT", "reviewer": "MANAGE"}
    login("pipeline")
    with pytest.raises(AccessError, match="403"):
        run_promote(params, name, reason="creator")
