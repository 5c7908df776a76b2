"""Train across nodes with Kubeflow Trainer: the `TrainJob` manifest, and the launcher that follows it.

With `pipeline.train_mode: trainjob` the KFP train task is a launcher. It stages the inputs (manifest, splits,
cache, resolved params) where every node can read them (a ReadWriteMany volume, or S3 / MinIO, per
`pipeline.trainjob.data_transfer`), creates a `TrainJob` on the `torch-distributed` runtime that runs the same
image and the same `fracture train` under torchrun on `num_nodes` x `gpus_per_node` processes
(`fracture.kubeflow.trainjob_node`), follows it to completion while logging its status and node 0's log, and
copies the model dir back as the task's Model artifact. The TrainJob is deleted when the launcher fails, times
out or is cancelled (SIGTERM, as KFP does); the staging area is removed in every case.

The manifest builder and the follow loop are pure over an injected API object (`TrainJobApi`); the Kubernetes
client implementation is `fracture.kubeflow.trainjob_api.KubeTrainJobApi`. Schema: trainer.kubeflow.org/v1alpha1
as of Kubeflow Trainer v2.3.0 (tests/data/trainer/ holds the CRD schema the builder is checked against).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fracture.config import Params
from fracture.contracts.artifacts import MODEL_CONFIG, MODEL_METADATA, WEIGHTS
from fracture.contracts.cluster import PipelineParams
from fracture.contracts.image import IMAGE_UID, container_security
from fracture.contracts.secrets import secret_env

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
NODE_CONTAINER = "node"  # the trainer container of the torch-distributed runtime
PATCH_MANAGER = "fracture-mlops/launcher"
SHM_VOLUME, STAGE_VOLUME = "dshm", "stage"


class TrainJobFailed(RuntimeError):
    """The TrainJob reported Failed (reason and message from its condition)."""


class TrainJobTimeout(TimeoutError):
    """The TrainJob did not finish within `pipeline.trainjob.timeout_s`."""


class Cancelled(BaseException):
    """The launcher received SIGTERM (a cancelled KFP run): unwind and delete the TrainJob."""


class TrainJobApi(Protocol):
    """What the launcher needs from the cluster (the Kubernetes client, or a fake in tests)."""

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the TrainJob."""

    def get(self, name: str) -> dict[str, Any]:
        """The TrainJob object, status included."""

    def delete(self, name: str) -> None:
        """Delete the TrainJob and its pods (absent: no error)."""

    def node_log(self, name: str, since_seconds: int) -> str:
        """Node 0's trainer log of the last `since_seconds`, each line prefixed by an RFC 3339 timestamp."""


# ------------------------------------------------------------------------------------------------ manifest


def _resources(cfg: PipelineParams) -> dict[str, Any]:
    tj = cfg.trainjob
    limits: dict[str, Any] = {"cpu": tj.cpu_per_node, "memory": tj.memory_per_node}
    if tj.gpus_per_node:
        limits[cfg.gpu_type] = tj.gpus_per_node
    return {"limits": limits, "requests": dict(limits)}


def _pod_patch(cfg: PipelineParams) -> dict[str, Any]:
    """Node pods: non-root and locked down, /dev/shm in memory, the staging volume, node selector, GPU toleration.

    The root file system stays writable: torchrun, PyTorch's and timm's caches and the staging copy write to it
    (the KFP task pods cannot ask for a read-only root either); everything else matches the KServe predictor.
    """
    tj = cfg.trainjob
    volumes: list[dict[str, Any]] = [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": cfg.shm_size}}]
    mounts = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    if tj.data_transfer == "volume":
        volumes.append({"name": STAGE_VOLUME, "persistentVolumeClaim": {"claimName": tj.volume_claim}})
        mounts.append({"name": STAGE_VOLUME, "mountPath": tj.volume_mount})
    container = {"name": NODE_CONTAINER, "volumeMounts": mounts, "securityContext": container_security(False)}
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "nodeSelector": dict(cfg.node_selector),
        # fsGroup: the staging volume's files are the image user's
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_UID,
            "fsGroup": IMAGE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },  # fmt: skip
    }
    if tj.gpus_per_node:
        spec["tolerations"] = [{"key": cfg.gpu_type, "operator": "Exists", "effect": "NoSchedule"}]
    job = {"name": NODE_CONTAINER, "template": {"spec": {"template": {"spec": spec}}}}
    return {"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [job]}}}}


def build_trainjob(name: str, namespace: str, cfg: PipelineParams, command: list[str]) -> dict[str, Any]:
    """The TrainJob: `num_nodes` pods of the project image, `gpus_per_node` torchrun processes each.

    Args:
        name: TrainJob name (also the JobSet's, so node 0 is reachable as `<name>-node-0-0.<name>`).
        namespace: where it runs.
        cfg: the `pipeline` params (image, GPU type, node selector, shm, `trainjob`).
        command: what each node runs (`fracture.kubeflow.trainjob_node`, which starts torchrun).
    """
    tj = cfg.trainjob
    trainer = {
        "image": cfg.image,
        "command": command,
        "numNodes": tj.num_nodes,
        "numProcPerNode": max(tj.gpus_per_node, 1),
        "resourcesPerNode": _resources(cfg),
        "env": [{"name": "FRACTURE_NO_PROGRESS", "value": "1"}, *secret_env()],  # optional, as for the KFP tasks,
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "fracture-mlops"}},
        "spec": {
            "runtimeRef": {"name": tj.runtime, "kind": "ClusterTrainingRuntime", "apiGroup": GROUP},
            "trainer": trainer,
            "runtimePatches": [_pod_patch(cfg)],
        },
    }


# ------------------------------------------------------------------------------------------------ following


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The status condition of this type when it is True, else None."""
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def describe(obj: dict[str, Any]) -> str:
    """One line of status: the true conditions and the child jobs' pod counts."""
    status = obj.get("status", {}) or {}
    conds = [f"{c['type']}({c.get('reason', '')})" for c in status.get("conditions", []) or [] if c["status"] == "True"]
    jobs = [
        f"{j['name']}: active {j.get('active', 0)} ready {j.get('ready', 0)} succeeded {j.get('succeeded', 0)} "
        f"failed {j.get('failed', 0)}"
        for j in status.get("jobsStatus", []) or []
    ]
    return "; ".join([", ".join(conds) or "created, no condition yet", *jobs])


def new_lines(text: str, after: str) -> tuple[list[str], str]:
    """Lines of a timestamped log newer than the timestamp `after`; returns them and the newest timestamp."""
    out, last = [], after
    for line in text.splitlines():
        stamp, _, message = line.partition(" ")
        if stamp > after:  # RFC 3339 timestamps of one clock compare as strings
            out.append(message)
            last = max(last, stamp)
    return out, last


@dataclass
class Follow:
    """How to follow a TrainJob; `clock` and `sleep` are injectable for tests."""

    timeout_s: float
    poll_s: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def _poll(api: TrainJobApi, name: str, seen: dict[str, str], poll_s: float) -> dict[str, Any] | None:
    """One poll: log a status change and node 0's new log lines; the object once it is Complete."""
    obj = api.get(name)
    line = describe(obj)
    if line != seen.get("status"):
        log.info("TrainJob %s: %s", name, line)
        seen["status"] = line
    lines, seen["log"] = new_lines(api.node_log(name, int(poll_s) + 30), seen.get("log", ""))
    for text in lines:
        log.info("[%s node 0] %s", name, text)
    failed = condition(obj, "Failed")
    if failed:
        raise TrainJobFailed(f"TrainJob {name} failed: {failed.get('reason', '?')}: {failed.get('message', '')}")
    return obj if condition(obj, "Complete") else None


def follow(api: TrainJobApi, body: dict[str, Any], how: Follow) -> dict[str, Any]:
    """Create the TrainJob and poll it until Complete; delete it when anything else ends the wait.

    Raises:
        TrainJobFailed: the TrainJob's Failed condition (reason: message).
        TrainJobTimeout: not Complete within `how.timeout_s`.
        Cancelled: SIGTERM while waiting (see `sigterm_cancels`).
    """
    name = body["metadata"]["name"]
    api.create(body)
    log.info("created TrainJob %s/%s", body["metadata"]["namespace"], name)
    deadline, seen = how.clock() + how.timeout_s, {}
    try:
        while (done := _poll(api, name, seen, how.poll_s)) is None:
            if how.clock() >= deadline:
                raise TrainJobTimeout(f"TrainJob {name}: not complete after {how.timeout_s:.0f} s")
            how.sleep(how.poll_s)
    except BaseException as err:
        log.error("TrainJob %s: %s; deleting it", name, type(err).__name__)
        api.delete(name)
        raise
    log.info("TrainJob %s complete", name)
    return done


@contextmanager
def sigterm_cancels() -> Iterator[None]:
    """Turn SIGTERM into `Cancelled` for the block, so the launcher unwinds (and deletes the TrainJob)."""

    def _raise(signum: int, frame: Any) -> None:
        raise Cancelled(f"signal {signum}")

    before = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


# ------------------------------------------------------------------------------------------------ the step

MODEL_FILES = (WEIGHTS, MODEL_CONFIG, MODEL_METADATA)


def node_command(root: str) -> list[str]:
    """What each node runs (fracture.kubeflow.trainjob_node: staged inputs -> torchrun fracture train)."""
    return ["python", "-m", "fracture.kubeflow.trainjob_node", root]


def check_world(params: Params) -> int:
    """Processes the TrainJob will run; fails now (not on the nodes) when the effective batch does not split."""
    from fracture.train.optim import grad_accumulation

    tj = params.pipeline.trainjob
    world = tj.num_nodes * max(tj.gpus_per_node, 1)
    grad_accumulation(params.train, world)
    return world


def run_trainjob(
    params: Params, manifest: Path, splits: Path, cache: Path, out_dir: Path, api: TrainJobApi, job: str, namespace: str
) -> dict[str, Any]:
    """Stage the inputs, run the TrainJob to completion, copy the model dir to `out_dir`; always remove the stage.

    Returns:
        job, namespace, processes, and the model dir.
    """
    from fracture.kubeflow.trainjob_stage import MODEL, get_dir, put_inputs, remove, stage_root

    tj = params.pipeline.trainjob
    world = check_world(params)
    root = stage_root(tj, job)
    body = build_trainjob(job, namespace, params.pipeline, node_command(root))
    try:
        put_inputs(root, manifest, splits, cache, params)
        with sigterm_cancels():
            follow(api, body, Follow(tj.timeout_s, tj.poll_s))
        out = Path(out_dir)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # an empty output folder made by KFP: copy into its place, not beneath it
        get_dir(root, MODEL, out)
    finally:
        remove(root)
    missing = [f for f in MODEL_FILES if not (Path(out_dir) / f).is_file()]
    if missing:
        raise TrainJobFailed(f"TrainJob {job} completed but its model dir lacks {', '.join(missing)}")
    return {"job": job, "namespace": namespace, "processes": world, "model_dir": str(out_dir)}
