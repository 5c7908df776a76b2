"""`fracture deploy` manifests against the published KServe InferenceService schema (vendored, v0.20.0)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from fracture.config import load_params
from fracture.serving.deploy import CONTAINER_NAME, render_inference_service

REPO = Path(__file__).resolve().parents[3]
SCHEMA_PATH = REPO / "tests" / "data" / "kserve" / "inferenceservice-v1beta1.schema.json.gz"
EXAMPLE = REPO / "infra" / "kserve" / "inferenceservice.example.yaml"


@pytest.fixture(scope="module")
def schema() -> dict:
    data = json.loads(gzip.decompress(SCHEMA_PATH.read_bytes()))
    assert data["kserve_version"] == "v0.20.0" and data["version"] == "v1beta1"
    return data["openAPIV3Schema"]


def unknown_fields(obj: object, schema: dict, path: str = "") -> list[str]:
    """Fields the schema does not define (what `kubectl apply --validate=strict` refuses)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(obj, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        if props is None:
            return (
                [p for k, v in obj.items() for p in unknown_fields(v, extra, f"{path}.{k}")]
                if isinstance(extra, dict)
                else []
            )
        return [
            p
            for k, v in obj.items()
            for p in ([f"{path}.{k}"] if k not in props else unknown_fields(v, props[k], f"{path}.{k}"))
        ]
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [p for i, v in enumerate(obj) for p in unknown_fields(v, schema["items"], f"{path}[{i}]")]
    return []


def validate(manifest: dict, schema: dict) -> None:
    jsonschema.validate(manifest, schema)
    assert unknown_fields(manifest, schema) == []


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/production.yaml"])
@pytest.mark.parametrize("canary", [True, False])
def test_rendered_inference_service_validates(schema, params_file, canary):
    params = load_params(REPO / params_file)
    manifest = render_inference_service(params, "fracture-swin", "7", "f" * 64, canary)
    validate(manifest, schema)
    predictor = manifest["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == CONTAINER_NAME and "models:/fracture-swin/7" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ping"
    assert ("canaryTrafficPercent" in predictor) is canary
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"] == "fracture-s3" and env["MLFLOW_TRACKING_URI"] == "fracture-mlflow"
    assert all("value" not in e for e in container["env"])  # credentials only by reference to a Secret


def test_the_validation_catches_misspelled_fields_and_wrong_types(schema):
    manifest = render_inference_service(load_params(REPO / "params.yaml"), "m", "1", "x", True)
    misspelled = json.loads(json.dumps(manifest))
    misspelled["spec"]["predictor"]["canaryTrafficPercentage"] = 10
    misspelled["spec"]["predictor"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/ping"
    assert sorted(unknown_fields(misspelled, schema)) == [
        ".spec.predictor.canaryTrafficPercentage",
        ".spec.predictor.containers[0].readinessProbe.httpGet.pathh",
    ]
    wrong_type = json.loads(json.dumps(manifest))
    wrong_type["spec"]["predictor"]["canaryTrafficPercent"] = "10"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong_type, schema)


def test_the_example_in_infra_is_what_deploy_renders(schema):
    example = yaml.safe_load(EXAMPLE.read_text())
    meta = example["metadata"]["annotations"]
    name, version = meta["fracture-mlops.org/model-uri"].removeprefix("models:/").split("/")
    params = load_params(REPO / "configs" / "production.yaml")
    assert example == render_inference_service(params, name, version, meta["fracture-mlops.org/fingerprint"], True)
    validate(example, schema)


class FakeApi:
    """The CustomObjectsApi calls apply_manifest makes, recorded; `existing` says whether the service exists."""

    def __init__(self, existing: bool, refuse: int | None = None) -> None:
        self.existing, self.refuse, self.calls = existing, refuse, []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):  # noqa: ANN001, ANN201
        from kubernetes.client.rest import ApiException

        self.calls.append(("get", namespace, name))
        if not self.existing:
            raise ApiException(status=404, reason="Not Found")
        return {}

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):  # noqa: ANN001, ANN201
        from kubernetes.client.rest import ApiException

        self.calls.append(("create", namespace, body["metadata"]["name"]))
        if self.refuse:
            raise ApiException(status=self.refuse, reason="Unprocessable Entity")

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):  # noqa: ANN001, ANN201
        self.calls.append(("patch", namespace, name))


def test_apply_creates_a_new_service_and_patches_a_running_one():
    from fracture.base.errors import InputError
    from fracture.serving.deploy import apply_manifest

    manifest = render_inference_service(load_params(REPO / "params.yaml"), "m", "3", "x", True)
    new, running = FakeApi(existing=False), FakeApi(existing=True)
    assert apply_manifest(manifest, new) == "created" and new.calls[-1] == ("create", "fracture", "fracture-swin")
    assert apply_manifest(manifest, running) == "patched" and running.calls[-1][0] == "patch"
    with pytest.raises(InputError, match="InferenceService fracture/fracture-swin: 422"):
        apply_manifest(manifest, FakeApi(existing=False, refuse=422))


def test_apply_without_a_cluster_says_to_use_dry_run(monkeypatch, tmp_path):
    from fracture.base.errors import InputError
    from fracture.serving.deploy import apply_manifest

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    manifest = render_inference_service(load_params(REPO / "params.yaml"), "m", "3", "x", True)
    with pytest.raises(InputError, match="no Kubernetes configuration.*--dry-run"):
        apply_manifest(manifest)


def test_the_predictor_gets_every_credential_the_pipeline_gets():
    """Regression: the predictor read only a token; behind the basic-auth MLflow it could not download the model."""
    from fracture.contracts.secrets import MLFLOW_ENV, S3_ENV

    params = load_params(REPO / "configs" / "production.yaml")
    manifest = render_inference_service(params, "fracture-swin", "7", "f" * 64, True)
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in manifest["spec"]["predictor"]["containers"][0]["env"]}
    assert set(env) == set(MLFLOW_ENV.values()) | set(S3_ENV.values())
    assert env["MLFLOW_TRACKING_USERNAME"] == {"name": "fracture-mlflow", "key": "username", "optional": True}
    assert not env["MLFLOW_TRACKING_URI"]["optional"] and not env["AWS_ACCESS_KEY_ID"]["optional"]
