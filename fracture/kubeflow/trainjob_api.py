"""`TrainJobApi` over the Kubernetes Python client: CustomObjectsApi for the TrainJob, CoreV1Api for node 0's log.

The launcher pod's service account needs, in the TrainJob's namespace: create/get/delete on
`trainjobs.trainer.kubeflow.org`, list on pods and get on `pods/log` (infra/trainer/rbac.yaml).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fracture.kubeflow.trainjob import GROUP, NODE_CONTAINER, PLURAL, VERSION

log = logging.getLogger(__name__)

NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# JobSet labels its pods with the JobSet's (= the TrainJob's) name; Indexed Jobs label the completion index.
JOBSET_LABEL, INDEX_LABEL = "jobset.sigs.k8s.io/jobset-name", "batch.kubernetes.io/job-completion-index"


def own_namespace(path: Path = NAMESPACE_FILE) -> str:
    """The namespace this pod runs in (the service account's), for a TrainJob beside the launcher."""
    if not path.is_file():
        raise RuntimeError(f"{path}: not in a pod; set pipeline.trainjob.namespace")
    return path.read_text().strip()


class KubeTrainJobApi:
    """The launcher's cluster API in one namespace (in-cluster config, or ~/.kube/config outside a pod)."""

    def __init__(self, namespace: str, custom: Any = None, core: Any = None) -> None:
        """Use the given client APIs (tests), else build them from the in-cluster or kubeconfig credentials."""
        if custom is None or core is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            custom, core = client.CustomObjectsApi(), client.CoreV1Api()
        self.namespace, self.custom, self.core = namespace, custom, core

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the TrainJob."""
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def get(self, name: str) -> dict[str, Any]:
        """The TrainJob, status included."""
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def delete(self, name: str) -> None:
        """Delete the TrainJob; its JobSet and pods go with it (background propagation). Absent is fine."""
        from kubernetes.client import V1DeleteOptions
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, body=V1DeleteOptions(propagation_policy="Background")
            )
        except ApiException as err:
            if err.status != 404:
                raise

    def node_log(self, name: str, since_seconds: int) -> str:
        """Node 0's trainer container log (timestamped); empty while its pod is not there or not started."""
        from kubernetes.client.exceptions import ApiException

        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"{JOBSET_LABEL}={name},{INDEX_LABEL}=0")
        if not pods.items:
            return ""
        pod = sorted(pods.items, key=lambda p: p.metadata.creation_timestamp)[-1]  # the latest after a restart
        try:
            return self.core.read_namespaced_pod_log(
                pod.metadata.name,
                self.namespace,
                container=NODE_CONTAINER,
                timestamps=True,
                since_seconds=since_seconds,
            )
        except ApiException as err:
            if err.status in (400, 404):  # container still creating, or the pod just went away
                return ""
            raise
