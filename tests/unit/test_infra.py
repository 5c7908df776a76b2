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


def _pod_templates() -> list[tuple[str, dict]]:
    """(name, pod spec) of every workload the project's manifests define."""
    docs = _kustomize_documents(REPO / "infra" / "overlays" / "onprem")  # base + MinIO: every workload
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in docs if d["kind"] in WORKLOADS]


WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def test_every_pod_is_locked_down():
    pods = _pod_templates()
    assert {name for name, _ in pods} == {"mlflow", "mlflow-postgres", "minio"}
    for name, spec in pods:
        assert spec["automountServiceAccountToken"] is False, name
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] >= 10000, name
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["readOnlyRootFilesystem"] is True, name
            mounted = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounted, f"{name}: a read-only root needs a writable /tmp"
            assert container["livenessProbe"] and container["readinessProbe"], name


def test_mlflow_runs_basic_auth_with_the_guard_and_secrets_from_kubernetes():
    (spec,) = [s for n, s in _pod_templates() if n == "mlflow"]
    (container,) = spec["containers"]
    script = " ".join(container["args"])
    assert "--app-name basic-auth" in script and "fracture.access.guard:authenticate" in script
    assert "default_permission = READ" in script
    env = {e["name"]: e for e in container["env"]}
    for name, key in (
        ("MLFLOW_AUTH_ADMIN_PASSWORD", "admin_password"),
        ("MLFLOW_FLASK_SERVER_SECRET_KEY", "flask_secret_key"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "fracture-mlflow-server", "key": key}
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"].startswith("/tmp/")  # rendered into the writable emptyDir


def _policies() -> dict[str, dict]:
    docs = _kustomize_documents(REPO / "infra" / "overlays" / "onprem")
    return {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}


def test_network_policies_deny_by_default_and_name_every_client():
    policies = _policies()
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    (postgres,) = policies["postgres-from-mlflow"]["ingress"]
    assert postgres["from"] == [{"podSelector": {"matchLabels": {"app": "mlflow"}}}]
    mlflow_from = policies["mlflow-from-pipeline-ingress-serving"]["ingress"][0]["from"]
    minio_from = policies["minio-from-mlflow-pipeline-serving"]["ingress"][0]["from"]
    kfp = {"pipelines.kubeflow.org/v2_component": "true"}
    assert any(f.get("podSelector", {}).get("matchLabels") == kfp for f in mlflow_from + minio_from)
    assert {"podSelector": {"matchLabels": {"app": "mlflow"}}} in minio_from
    assert [p["port"] for p in policies["minio-from-mlflow-pipeline-serving"]["ingress"][0]["ports"]] == [9000]


def test_the_mlflow_ingress_is_tls_only():
    docs = _kustomize_documents(REPO / "infra" / "base")
    (ingress,) = [d for d in docs if d["kind"] == "Ingress"]
    hosts = {r["host"] for r in ingress["spec"]["rules"]}
    assert hosts <= {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"


def test_checkov_skips_carry_a_reason():
    for directory in ("base", "minio"):
        for doc in _kustomize_documents(REPO / "infra" / directory):
            for key, value in (doc["metadata"].get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    check, _, reason = value.partition("=")
                    assert check.startswith("CKV") and len(reason) > 30 and "=" not in reason, value


def test_kfp_task_pods_run_as_the_images_user_with_limits(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("kfp_pods", REPO / "infra" / "kfp" / "pods.py")
    pods = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pods)
    from tests.unit.kubeflow.test_pipeline_ir import STEPS

    written = pods.render(REPO / "params.yaml", tmp_path)
    assert sorted(p.name for p in written) == sorted([*(f"kfp-{step}.yaml" for step in STEPS), "trainjob-node.yaml"])
    (user,) = re.findall(r"^USER\s+(\d+):", _dockerfile(), flags=re.M)
    node = yaml.safe_load((tmp_path / "trainjob-node.yaml").read_text())  # the TrainJob launcher's node pods
    kubernetes_validate.validate(node, K8S_VERSION, strict=True)
    (container,) = node["spec"]["containers"]
    assert container["securityContext"]["runAsUser"] == int(user) and node["spec"]["securityContext"]["runAsNonRoot"]
    assert container["image"] and container["command"][:3] == ["python", "-m", "fracture.kubeflow.trainjob_node"]
    for path in written[:-1]:
        pod = yaml.safe_load(path.read_text())
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        (container,) = pod["spec"]["containers"]
        assert container["securityContext"] == {"runAsUser": int(user), "runAsGroup": int(user), "runAsNonRoot": True}
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), path.name


def test_compose_services_drop_capabilities_and_mlflow_authenticates():
    compose = yaml.safe_load((REPO / "infra/local/docker-compose.yaml").read_text())
    for name, service in compose["services"].items():
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"], name
        assert service["read_only"] is True, name
    mlflow = compose["services"]["mlflow"]
    assert "--app-name basic-auth" in " ".join(mlflow["command"])
    assert mlflow["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_AUTH_ADMIN_PASSWORD:?")


def test_the_kserve_predictor_is_locked_down_and_labelled_for_the_network_policies():
    from fracture.config import load_params
    from fracture.serving.deploy import render_inference_service

    manifest = render_inference_service(load_params(REPO / "params.yaml"), "m", "3", "f" * 64, False)
    assert manifest["metadata"]["labels"]["fracture.base.io/serving"] == "true"
    predictor = manifest["spec"]["predictor"]
    (container,) = predictor["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in predictor["volumes"]


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
