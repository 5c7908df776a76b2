"""Static checks of the container image definition and the Kubernetes / compose manifests."""

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.31.0"


def _dockerfile() -> str:
    return (REPO / "docker" / "Dockerfile").read_text()


def test_dockerfile_base_image_is_pinned():
    (base,) = re.findall(r"^FROM\s+(\S+)", _dockerfile(), flags=re.M)
    name, _, tag = base.partition(":")
    assert tag and tag != "latest", base
    assert re.search(r"\d+\.\d+\.\d+", tag), f"base tag must name an exact release: {base}"


def test_dockerfile_runs_as_non_root():
    users = re.findall(r"^USER\s+(\S+)", _dockerfile(), flags=re.M)
    assert users, "no USER instruction"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_installs_from_the_lock_file_and_bakes_in_no_secrets():
    text = _dockerfile()
    assert re.search(r"pip install -r requirements\.lock", text)
    assert "--no-deps ." in text  # the package itself adds no unpinned dependency
    for forbidden in ("AWS_SECRET", "MLFLOW_TRACKING_TOKEN", "COPY data", "COPY . ", "ADD http"):
        assert forbidden not in text


def test_dockerignore_keeps_data_and_credentials_out():
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in ("data/", "models/", ".dvc/config.local", ".env", "mlflow.db", ".git"):
        assert entry in ignored


def _kustomize_documents(directory: Path) -> list[dict]:
    """Every resource a kustomization pulls in, recursively (a kustomize build without the binary)."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs = []
    for resource in kust.get("resources", []):
        path = (directory / resource).resolve()
        docs += _kustomize_documents(path) if path.is_dir() else list(yaml.safe_load_all(path.read_text()))
    for patch in kust.get("patches", []):
        assert (directory / patch["path"]).exists()
    return [d for d in docs if d]


@pytest.mark.parametrize("overlay", ["base", "minio", "overlays/cloud", "overlays/onprem", "trainer"])
def test_manifests_validate_against_kubernetes_schemas(overlay):
    docs = _kustomize_documents(REPO / "infra" / overlay)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_secret_templates_validate_and_hold_no_values():
    docs = list(yaml.safe_load_all((REPO / "infra/base/secrets.example.yaml").read_text()))
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        for value in doc["stringData"].values():
            assert value.startswith(("<", "http://mlflow.fracture.svc"))


def test_compose_file_has_the_local_stack_on_loopback_only():
    compose = yaml.safe_load((REPO / "infra/local/docker-compose.yaml").read_text())
    assert {"postgres", "minio", "mlflow"} <= set(compose["services"])
    for service in compose["services"].values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


def test_trainer_install_pins_the_version_the_trainjob_schema_was_taken_from():
    pinned = re.findall(r"TRAINER_VERSION=(v\d+\.\d+\.\d+)", (REPO / "infra/trainer/README.md").read_text())
    vendored = re.findall(r"release: `(v\d+\.\d+\.\d+)`", (REPO / "tests/data/trainer/README.md").read_text())
    assert pinned and pinned == vendored


def test_trainjob_launcher_role_allows_what_the_launcher_calls():
    role = next(d for d in _kustomize_documents(REPO / "infra/trainer") if d["kind"] == "Role")
    granted = {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    needed = {("trainer.kubeflow.org", "trainjobs", v) for v in ("create", "get", "delete")}
    assert needed | {("", "pods", "list"), ("", "pods/log", "get")} <= granted
