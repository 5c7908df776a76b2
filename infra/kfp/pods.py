"""Render the compiled pipeline's task pods as Kubernetes Pod manifests, for the policy scanner (`make scan`).

A KFP pipeline is not a Kubernetes manifest: the KFP backend turns each task into a pod at run time. This writes,
per task, the pod settings the compiled pipeline itself carries (image, command, resources, security context,
secrets as env vars, shm, node selector, tolerations) so that checkov judges what this project controls. Settings
only the KFP backend decides are skipped per check, each with the reason, in the pod's `checkov.io/skip*`
annotations; nothing else is skipped.

Usage: python infra/kfp/pods.py PARAMS_YAML OUT_DIR
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import yaml

BACKEND = "set by the KFP backend at run time, not by the compiled pipeline"
# check id -> why it is skipped for KFP task pods (and only for them).
KFP_SKIPS = {
    "CKV_K8S_20": f"allowPrivilegeEscalation false is {BACKEND} (kubeflow/pipelines#12782, KFP 2.16 and later)",
    "CKV_K8S_28": f"dropping all capabilities (NET_RAW included) is {BACKEND} (kubeflow/pipelines#12782)",
    "CKV_K8S_37": f"dropping all capabilities is {BACKEND} (kubeflow/pipelines#12782)",
    "CKV_K8S_31": f"seccomp RuntimeDefault is {BACKEND} (kubeflow/pipelines#12782)",
    "CKV_K8S_29": f"the pod-level security context (seccomp) is {BACKEND} (kubeflow/pipelines#12782)",
    "CKV2_K8S_6": "task pods live in the KFP installation's namespace (kubeflow), whose NetworkPolicies KFP owns",
    "CKV_K8S_22": "kfp-kubernetes 2.17 cannot ask for a read-only root file system; the KFP launcher writes to it",
    "CKV_K8S_38": "the KFP launcher in every task pod talks to the Kubernetes API with the pipeline-runner token",
    "CKV_K8S_43": "the project image is built by `make image`; pin its digest in params.yaml pipeline.image",
    "CKV_K8S_15": "batch pods of a pinned image tag; IfNotPresent avoids pulling a multi-GB CUDA image per task",
    "CKV_K8S_8": "batch task pods, not services: nothing to probe",
    "CKV_K8S_9": "batch task pods, not services: nothing to probe",
    "CKV_K8S_10": "KFP sets only CPU/memory limits (set_cpu_limit / set_memory_limit); requests default to them",
    "CKV_K8S_12": "KFP sets only CPU/memory limits (set_cpu_limit / set_memory_limit); requests default to them",
    "CKV_K8S_35": "pipeline steps read MLflow and S3 credentials from the environment (mlflow, boto3)",
}


def _resources(container: dict) -> dict:
    res = container.get("resources") or {}
    limits = {"cpu": res.get("resourceCpuLimit"), "memory": res.get("resourceMemoryLimit")}
    accel = res.get("accelerator") or {}
    if accel.get("resourceType"):
        limits[accel["resourceType"]] = accel.get("resourceCount")
    return {"limits": {k: v for k, v in limits.items() if v}}


def _env(k8s: dict) -> list[dict]:
    return [
        {"name": e["envVar"], "valueFrom": {"secretKeyRef": {"name": s["secretName"], "key": e["secretKey"]}}}
        for s in k8s.get("secretAsEnv", [])
        for e in s["keyToEnv"]
    ]


def task_pod(name: str, container: dict, k8s: dict) -> dict:
    """One task's pod as the compiled pipeline specifies it (the KFP backend adds its own defaults)."""
    sc = k8s.get("securityContext") or {}
    security = {
        key: (int(sc[key]) if key != "runAsNonRoot" else bool(sc[key]))
        for key in ("runAsUser", "runAsGroup", "runAsNonRoot")
        if key in sc
    }
    mounts = k8s.get("emptyDirMounts", [])
    spec = {
        "containers": [
            {
                "name": "main",
                "image": container["image"],
                "command": container.get("command", []),
                "args": container.get("args", []),
                "env": _env(k8s),
                "resources": _resources(container),
                "securityContext": security,
                "volumeMounts": [{"name": m["volumeName"], "mountPath": m["mountPath"]} for m in mounts],
            }
        ],
        "volumes": [{"name": m["volumeName"], "emptyDir": {"medium": m.get("medium", "")}} for m in mounts],
        "nodeSelector": (k8s.get("nodeSelector") or {}).get("labels", {}),
        "tolerations": k8s.get("tolerations", []),
    }
    annotations = {f"checkov.io/skip{i}": f"{cid}={why}" for i, (cid, why) in enumerate(KFP_SKIPS.items(), 1)}
    metadata = {"name": f"kfp-{name}", "namespace": "kubeflow", "annotations": annotations}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


# check id -> why it is skipped for the TrainJob's node pods (train_mode: trainjob), and only for them.
TRAINJOB_SKIPS = {
    "CKV_K8S_22": "torchrun, PyTorch's and timm's caches and the staging copy write to the root file system",
    "CKV_K8S_43": "the project image is built by `make image`; pin its digest in params.yaml pipeline.image",
    "CKV_K8S_15": "the TrainJob API's runtime patches cannot set imagePullPolicy (the ClusterTrainingRuntime's)",
    "CKV_K8S_8": "batch training pods, not services: nothing to probe",
    "CKV_K8S_9": "batch training pods, not services: nothing to probe",
    "CKV_K8S_35": "the nodes read MLflow and S3 credentials from the environment (mlflow, boto3)",
    "CKV_K8S_38": "the TrainJob API's runtime patches cannot set automountServiceAccountToken (the runtime's)",
    "CKV2_K8S_6": "node pods run in the user's namespace; the torchrun rendezvous between nodes needs pod traffic",
}


def trainjob_pod(params_path: Path) -> dict:
    """A node pod of the TrainJob launcher: the trainer's container with the project's runtime patch applied."""
    from fracture.config import load_params
    from fracture.kubeflow.trainjob import build_trainjob, node_command

    cfg = load_params(params_path).pipeline
    body = build_trainjob("fracture-train", "fracture", cfg, node_command("s3://bucket/staging"))
    trainer = body["spec"]["trainer"]
    (patch,) = body["spec"]["runtimePatches"]
    pod_spec = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    spec = {**pod_spec["spec"]}
    (patched,) = spec["containers"]
    container = {
        **patched,
        "image": trainer["image"],
        "command": trainer["command"],
        "env": trainer["env"],
        "resources": trainer["resourcesPerNode"],
    }
    spec["containers"] = [container]
    annotations = {f"checkov.io/skip{i}": f"{cid}={why}" for i, (cid, why) in enumerate(TRAINJOB_SKIPS.items(), 1)}
    metadata = {"name": "trainjob-node", "namespace": "fracture", "annotations": annotations}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def render(params_path: Path, out_dir: Path) -> list[Path]:
    """Compile the pipeline from `params_path`; write one Pod manifest per task, and a TrainJob node's, to `out_dir`."""
    from fracture.config import load_params
    from fracture.kubeflow.runner import run_compile

    with tempfile.TemporaryDirectory() as tmp:
        compiled = Path(tmp) / "pipeline.yaml"
        run_compile(load_params(params_path), compiled)
        spec, platform = list(yaml.safe_load_all(compiled.read_text()))
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for exec_name, executor in sorted(spec["deploymentSpec"]["executors"].items()):
        name = exec_name.removeprefix("exec-")
        pod = task_pod(name, executor["container"], executors.get(exec_name, {}))
        path = out_dir / f"kfp-{name}.yaml"
        path.write_text(yaml.safe_dump(pod, sort_keys=False))
        written.append(path)
    path = out_dir / "trainjob-node.yaml"
    path.write_text(yaml.safe_dump(trainjob_pod(params_path), sort_keys=False))
    return [*written, path]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python infra/kfp/pods.py PARAMS_YAML OUT_DIR")
    render(Path(sys.argv[1]), Path(sys.argv[2]))
