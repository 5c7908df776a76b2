"""`fracture deploy`: a KServe InferenceService serving one registry version, rendered and (given a cluster) applied.

Runtime: a custom predictor container from the project image running `fracture serve` (that is, `mlflow models
serve` with the image's own uvicorn), the same stack infra validation exercised before the version became champion.
KServe's MLflow runtime (MLServer) was not chosen: it loads the pyfunc in MLServer's environment, which lacks the
`fracture` package the pyfunc wrapper imports, and it speaks the V2 protocol rather than the scoring protocol that
infra validation tested (see infra/kserve/README.md).

The manifest pins a version number, never an alias, so a change of champion is an explicit rollout: applied over
a running service with `canaryTrafficPercent`, the new revision gets that share of traffic until it is promoted.
Only versions that passed infra validation (`infra_validation.passed` tag) are deployed.
"""

from __future__ import annotations

import logging
from typing import Any

from fracture.base.errors import GateError, InputError
from fracture.config import Params
from fracture.contracts.cluster import DeployParams
from fracture.contracts.image import container_security
from fracture.contracts.secrets import secret_env

log = logging.getLogger(__name__)

GROUP, API_VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
CONTAINER_NAME = "kserve-container"  # KServe's name for the predictor's main container
# The predictor needs the tracking server and the artifact store; a token, basic-auth user and endpoint are optional.
REQUIRED_SECRET_KEYS = frozenset({"tracking_uri", "access_key_id", "secret_access_key"})
ANNOTATION = "fracture-mlops.org"


def _resources(dp: DeployParams) -> dict:
    limits = {"cpu": dp.cpu_limit, "memory": dp.memory_limit}
    if dp.gpu_limit:
        limits["nvidia.com/gpu"] = str(dp.gpu_limit)
    return {"requests": {"cpu": dp.cpu_request, "memory": dp.memory_request}, "limits": limits}


def predictor_container(params: Params, model_uri: str) -> dict:
    """The predictor container: `fracture serve` on all interfaces of the pod, probed on `/ping`."""
    dp = params.deploy
    probe = {"httpGet": {"path": "/ping", "port": dp.port}, "periodSeconds": 10, "timeoutSeconds": 5}
    return {
        "name": CONTAINER_NAME,
        "image": dp.image or params.pipeline.image,
        "command": ["fracture"],
        "args": [
            "serve",
            "--params",
            dp.params_in_image,
            "--model-uri",
            model_uri,
            "--host",
            "0.0.0.0",
            "--port",
            str(dp.port),
        ],  # fmt: skip
        "ports": [{"containerPort": dp.port, "protocol": "TCP"}],
        "env": secret_env(REQUIRED_SECRET_KEYS),  # the same Secrets as the pipeline (infra/base)
        "resources": _resources(dp),
        # the model is downloaded and loaded at start: ready on /ping; restarted only if /ping stops answering
        "readinessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**probe, "initialDelaySeconds": 300, "failureThreshold": 6},
        "securityContext": container_security(read_only_root=True),
        # `fracture serve` fetches and verifies the registered model into /tmp before serving it
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def render_inference_service(params: Params, name: str, version: str, fingerprint: str, canary: bool) -> dict:
    """The InferenceService for `models:/NAME/VERSION` (a canary of `deploy.canary_traffic_percent` if asked)."""
    dp = params.deploy
    model_uri = f"models:/{name}/{version}"
    predictor: dict[str, Any] = {"minReplicas": dp.min_replicas, "maxReplicas": dp.max_replicas}
    if canary:
        predictor["canaryTrafficPercent"] = dp.canary_traffic_percent
    if dp.service_account:
        predictor["serviceAccountName"] = dp.service_account
    predictor["containers"] = [predictor_container(params, model_uri)]
    predictor["volumes"] = [{"name": "tmp", "emptyDir": {}}]  # the only writable path: the root FS is read-only
    return {
        "apiVersion": f"{GROUP}/{API_VERSION}",
        "kind": "InferenceService",
        "metadata": {
            "name": dp.service_name,
            "namespace": dp.namespace,
            # fracture.base.io/serving: what infra/'s NetworkPolicies let reach MLflow and MinIO
            "labels": {
                "app.kubernetes.io/name": dp.service_name,
                "app.kubernetes.io/part-of": "fracture-mlops",
                "fracture.base.io/serving": "true",
            },
            "annotations": {
                f"{ANNOTATION}/model-uri": model_uri,
                f"{ANNOTATION}/fingerprint": fingerprint,
                "serving.kserve.io/deploymentMode": "Serverless",  # canary rollouts need Knative (serverless)
            },
        },
        "spec": {"predictor": predictor},
    }


def resolve_version(client: Any, name: str, alias: str, version: int | None) -> Any:
    """The registry version to deploy, which must have passed infra validation.

    Raises:
        InputError: unknown model, alias or version. GateError: the version has not passed infra validation.
    """
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(name, str(version)) if version else client.get_model_version_by_alias(name, alias)
    except MlflowException:
        what = f"version {version}" if version else f"alias {alias!r}"
        raise InputError(f"registered model {name!r} has no {what}") from None
    if mv.tags.get("infra_validation.passed") != "true":
        raise GateError(
            f"{name} version {mv.version} has not passed infra validation (tag infra_validation.passed is "
            f"{mv.tags.get('infra_validation.passed', 'absent')!r}); run `fracture promote` first"
        )
    return mv


def _custom_objects_api() -> Any:
    """A CustomObjectsApi from the in-cluster config, else the kubeconfig.

    Raises:
        InputError: neither is available.
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_incluster_config()
    except ConfigException:
        try:
            config.load_kube_config()
        except (ConfigException, OSError) as err:
            raise InputError(f"no Kubernetes configuration ({err}); use --dry-run to print the manifest") from None
    return client.CustomObjectsApi()


def apply_manifest(manifest: dict, api: Any | None = None) -> str:
    """Create the InferenceService, or merge-patch it when it exists (a rollout); returns "created" or "patched".

    Raises:
        InputError: no Kubernetes configuration, or the API server refused the manifest.
    """
    from kubernetes.client.rest import ApiException

    api = api or _custom_objects_api()
    meta = manifest["metadata"]
    target = (GROUP, API_VERSION, meta["namespace"], PLURAL)
    where = f"InferenceService {meta['namespace']}/{meta['name']}"
    try:
        try:
            api.get_namespaced_custom_object(*target, meta["name"])
        except ApiException as err:
            if err.status != 404:
                raise
            api.create_namespaced_custom_object(*target, manifest)
            return "created"
        api.patch_namespaced_custom_object(*target, meta["name"], manifest)
        return "patched"
    except ApiException as err:
        raise InputError(f"{where}: {err.status} {err.reason}") from None


def run_deploy(
    params: Params,
    name: str | None,
    alias: str = "champion",
    version: int | None = None,
    namespace: str | None = None,
    canary: bool = True,
    dry_run: bool = False,
) -> str:
    """Render the InferenceService for a registry version; apply it unless `dry_run`. Returns the manifest (YAML).

    Raises:
        GateError: the version has not passed infra validation. InputError: unknown version, or no cluster.
    """
    import yaml

    from fracture.registry.client import mlflow_client, registry_errors

    name = name or params.registered_model_name
    if namespace:
        params = params.model_copy(update={"deploy": params.deploy.model_copy(update={"namespace": namespace})})
    mv = registry_errors(resolve_version)(mlflow_client(), name, alias, version)
    manifest = render_inference_service(params, name, str(mv.version), mv.tags.get("fingerprint", "unknown"), canary)
    text = yaml.safe_dump(manifest, sort_keys=False)
    if dry_run:
        log.info("dry run: InferenceService for %s version %s, nothing applied", name, mv.version)
        return text
    done = apply_manifest(manifest)
    log.info("InferenceService %s/%s %s: %s version %s", params.deploy.namespace, params.deploy.service_name, done,
             name, mv.version)  # fmt: skip
    return text
